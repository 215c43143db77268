//! A seeded generator of mutated example files, for the differential test of
//! `kubectl sluice lint` against the apiserver. Each variant is one example file with one of
//! its Sluice objects changed in one way a person or a tool gets wrong: a field deleted or set
//! to null, a value of the wrong type, an integer out of its range or beyond 64 bits, a bad
//! name, an empty string, a field the schema does not have, a bad duration, and combinations
//! that only the CRD's CEL rules catch. The same seed gives the same variants.
//!
//! Values YAML 1.1 and 1.2 read differently (`yes`, `on`, `010`) are never generated: kubectl
//! reads YAML 1.1, the linter YAML 1.2, and a file that depends on the difference is a problem
//! of its own.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{Value as Json, json};

/// The generator's randomness, seeded so that one seed always names the same variants.
pub struct Rng(StdRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.0.random_range(0..n) }
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.choose(&mut self.0)
    }
}

/// One step into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

pub type Path = Vec<Step>;

/// `spec.steps[1].pause`, as the apiserver names fields.
pub fn show_path(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// `spec.steps[*].pause` into steps; `*` stands for every index.
fn parse_pattern(pattern: &str) -> Vec<Option<Step>> {
    let mut steps = Vec::new();
    for part in pattern.split('.') {
        let (key, indices) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            steps.push(Some(Step::Key(key.to_owned())));
        }
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            let index = index.trim_end_matches(']');
            steps.push(index.parse().ok().map(Step::Index));
        }
    }
    steps
}

/// The concrete paths a pattern names in `doc` whose parent exists (the last step may be a
/// field still to be set).
fn resolve(doc: &Json, pattern: &str) -> Vec<Path> {
    let steps = parse_pattern(pattern);
    let mut found = Vec::new();
    walk_pattern(doc, &steps, Vec::new(), &mut found);
    found
}

fn walk_pattern(at: &Json, steps: &[Option<Step>], path: Path, found: &mut Vec<Path>) {
    let Some((step, rest)) = steps.split_first() else {
        found.push(path);
        return;
    };
    match step {
        Some(Step::Key(key)) => {
            let Some(map) = at.as_object() else {
                return;
            };
            let mut next = path.clone();
            next.push(Step::Key(key.clone()));
            match map.get(key) {
                Some(child) => walk_pattern(child, rest, next, found),
                None if rest.is_empty() => found.push(next),
                None => {}
            }
        }
        Some(Step::Index(i)) => {
            if let Some(child) = at.as_array().and_then(|items| items.get(*i)) {
                let mut next = path.clone();
                next.push(Step::Index(*i));
                walk_pattern(child, rest, next, found);
            }
        }
        None => {
            for (i, child) in at.as_array().into_iter().flatten().enumerate() {
                let mut next = path.clone();
                next.push(Step::Index(i));
                walk_pattern(child, rest, next, found);
            }
        }
    }
}

/// A value a mutation writes: JSON, or a number JSON cannot hold (beyond 64 bits), written into
/// the YAML text as it stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Json(Json),
    Raw(&'static str),
}

impl Written {
    fn shown(&self) -> String {
        match self {
            Written::Json(value) => {
                let text = value.to_string();
                if text.chars().count() > 40 {
                    format!(
                        "{}... ({} characters)",
                        text.chars().take(30).collect::<String>(),
                        text.len()
                    )
                } else {
                    text
                }
            }
            Written::Raw(text) => (*text).to_owned(),
        }
    }
}

/// One change to a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    Remove(Path),
    Set(Path, Written),
}

/// One example file, as documents.
#[derive(Debug, Clone)]
pub struct Example {
    pub name: String,
    pub documents: Vec<Json>,
}

impl Example {
    pub fn parse(name: &str, yaml: &str) -> Result<Self, String> {
        let mut documents = Vec::new();
        for document in serde_norway::Deserializer::from_str(yaml) {
            let value: Json =
                serde::Deserialize::deserialize(document).map_err(|e| format!("{name}: {e}"))?;
            if !value.is_null() {
                documents.push(value);
            }
        }
        Ok(Self {
            name: name.to_owned(),
            documents,
        })
    }
}

