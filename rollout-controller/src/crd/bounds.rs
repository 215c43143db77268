//! Integer bounds the apiserver enforces, put on every CRD schema in one pass.
//!
//! schemars writes the Rust type of an integer as its `format` (`uint32`, `uint64`, `int32`),
//! but the apiserver checks no integer format: it warns about `uint32` and ignores `int32`. A
//! `count: 4294967296` was therefore stored, and the controller, which decodes it as a `u32`,
//! could not read it. Only `minimum` and `maximum` are enforced, so every integer gets both, at
//! the range of its Rust type, and a format the apiserver knows. The pass covers the schemas of
//! every crate (the analysis and traffic crates, k8s-openapi's pod template) alike, which
//! attributes on each field could not.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    JSONSchemaPropsOrStringArray,
};

/// The range of a JSON integer of one Rust type, and the format the apiserver knows for it.
struct Range {
    format: &'static str,
    min: f64,
    max: f64,
}

/// The widest bounds an int64 takes. Bounds are floats in a schema, and the apiserver refuses
/// an object whose bound, printed as an integer, does not fit the field's format: `i64::MAX`
/// is not a float (it rounds up to 2^63), so the largest float below 2^63 stands in for it.
const I64_BOUND: f64 = 9_223_372_036_854_774_784.0;

/// The range of each integer format schemars writes; `None` for an integer with no format,
/// which is treated as an `i64` (what the apiserver stores).
fn range(format: Option<&str>) -> Option<Range> {
    let (format, min, max) = match format {
        Some("int8") => ("int32", f64::from(i8::MIN), f64::from(i8::MAX)),
        Some("int16") => ("int32", f64::from(i16::MIN), f64::from(i16::MAX)),
        Some("int32") => ("int32", f64::from(i32::MIN), f64::from(i32::MAX)),
        Some("uint8") => ("int32", 0.0, f64::from(u8::MAX)),
        Some("uint16") => ("int32", 0.0, f64::from(u16::MAX)),
        Some("uint32") => ("int64", 0.0, f64::from(u32::MAX)),
        // The apiserver holds integers as int64: a u64 beyond that never reaches the controller.
        Some("uint64" | "uint" | "uint128") => ("int64", 0.0, I64_BOUND),
        None | Some("int64" | "int" | "int128") => ("int64", -I64_BOUND, I64_BOUND),
        Some(_) => return None,
    };
    Some(Range { format, min, max })
}

/// Bounds every integer in every version's schema of `crd`.
pub fn bound_integers(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            walk(schema, &mut bound);
        }
    }
}

/// Narrows an integer schema to its type's range; bounds already set (`range(min = 1)`) that
/// are narrower are kept.
fn bound(schema: &mut JSONSchemaProps) {
    if schema.type_.as_deref() != Some("integer") {
        return;
    }
    let Some(range) = range(schema.format.as_deref()) else {
        return;
    };
    schema.format = Some(range.format.to_owned());
    schema.minimum = Some(schema.minimum.map_or(range.min, |m| m.max(range.min)));
    schema.maximum = Some(schema.maximum.map_or(range.max, |m| m.min(range.max)));
}

/// Calls `visit` on `schema` and on every schema nested in it.
pub fn walk(schema: &mut JSONSchemaProps, visit: &mut impl FnMut(&mut JSONSchemaProps)) {
    visit(schema);
    let maps = [
        schema.properties.as_mut(),
        schema.pattern_properties.as_mut(),
        schema.definitions.as_mut(),
    ];
    for map in maps.into_iter().flatten() {
        for nested in map.values_mut() {
            walk(nested, visit);
        }
    }
    let lists = [
        schema.all_of.as_mut(),
        schema.any_of.as_mut(),
        schema.one_of.as_mut(),
    ];
    for list in lists.into_iter().flatten() {
        for nested in list {
            walk(nested, visit);
        }
    }
    if let Some(not) = schema.not.as_mut() {
        walk(not, visit);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(nested)) => walk(nested, visit),
        Some(JSONSchemaPropsOrArray::Schemas(list)) => {
            for nested in list {
                walk(nested, visit);
            }
        }
        None => {}
    }
    for nested in [
        schema.additional_properties.as_mut(),
        schema.additional_items.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let JSONSchemaPropsOrBool::Schema(nested) = nested {
            walk(nested, visit);
        }
    }
    for dependency in schema.dependencies.iter_mut().flat_map(|d| d.values_mut()) {
        if let JSONSchemaPropsOrStringArray::Schema(nested) = dependency {
            walk(nested, visit);
        }
    }
}

