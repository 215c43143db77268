//! Reading a file into documents as kubectl reads and sends it: multi-document YAML (empty
//! documents skipped), numbers as they come out of kubectl's round trip through Go, and each
//! document's apiVersion, kind, name and namespace.

use std::fmt;

use serde::Deserialize;
use serde_json::Value as Json;

use super::{Finding, LintError};

/// One document of the file, as far as it could be read.
pub(super) struct Document {
    pub(super) index: usize,
    pub(super) api_version: String,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) namespace: Option<String>,
    /// The document as JSON, or why it is not a Kubernetes object.
    pub(super) value: Result<Json, Finding>,
}

/// Reads every document of the file; empty ones are skipped, as kubectl skips them.
pub(super) fn read_documents(yaml: &str) -> Result<Vec<Document>, LintError> {
    let mut documents = Vec::new();
    // After a syntax error the YAML parser can only repeat it, so the first error ends the read.
    for (index, document) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let yaml_error = |source| LintError::Yaml {
            document: index,
            source,
        };
        let KubectlYaml(mut value) = KubectlYaml::deserialize(document).map_err(yaml_error)?;
        value.apply_merge().map_err(yaml_error)?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value)
            .map_err(|e| Finding::error("", format!("cannot be read as JSON: {e}")))
            .map(|mut json| {
                normalize_numbers(&mut json);
                json
            })
            .and_then(|json| {
                if json.is_object() {
                    Ok(json)
                } else {
                    Err(Finding::error(
                        "",
                        "not a Kubernetes object: the document is not a mapping",
                    ))
                }
            });
        let text = |pointer: &str| {
            json.as_ref()
                .ok()
                .and_then(|j| j.pointer(pointer))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        let kind = text("/kind").unwrap_or_default();
        let api_version = text("/apiVersion").unwrap_or_default();
        let name = text("/metadata/name")
            .or_else(|| text("/metadata/generateName"))
            .unwrap_or_default();
        let namespace = text("/metadata/namespace");
        let value = json.and_then(|json| {
            if kind.is_empty() {
                Err(Finding::error(
                    "kind",
                    "not a Kubernetes object: it has no kind",
                ))
            } else {
                Ok(json)
            }
        });
        documents.push(Document {
            index,
            api_version,
            kind,
            name,
            namespace,
            value,
        });
    }
    Ok(documents)
}

/// Numbers as the apiserver holds them after kubectl's round trip through Go: an integer beyond
/// 64 bits signed becomes a float, and a float with no fraction that fits one an integer.
fn normalize_numbers(value: &mut Json) {
    match value {
        Json::Number(n) => {
            if let Some(u) = n.as_u64()
                && i64::try_from(u).is_err()
            {
                if let Some(f) = serde_json::Number::from_f64(u as f64) {
                    *n = f;
                }
            } else if n.is_f64()
                && let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && (-(2f64.powi(63))..2f64.powi(63)).contains(&f)
            {
                *n = serde_json::Number::from(f as i64);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Json::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// A YAML value read as kubectl reads one (go-yaml): an integer too large for 64 bits becomes a
/// float, where serde's own value types refuse it and the whole file would be unreadable.
struct KubectlYaml(serde_norway::Value);

impl<'de> Deserialize<'de> for KubectlYaml {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KubectlYamlVisitor)
    }
}

struct KubectlYamlVisitor;

impl<'de> serde::de::Visitor<'de> for KubectlYamlVisitor {
    type Value = KubectlYaml;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Bool(b)))
    }

    fn visit_i64<E>(self, i: i64) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number(i.into())))
    }

    fn visit_u64<E>(self, u: u64) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number(u.into())))
    }

    fn visit_i128<E>(self, i: i128) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number((i as f64).into())))
    }

    fn visit_u128<E>(self, u: u128) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number((u as f64).into())))
    }

    fn visit_f64<E>(self, f: f64) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number(f.into())))
    }

    fn visit_str<E>(self, s: &str) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::String(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::String(s)))
    }

    fn visit_unit<E>(self) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Null))
    }

    fn visit_none<E>(self) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<KubectlYaml, D::Error> {
        KubectlYaml::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<KubectlYaml, A::Error> {
        let mut items = Vec::new();
        while let Some(KubectlYaml(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(KubectlYaml(serde_norway::Value::Sequence(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KubectlYaml, A::Error> {
        let mut mapping = serde_norway::Mapping::new();
        while let Some((KubectlYaml(key), KubectlYaml(value))) = map.next_entry()? {
            if mapping.contains_key(&key) {
                let shown = serde_norway::to_string(&key).unwrap_or_default();
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {}",
                    shown.trim_end()
                )));
            }
            mapping.insert(key, value);
        }
        Ok(KubectlYaml(serde_norway::Value::Mapping(mapping)))
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<KubectlYaml, A::Error> {
        use serde::de::VariantAccess;
        let (tag, contents) = data.variant::<String>()?;
        let KubectlYaml(value) = contents.newtype_variant()?;
        Ok(KubectlYaml(serde_norway::Value::Tagged(Box::new(
            serde_norway::value::TaggedValue {
                tag: serde_norway::value::Tag::new(tag),
                value,
            },
        ))))
    }
}