/// One mutated file.
#[derive(Debug, Clone)]
pub struct Variant {
    /// What was changed, for people: `canary-nginx Rollout: spec.replicas = -1`.
    pub label: String,
    /// The whole file.
    pub file: String,
    /// The changed document alone.
    pub document: String,
    /// Its index in the file.
    pub index: usize,
    /// Its kind.
    pub kind: String,
}

const HUGE: &str = "18446744073709551616";
const HUGE_NEGATIVE: &str = "-18446744073709551617";
const BEYOND_I64: &str = "9223372036854775808";

fn j(value: Json) -> Written {
    Written::Json(value)
}

/// Values of another kind or out of range, by the kind of the value they replace.
fn replacements(current: &Json) -> Vec<Written> {
    let mut values = match current {
        Json::Number(_) => vec![
            j(json!(-1)),
            j(json!(0)),
            j(json!(101)),
            j(json!(2_147_483_647)),
            j(json!(2_147_483_648_i64)),
            j(json!(-2_147_483_649_i64)),
            j(json!(4_294_967_296_i64)),
            Written::Raw(HUGE),
            Written::Raw(HUGE_NEGATIVE),
            Written::Raw(BEYOND_I64),
            j(json!(1.5)),
            j(json!(1e3)),
            j(json!("7")),
            j(json!(true)),
        ],
        Json::String(_) => vec![
            j(json!("")),
            j(json!(" ")),
            j(json!("x".repeat(300))),
            j(json!("Upper Case")),
            j(json!("é")),
            j(json!("10")),
            j(json!("-1")),
            j(json!("1.5")),
            j(json!("101%")),
            j(json!("25%")),
            j(json!("five")),
            j(json!("a/b")),
            j(json!(7)),
            j(json!(["x"])),
        ],
        Json::Bool(_) => vec![j(json!("true")), j(json!(1))],
        Json::Object(_) => vec![j(json!({})), j(json!([])), j(json!("x")), j(json!(0))],
        Json::Array(_) => vec![
            j(json!([])),
            j(json!({})),
            j(json!("x")),
            j(json!([{}])),
            j(json!([null])),
        ],
        Json::Null => vec![j(json!({})), j(json!("x"))],
    };
    values.push(j(Json::Null));
    values
}