/// What the apiserver makes of `schema`'s `format` and integer bounds: `None` when it
/// enforces them, else why not. Formats as the apiserver's CRD validation knows them (it warns
/// "unrecognized format" about any other, and then ignores it).
pub fn unenforced(schema: &JSONSchemaProps) -> Option<String> {
    const STRING_FORMATS: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
        "k8s-short-name",
        "k8s-long-name",
    ];
    let type_ = schema.type_.as_deref().unwrap_or_default();
    if let Some(format) = schema.format.as_deref() {
        let known = match type_ {
            "" | "string" => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
            "integer" => matches!(format, "int32" | "int64"),
            "number" => matches!(format, "float" | "double"),
            _ => false,
        };
        if !known {
            return Some(format!(
                "format {format:?} of a {type_:?} is not one the apiserver knows"
            ));
        }
    }
    if type_ == "integer" && (schema.minimum.is_none() || schema.maximum.is_none()) {
        return Some("an integer without both minimum and maximum".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integer(format: Option<&str>, minimum: Option<f64>) -> JSONSchemaProps {
        JSONSchemaProps {
            type_: Some("integer".into()),
            format: format.map(str::to_owned),
            minimum,
            ..JSONSchemaProps::default()
        }
    }

    #[test]
    fn a_u32_is_bounded_to_its_range_as_an_int64() {
        let mut schema = integer(Some("uint32"), Some(0.0));
        bound(&mut schema);
        assert_eq!(schema.format.as_deref(), Some("int64"));
        assert_eq!(schema.minimum, Some(0.0));
        assert_eq!(schema.maximum, Some(4_294_967_295.0));
        assert_eq!(unenforced(&schema), None);
    }

    #[test]
    fn int64_bounds_print_as_integers_that_fit_an_int64() {
        // As the apiserver checks a bound: printed without exponent, parsed as an int64.
        for bound in [I64_BOUND, -I64_BOUND] {
            let printed = format!("{bound:.0}");
            assert!(printed.parse::<i64>().is_ok(), "{printed}");
        }
    }

    #[test]
    fn a_narrower_bound_of_the_type_is_kept() {
        let mut schema = integer(Some("int32"), Some(1.0));
        bound(&mut schema);
        assert_eq!(schema.minimum, Some(1.0));
        assert_eq!(schema.maximum, Some(2_147_483_647.0));
    }

    #[test]
    fn nested_integers_are_bounded_and_unknown_formats_are_reported() {
        let mut schema = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some(
                [(
                    "list".to_owned(),
                    JSONSchemaProps {
                        type_: Some("array".into()),
                        items: Some(JSONSchemaPropsOrArray::Schema(Box::new(integer(
                            Some("uint64"),
                            None,
                        )))),
                        ..JSONSchemaProps::default()
                    },
                )]
                .into(),
            ),
            ..JSONSchemaProps::default()
        };
        let mut problems = Vec::new();
        walk(&mut schema, &mut |s| problems.extend(unenforced(s)));
        assert_eq!(
            problems,
            ["format \"uint64\" of a \"integer\" is not one the apiserver knows"]
        );
        walk(&mut schema, &mut bound);
        let mut problems = Vec::new();
        walk(&mut schema, &mut |s| problems.extend(unenforced(s)));
        assert!(problems.is_empty(), "{problems:?}");
    }
}