/// Every path in `doc` but its apiVersion and kind, which say what the document is.
fn paths(doc: &Json) -> Vec<Path> {
    fn collect(at: &Json, path: Path, out: &mut Vec<Path>) {
        match at {
            Json::Object(map) => {
                for (key, child) in map {
                    let mut next = path.clone();
                    next.push(Step::Key(key.clone()));
                    out.push(next.clone());
                    collect(child, next, out);
                }
            }
            Json::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let mut next = path.clone();
                    next.push(Step::Index(i));
                    out.push(next.clone());
                    collect(child, next, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(doc, Vec::new(), &mut out);
    out.retain(|p| !matches!(p.first(), Some(Step::Key(k)) if k == "apiVersion" || k == "kind"));
    out
}

fn get<'a>(doc: &'a Json, path: &[Step]) -> Option<&'a Json> {
    path.iter().try_fold(doc, |at, step| match step {
        Step::Key(key) => at.get(key),
        Step::Index(i) => at.get(i),
    })
}

/// Single-field mutations that aim at what the schema, its CEL rules and the controller check:
/// (pattern, values). A pattern's last step may be a field the example does not have.
fn aimed() -> Vec<(&'static str, Vec<Written>)> {
    let durations = || {
        vec![
            j(json!(10)),
            j(json!("10")),
            j(json!(0)),
            j(json!(-5)),
            j(json!("five")),
            j(json!("1.5h")),
            j(json!("10 s")),
            j(json!("")),
            j(json!(2_147_483_648_i64)),
            Written::Raw(HUGE),
            j(json!("90m")),
        ]
    };
    let surge = || {
        vec![
            j(json!("abc")),
            j(json!(-1)),
            j(json!("-1")),
            j(json!("1.5")),
            j(json!("101%")),
            j(json!("100%")),
            j(json!("05%")),
            j(json!(3)),
            j(json!("3")),
            j(json!(0)),
        ]
    };
    let names = || {
        vec![
            j(json!("")),
            j(json!("a".repeat(254))),
            j(json!("a".repeat(253))),
            j(json!("wéb")),
            j(json!("Web")),
            j(json!("-web")),
            j(json!("web.")),
            j(json!("web_1")),
            j(json!("web.v2")),
        ]
    };
    let steps = "spec.strategy.canary.steps[*]";
    vec![
        ("metadata.name", names()),
        (
            "metadata.generateName",
            vec![j(json!("web-")), j(json!("Web-"))],
        ),
        (
            "metadata.namespace",
            vec![j(json!("Bad_NS")), j(json!("a".repeat(64)))],
        ),
        (
            "metadata.labels",
            vec![
                j(json!({"app": "web"})),
                j(json!({"bad key": "x"})),
                j(json!({"k": "v".repeat(64)})),
                j(json!({"example.com/k": "-v"})),
                j(json!({"Example.com/k": "v"})),
                j(json!({"k": 5})),
            ],
        ),
        (
            "metadata.annotations",
            vec![
                j(json!({"note": "any text / at all"})),
                j(json!({"huge": "x".repeat(300 * 1024)})),
                j(json!({"a b": "x"})),
            ],
        ),
        ("metadata.nmae", vec![j(json!("web"))]),
        (
            "metadata.finalizers",
            vec![j(json!(["example.com/x"])), j(json!(["a b"]))],
        ),
        (
            steps,
            vec![
                j(json!({"pause": null})),
                j(json!({"pause": {}})),
                j(json!({})),
                j(json!({"setWeight": 10, "pause": {}})),
                j(json!({"setWeight": -1})),
                j(json!({"setWeight": 101})),
                j(json!({"setWeight": 50.5})),
                j(json!({"setWeight": "50"})),
                j(json!({"setCanaryScale": {"replicas": 1, "weight": 5}})),
                j(json!({"setCanaryScale": {}})),
                j(json!({"setCanaryScale": {"weight": 101}})),
                j(json!({"setCanaryScale": {"matchTrafficWeight": true}})),
                j(json!({"analysis": {"templates": []}})),
                j(json!({"analysis": {"templates": [{"templateName": ""}]}})),
                j(
                    json!({"setHeaderRoute": {"match": [{"headerName": "X", "headerValue": {"exact": "1", "prefix": "a"}}]}}),
                ),
            ],
        ),
        ("spec.strategy.canary.steps[*].pause.duration", durations()),
        (
            "spec.strategy.canary.steps[*].pause",
            vec![j(json!({"duration": 10}))],
        ),
        ("spec.strategy.canary.maxSurge", surge()),
        ("spec.strategy.canary.maxUnavailable", surge()),
        ("spec.strategy.rollingUpdate.maxSurge", surge()),
        ("spec.strategy.rollingUpdate.maxUnavailable", surge()),
        (
            "spec.strategy.canary.scaleDownDelaySeconds",
            vec![j(json!(-1)), Written::Raw(HUGE), j(json!(30))],
        ),
        (
            "spec.strategy.canary.stableService",
            vec![j(json!("")), j(json!("missing"))],
        ),
        (
            "spec.strategy.canary.trafficRouting.nginx.stableIngress",
            vec![j(json!("")), j(json!("missing"))],
        ),
        (
            "spec.strategy.canary.trafficRouting.maxTrafficWeight",
            vec![j(json!(40)), j(json!(0)), j(json!(-1))],
        ),
        (
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute",
            vec![j(json!("missing"))],
        ),
        (
            "spec.strategy.canary.analysis.templates[*].templateName",
            vec![j(json!("")), j(json!("missing"))],
        ),
        (
            "spec.strategy.blueGreen.previewReplicaCount",
            vec![j(json!(0)), j(json!(-1)), j(json!(100))],
        ),
        (
            "spec.strategy.blueGreen.activeService",
            vec![j(json!("")), j(json!("missing"))],
        ),
        (
            "spec.strategy.blueGreen.autoPromotionSeconds",
            vec![j(json!(-1)), j(json!(30))],
        ),
        (
            "spec.strategy.blueGreen.prePromotionAnalysis.templates[*].templateName",
            vec![j(json!("missing"))],
        ),
        ("spec.strategy.abTest.duration", durations()),
        (
            "spec.strategy.abTest.match",
            vec![
                j(json!([])),
                j(json!([{"headers": [{"name": "X", "exact": "1"}], "cookie": "c"}])),
                j(json!([{"headers": [{"name": "X", "exact": "1", "prefix": "a"}]}])),
                j(json!([{"headers": [{"name": "X", "exact": "1"}, {"name": "Y", "exact": "2"}]}])),
                j(json!([{"cookie": "a"}, {"cookie": "b"}])),
            ],
        ),
        (
            "spec.strategy.abTest.promote",
            vec![j(json!("manual")), j(json!("sometimes"))],
        ),
        (
            "spec.replicas",
            vec![
                j(json!(-1)),
                j(json!(0)),
                j(json!(2_147_483_648_i64)),
                Written::Raw(HUGE),
                j(json!("3")),
                j(json!(3.5)),
                j(json!(null)),
            ],
        ),
        (
            "spec.progressDeadlineSeconds",
            vec![j(json!(0)), j(json!(-1)), j(json!(60))],
        ),
        ("spec.revisionHistoryLimit", vec![j(json!(-1)), j(json!(0))]),
        ("spec.minReadySeconds", vec![j(json!(-1)), j(json!(5))]),
        (
            "spec.restartAt",
            vec![
                j(json!("2026-01-01T00:00:00Z")),
                j(json!("2026-01-01T00:00:00")),
                j(json!("2026-02-30T00:00:00Z")),
                j(json!("yesterday")),
                j(json!(5)),
            ],
        ),
        ("spec.paused", vec![j(json!(true)), j(json!("true"))]),
        (
            "spec.decision",
            vec![
                j(json!({})),
                j(json!({"revision": "abc", "promotedStep": -1})),
                j(json!({"revision": "abc", "full": true})),
            ],
        ),
        (
            "spec.selector",
            vec![
                j(json!({})),
                j(json!({"matchLabels": {}})),
                j(json!({"matchLabels": {"app": "other"}})),
                j(json!({"matchLabels": {"app": "bad value!"}})),
                j(
                    json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}),
                ),
            ],
        ),
        (
            "spec.template.metadata.labels",
            vec![
                j(json!({"app": "x".repeat(64)})),
                j(json!({"app": "bad value!"})),
                j(json!({})),
            ],
        ),
        (
            "spec.template.spec.containers[*].name",
            vec![j(json!("")), j(json!("x".repeat(64)))],
        ),
        (
            "spec.template.spec.containers[*].image",
            vec![j(json!("")), j(json!(null))],
        ),
        (
            "spec.template.spec.containers[*].ports[*].containerPort",
            vec![j(json!(4_294_967_296_i64)), j(json!("http")), j(json!(0))],
        ),
        (
            "spec.template.spec.containers",
            vec![
                j(json!([])),
                j(json!([{"name": "a", "image": "a:1"}, {"name": "a", "image": "b:1"}])),
            ],
        ),
        ("spec.metrics", vec![j(json!([]))]),
        (
            "spec.metrics[*].count",
            vec![
                j(json!(0)),
                j(json!(-1)),
                j(json!(4_294_967_296_i64)),
                Written::Raw(HUGE),
                j(json!("10")),
            ],
        ),
        (
            "spec.metrics[*].interval",
            vec![
                j(json!("five")),
                j(json!(60)),
                j(json!("")),
                j(json!("90s")),
            ],
        ),
        (
            "spec.metrics[*].failureLimit",
            vec![j(json!(-1)), j(json!(3))],
        ),
        (
            "spec.metrics[*].successCondition",
            vec![j(json!("result[0] <")), j(json!("true"))],
        ),
        ("spec.metrics[*].provider", vec![j(json!({}))]),
        (
            "spec.metrics[*].sequential.confidence",
            vec![j(json!(1.5)), j(json!(0)), j(json!("0.95"))],
        ),
        (
            "spec.metrics[*].sequential.tolerance",
            vec![j(json!("10")), j(json!("10%"))],
        ),
        (
            "spec.metrics[*].name",
            vec![j(json!("")), j(json!("x".repeat(300)))],
        ),
        ("spec.args[*].name", vec![j(json!(""))]),
        (
            "spec.args[*]",
            vec![j(
                json!({"name": "a", "value": "x", "valueFrom": {"podTemplateHashValue": "Latest"}}),
            )],
        ),
    ]
}

/// Changes that take more than one edit: (a path that must exist, edits, what it is).
fn combinations(doc: &Json) -> Vec<(Vec<Edit>, &'static str)> {
    let key = |p: &str| -> Path { parse_pattern(p).into_iter().flatten().collect() };
    let mut found = Vec::new();
    let strategy = doc
        .pointer("/spec/strategy")
        .and_then(Json::as_object)
        .and_then(|s| s.keys().next().cloned());
    if let Some(current) = strategy {
        let second = if current == "rollingUpdate" {
            "blueGreen"
        } else {
            "rollingUpdate"
        };
        let value = if second == "blueGreen" {
            json!({"activeService": "x"})
        } else {
            json!({})
        };
        found.push((
            vec![Edit::Set(key(&format!("spec.strategy.{second}")), j(value))],
            "a second strategy",
        ));
        found.push((
            vec![Edit::Remove(key(&format!("spec.strategy.{current}")))],
            "no strategy",
        ));
        for surge in ["canary", "rollingUpdate"] {
            if current == surge {
                found.push((
                    vec![
                        Edit::Set(key(&format!("spec.strategy.{surge}.maxSurge")), j(json!(0))),
                        Edit::Set(
                            key(&format!("spec.strategy.{surge}.maxUnavailable")),
                            j(json!("0%")),
                        ),
                    ],
                    "maxSurge and maxUnavailable both 0",
                ));
            }
        }
    }
    if doc
        .pointer("/spec/strategy/canary/trafficRouting")
        .is_some()
    {
        found.push((
            vec![Edit::Remove(key("spec.strategy.canary.stableService"))],
            "trafficRouting without stableService",
        ));
        found.push((
            vec![Edit::Remove(key("spec.strategy.canary.trafficRouting"))],
            "no trafficRouting",
        ));
        found.push((
            vec![
                Edit::Set(
                    key("spec.strategy.canary.trafficRouting.nginx"),
                    j(json!({"stableIngress": "web"})),
                ),
                Edit::Set(
                    key("spec.strategy.canary.trafficRouting.gatewayAPI"),
                    j(json!({"httpRoute": "web"})),
                ),
            ],
            "two routers",
        ));
    }
    if doc
        .pointer("/spec/strategy/abTest/trafficRouting")
        .is_some()
    {
        found.push((
            vec![Edit::Set(
                key("spec.strategy.abTest.trafficRouting.gatewayAPI"),
                j(json!({"httpRoute": "web"})),
            )],
            "an A/B test on two routers",
        ));
    }
    if doc.pointer("/spec/strategy/canary").is_some() {
        found.push((
            vec![Edit::Set(
                key("spec.strategy.canary.steps"),
                j(json!([{"setHeaderRoute": {"match": [{"headerName": "X", "headerValue": {"exact": "1"}}]}}])),
            )],
            "a header route",
        ));
    }
    found
}

/// Writes `value` at `path`; a placeholder stands for a raw number until the text is written.
fn set(doc: &mut Json, path: &[Step], value: Json) {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return;
    };
    let mut at = doc;
    for step in parent {
        at = match step {
            Step::Key(key) => match at {
                Json::Object(map) => map.entry(key.clone()).or_insert_with(|| json!({})),
                _ => return,
            },
            Step::Index(i) => match at.get_mut(*i) {
                Some(child) => child,
                None => return,
            },
        };
    }
    match (last, at) {
        (Step::Key(key), Json::Object(map)) => {
            map.insert(key.clone(), value);
        }
        (Step::Index(i), Json::Array(items)) if *i < items.len() => items[*i] = value,
        _ => {}
    }
}

fn remove(doc: &mut Json, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut at = doc;
    for step in parent {
        at = match step {
            Step::Key(key) => match at.get_mut(key) {
                Some(child) => child,
                None => return,
            },
            Step::Index(i) => match at.get_mut(*i) {
                Some(child) => child,
                None => return,
            },
        };
    }
    match (last, at) {
        (Step::Key(key), Json::Object(map)) => {
            map.remove(key);
        }
        (Step::Index(i), Json::Array(items)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

const RAW_MARK: &str = "SLUICE-RAW-NUMBER-";

/// Applies `edits` to `doc`; the raw numbers come back with the placeholders that stand for them.
fn apply(doc: &mut Json, edits: &[Edit]) -> Vec<(String, &'static str)> {
    let mut raws = Vec::new();
    for edit in edits {
        match edit {
            Edit::Remove(path) => remove(doc, path),
            Edit::Set(path, Written::Json(value)) => set(doc, path, value.clone()),
            Edit::Set(path, Written::Raw(text)) => {
                let mark = format!("{RAW_MARK}{}", raws.len());
                set(doc, path, Json::String(mark.clone()));
                raws.push((mark, *text));
            }
        }
    }
    raws
}

fn to_yaml(doc: &Json, raws: &[(String, &'static str)]) -> Result<String, String> {
    let mut text = serde_norway::to_string(doc).map_err(|e| e.to_string())?;
    for (mark, raw) in raws {
        for quoted in [format!("'{mark}'"), format!("\"{mark}\""), mark.clone()] {
            text = text.replace(&quoted, raw);
        }
    }
    Ok(text)
}

fn is_sluice(doc: &Json) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("sluice.dev/"))
}

/// `count` variants of `examples` from `seed`; the same arguments give the same variants.
pub fn variants(examples: &[Example], seed: u64, count: usize) -> Result<Vec<Variant>, String> {
    let mut rng = Rng::new(seed);
    let aimed = aimed();
    let mut out = Vec::with_capacity(count);
    let mut attempts = 0;
    while out.len() < count && attempts < count * 20 {
        attempts += 1;
        let Some(example) = rng.pick(examples) else {
            return Err("no examples".into());
        };
        let targets: Vec<usize> = example
            .documents
            .iter()
            .enumerate()
            .filter(|(_, d)| is_sluice(d))
            .map(|(i, _)| i)
            .collect();
        // Rollouts three times as often as templates: there is more to get wrong in them.
        let rollouts: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|i| example.documents[*i]["kind"] == "Rollout")
            .collect();
        let index = if rng.below(4) < 3 && !rollouts.is_empty() {
            rollouts[rng.below(rollouts.len())]
        } else {
            match rng.pick(&targets) {
                Some(i) => *i,
                None => continue,
            }
        };
        let original = &example.documents[index];
        let Some((edits, what)) = mutation(original, &aimed, &mut rng) else {
            continue;
        };
        let mut doc = original.clone();
        let raws = apply(&mut doc, &edits);
        if &doc == original && raws.is_empty() {
            continue;
        }
        let document = to_yaml(&doc, &raws)?;
        let mut file = String::new();
        for (i, other) in example.documents.iter().enumerate() {
            if i > 0 {
                file.push_str("---\n");
            }
            if i == index {
                file.push_str(&document);
            } else {
                file.push_str(&to_yaml(other, &[])?);
            }
        }
        let kind = original["kind"].as_str().unwrap_or_default().to_owned();
        out.push(Variant {
            label: format!("{} {kind}: {what}", example.name),
            file,
            document,
            index,
            kind,
        });
    }
    Ok(out)
}

/// One mutation of `doc`, and what it is.
fn mutation(
    doc: &Json,
    aimed: &[(&'static str, Vec<Written>)],
    rng: &mut Rng,
) -> Option<(Vec<Edit>, String)> {
    let all = paths(doc);
    match rng.below(20) {
        // A value of another kind, or out of range, anywhere.
        0..=4 => {
            let path = rng.pick(&all)?.clone();
            let value = rng.pick(&replacements(get(doc, &path)?))?.clone();
            let what = format!("{} = {}", show_path(&path), value.shown());
            Some((vec![Edit::Set(path, value)], what))
        }
        // A field deleted, anywhere.
        5..=6 => {
            let path = rng.pick(&all)?.clone();
            let what = format!("{} deleted", show_path(&path));
            Some((vec![Edit::Remove(path)], what))
        }
        // A field the schema does not have, in any object.
        7 => {
            let objects: Vec<&Path> = all
                .iter()
                .filter(|p| get(doc, p).is_some_and(Json::is_object))
                .collect();
            let mut path = (*rng.pick(&objects)?).clone();
            path.push(Step::Key("bogusField".into()));
            let what = format!("{} added", show_path(&path));
            Some((vec![Edit::Set(path, j(json!(1)))], what))
        }
        8..=9 => {
            let combos = combinations(doc);
            let (edits, what) = rng.pick(&combos)?.clone();
            Some((edits, what.to_owned()))
        }
        // Aimed at what the schema, its rules and the controller check.
        _ => {
            let candidates: Vec<(Path, &Vec<Written>)> = aimed
                .iter()
                .flat_map(|(pattern, values)| {
                    resolve(doc, pattern).into_iter().map(move |p| (p, values))
                })
                .collect();
            let (path, values) = rng.pick(&candidates)?;
            let value = rng.pick(values)?.clone();
            let what = format!("{} = {}", show_path(path), value.shown());
            Some((vec![Edit::Set(path.clone(), value)], what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  replicas: 2\n  strategy:\n    canary:\n      steps: [{setWeight: 20}, {pause: {duration: 1m}}]\n";

    fn example() -> Example {
        Example::parse("canary", FILE).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_variants_and_another_seed_others() {
        let a = variants(&[example()], 7, 50).unwrap();
        let b = variants(&[example()], 7, 50).unwrap();
        let c = variants(&[example()], 8, 50).unwrap();
        let labels = |v: &[Variant]| v.iter().map(|v| v.label.clone()).collect::<Vec<_>>();
        assert_eq!(labels(&a), labels(&b));
        assert_ne!(labels(&a), labels(&c));
        assert_eq!(a.len(), 50);
    }

    #[test]
    fn only_sluice_objects_change_and_the_rest_of_the_file_stays() {
        for variant in variants(&[example()], 1, 40).unwrap() {
            assert_eq!(variant.index, 1, "{}", variant.label);
            assert_eq!(variant.kind, "Rollout");
            assert!(
                variant.file.starts_with("apiVersion: v1\nkind: Service\n"),
                "{}",
                variant.file
            );
            assert!(variant.file.ends_with(&variant.document));
            assert_ne!(
                variant.document,
                to_yaml(&example().documents[1], &[]).unwrap()
            );
        }
    }

    #[test]
    fn a_number_beyond_64_bits_is_written_into_the_text_as_it_stands() {
        let mut doc = example().documents[1].clone();
        let path: Path = parse_pattern("spec.replicas")
            .into_iter()
            .flatten()
            .collect();
        let raws = apply(&mut doc, &[Edit::Set(path, Written::Raw(HUGE))]);
        let text = to_yaml(&doc, &raws).unwrap();
        assert!(text.contains(&format!("replicas: {HUGE}\n")), "{text}");
    }

    #[test]
    fn patterns_name_every_index_and_a_field_still_to_be_set() {
        let doc = &example().documents[1];
        let found: Vec<String> = resolve(doc, "spec.strategy.canary.steps[*].pause.duration")
            .iter()
            .map(|p| show_path(p))
            .collect();
        assert_eq!(found, ["spec.strategy.canary.steps[1].pause.duration"]);
        let new: Vec<String> = resolve(doc, "spec.restartAt")
            .iter()
            .map(|p| show_path(p))
            .collect();
        assert_eq!(new, ["spec.restartAt"]);
        assert!(resolve(doc, "spec.strategy.blueGreen.activeService").is_empty());
    }
}
