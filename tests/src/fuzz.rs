//! Cases for the seeded fuzz of the controller: the examples with one thing changed, each made
//! to live beside the others in one namespace under one controller.
//!
//! Two sources. [`crate::mutate`] changes what the schema judges (types, ranges, names); the
//! mutations here keep to values the schema accepts but that ask the controller something odd:
//! weights of 0 and 100, no steps, zero-length pauses, no replicas, an analysis that names a
//! template nobody created, a Service or router left out of the file, pods that cannot be
//! scheduled, a ReplicaSet the apiserver will refuse. The same seed gives the same cases.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{Value as Json, json};

use crate::mutate::{Example, variants};

/// One file to create, and what was changed in it.
#[derive(Debug, Clone)]
pub struct Case {
    /// For people, and to replay: `canary-nginx Rollout: spec.replicas = 0`.
    pub label: String,
    /// The file's documents as YAML, their objects renamed apart from every other case's.
    pub documents: Vec<String>,
    /// What was appended to the example's names: `-f12`.
    pub suffix: String,
}

/// Where the examples' analyses measure: every URL in them is replaced by `prometheus`, so that
/// nothing the controller does for these cases leaves the loopback address it names; and no
/// Rollout asks for more than `replicas` pods, so that many cases fit in one small cluster.
pub fn prepared(example: &Example, prometheus: &str, replicas: i64) -> Example {
    let mut documents = example.documents.clone();
    for doc in &mut documents {
        replace_urls(doc, prometheus);
        if doc["kind"] == "Rollout"
            && let Some(current) = doc.pointer("/spec/replicas").and_then(Json::as_i64)
        {
            doc["spec"]["replicas"] = json!(current.min(replicas));
        }
    }
    Example {
        name: example.name.clone(),
        documents,
    }
}

fn replace_urls(at: &mut Json, to: &str) {
    match at {
        Json::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
            *s = to.to_owned();
        }
        Json::Array(items) => items.iter_mut().for_each(|v| replace_urls(v, to)),
        Json::Object(map) => map.values_mut().for_each(|v| replace_urls(v, to)),
        _ => {}
    }
}

/// `schema` cases from [`crate::mutate`] and `semantic` of this module's own, from `seed`; none
/// asks for more than `max_replicas` pods in one place (spec.replicas, a canary scale, a
/// preview), and each has its objects named with its own suffix.
pub fn cases(
    examples: &[Example],
    seed: u64,
    schema: usize,
    semantic: usize,
    max_replicas: f64,
) -> Result<Vec<Case>, String> {
    let mut unnamed: Vec<(String, &Example, Vec<String>)> = Vec::new();
    // More than needed: some ask for too many pods.
    for variant in variants(examples, seed, schema * 4)? {
        if unnamed.len() == schema {
            break;
        }
        let origin = variant.label.split_once(' ').map_or("", |(name, _)| name);
        let example = examples
            .iter()
            .find(|e| e.name == origin)
            .ok_or_else(|| format!("{}: from no example", variant.label))?;
        let (changed, _) = protect(&variant.document);
        let changed: Json = serde_norway::from_str(&changed).unwrap_or(Json::Null);
        if !fits(&changed, max_replicas) {
            continue;
        }
        let mut documents = Vec::new();
        for (i, doc) in example.documents.iter().enumerate() {
            documents.push(if i == variant.index {
                variant.document.clone()
            } else {
                yaml(doc)?
            });
        }
        unnamed.push((variant.label, example, documents));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut attempts = 0;
    let wanted = unnamed.len() + semantic;
    while unnamed.len() < wanted && attempts < semantic * 20 {
        attempts += 1;
        let Some(example) = examples.choose(&mut rng) else {
            return Err("no examples".into());
        };
        let mut docs = example.documents.clone();
        let Some(what) = mutate(&mut docs, &mut rng) else {
            continue;
        };
        if docs == example.documents || !docs.iter().all(|d| fits(d, max_replicas)) {
            continue;
        }
        let documents = docs
            .iter()
            .filter(|d| !d.is_null())
            .map(yaml)
            .collect::<Result<Vec<_>, _>>()?;
        unnamed.push((format!("{} {what}", example.name), example, documents));
    }
    let mut out = Vec::with_capacity(unnamed.len());
    let mut rollout_names = BTreeSet::new();
    for (i, (label, example, documents)) in unnamed.into_iter().enumerate() {
        let suffix = format!("-f{i}");
        let names = names(example);
        let documents = documents
            .iter()
            .map(|doc| rename_apart(doc, &names, &suffix))
            .collect::<Result<Vec<_>, _>>()?;
        // A mutated name is not renamed (it is what is tested): two cases with the same one
        // would meet in the namespace, and the second would be refused for the wrong reason.
        let rollout = documents
            .iter()
            .filter_map(|d| serde_norway::from_str::<Json>(&protect(d).0).ok())
            .find(|d| d["kind"] == "Rollout")
            .map(|d| d["metadata"]["name"].to_string());
        if let Some(name) = rollout
            && !rollout_names.insert(name)
        {
            continue;
        }
        out.push(Case {
            label,
            documents,
            suffix,
        });
    }
    Ok(out)
}

/// The example with nothing changed, renamed apart with `suffix`, as YAML documents.
pub fn unchanged(example: &Example, suffix: &str) -> Result<Vec<String>, String> {
    let names = names(example);
    example
        .documents
        .iter()
        .map(|doc| rename_apart(&yaml(doc)?, &names, suffix))
        .collect()
}

fn yaml(doc: &Json) -> Result<String, String> {
    serde_norway::to_string(doc).map_err(|e| e.to_string())
}

/// What names objects in `example` and ties them together: every object's name and the
/// Rollout's selector values (the pods' `app` label).
fn names(example: &Example) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for doc in &example.documents {
        if let Some(name) = doc["metadata"]["name"].as_str() {
            names.insert(name.to_owned());
        }
        if doc["kind"] == "Rollout"
            && let Some(labels) = doc
                .pointer("/spec/selector/matchLabels")
                .and_then(Json::as_object)
        {
            names.extend(labels.values().filter_map(Json::as_str).map(str::to_owned));
        }
    }
    names
}

const RAW_MARK: &str = "SLUICE-FUZZ-RAW-";

/// The YAML text with integers of 19 digits or more (beyond what JSON numbers keep exactly)
/// replaced by quoted placeholders, and the numbers they stand for.
fn protect(text: &str) -> (String, Vec<(String, String)>) {
    let mut raws = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let replaced = line.rsplit_once(' ').and_then(|(head, tail)| {
            let digits = tail.strip_prefix('-').unwrap_or(tail);
            let number = digits.len() >= 19 && digits.bytes().all(|b| b.is_ascii_digit());
            (number && (head.ends_with(':') || head.ends_with('-'))).then(|| {
                let mark = format!("{RAW_MARK}{}", raws.len());
                raws.push((mark.clone(), tail.to_owned()));
                format!("{head} '{mark}'")
            })
        });
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    (out, raws)
}

/// `doc` with every string equal to one of `names` given `suffix`, numbers beyond JSON's kept as
/// they were written.
pub fn rename_apart(doc: &str, names: &BTreeSet<String>, suffix: &str) -> Result<String, String> {
    fn walk(at: &mut Json, names: &BTreeSet<String>, suffix: &str) {
        match at {
            Json::String(s) if names.contains(s.as_str()) => s.push_str(suffix),
            Json::Array(items) => items.iter_mut().for_each(|v| walk(v, names, suffix)),
            Json::Object(map) => map.values_mut().for_each(|v| walk(v, names, suffix)),
            _ => {}
        }
    }
    let (text, raws) = protect(doc);
    let mut value: Json = serde_norway::from_str(&text).map_err(|e| format!("{e}: {doc}"))?;
    walk(&mut value, names, suffix);
    let mut text = yaml(&value)?;
    for (mark, raw) in &raws {
        for quoted in [format!("'{mark}'"), format!("\"{mark}\""), mark.clone()] {
            text = text.replace(&quoted, raw);
        }
    }
    Ok(text)
}

/// No count of pods in `doc` above `max`.
fn fits(doc: &Json, max: f64) -> bool {
    let above = |v: Option<&Json>| v.and_then(Json::as_f64).is_some_and(|n| n > max);
    let steps = doc
        .pointer("/spec/strategy/canary/steps")
        .and_then(Json::as_array);
    !(above(doc.pointer("/spec/replicas"))
        || above(doc.pointer("/spec/strategy/blueGreen/previewReplicaCount"))
        || steps
            .into_iter()
            .flatten()
            .any(|s| above(s.pointer("/setCanaryScale/replicas"))))
}

type Mutation = fn(&mut [Json], &mut StdRng) -> Option<String>;

/// Each changes the documents of one example, or answers `None` where it does not apply.
const MUTATIONS: [Mutation; 19] = [
    replicas,
    no_steps,
    weight_at_an_edge,
    zero_pause,
    only_an_indefinite_pause,
    many_steps,
    canary_scale,
    analysis_of_a_missing_template,
    document_left_out,
    weight_above_the_router_maximum,
    progress_deadline,
    spec_flags,
    pods_that_cannot_be_scheduled,
    a_replica_set_the_apiserver_refuses,
    surge_and_unavailable,
    blue_green_settings,
    ab_test_settings,
    one_service_for_both,
    template_settings,
];

fn mutate(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let first = rng.random_range(0..MUTATIONS.len());
    let what = MUTATIONS[first](docs, rng)?;
    // Now and then two at once: the controller must say something of the pair too.
    let second = rng.random_range(0..MUTATIONS.len());
    if rng.random_bool(0.2)
        && second != first
        && let Some(more) = MUTATIONS[second](docs, rng)
    {
        return Some(format!("{what}; {more}"));
    }
    Some(what)
}

fn rollout(docs: &mut [Json]) -> Option<&mut Json> {
    docs.iter_mut().find(|d| d["kind"] == "Rollout")
}

/// The Rollout's strategy object under `key` (`canary`, `blueGreen`, ...), when it has one.
fn strategy<'a>(docs: &'a mut [Json], key: &str) -> Option<&'a mut Json> {
    rollout(docs)?
        .pointer_mut(&format!("/spec/strategy/{key}"))
        .filter(|s| s.is_object())
}

fn steps(docs: &mut [Json]) -> Option<&mut Vec<Json>> {
    strategy(docs, "canary")?
        .get_mut("steps")
        .and_then(Json::as_array_mut)
}

fn replicas(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let n = *[0, 1, 3, 6].choose(rng)?;
    rollout(docs)?["spec"]["replicas"] = json!(n);
    Some(format!("spec.replicas = {n}"))
}

fn no_steps(docs: &mut [Json], _: &mut StdRng) -> Option<String> {
    *steps(docs)? = Vec::new();
    Some("spec.strategy.canary.steps = []".into())
}

fn weight_at_an_edge(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let weight = *[0, 100].choose(rng)?;
    let steps = steps(docs)?;
    let at = rng.random_range(0..=steps.len());
    steps.insert(at, json!({"setWeight": weight}));
    Some(format!(
        "spec.strategy.canary.steps[{at}] = setWeight {weight} (inserted)"
    ))
}

fn zero_pause(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let duration = [json!("0s"), json!(0), json!("1s")].choose(rng)?.clone();
    let steps = steps(docs)?;
    let at = rng.random_range(0..=steps.len());
    let what = format!("spec.strategy.canary.steps[{at}] = pause {duration} (inserted)");
    steps.insert(at, json!({"pause": {"duration": duration}}));
    Some(what)
}

fn only_an_indefinite_pause(docs: &mut [Json], _: &mut StdRng) -> Option<String> {
    *steps(docs)? = vec![json!({"pause": {}})];
    Some("spec.strategy.canary.steps = [pause {}]".into())
}

fn many_steps(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let n = rng.random_range(20..=40);
    *steps(docs)? = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                json!({"setWeight": (i * 100 / n).min(100)})
            } else {
                json!({"pause": {"duration": "0s"}})
            }
        })
        .collect();
    Some(format!(
        "spec.strategy.canary.steps = {n} steps of setWeight and pause 0s"
    ))
}

fn canary_scale(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let scale = [
        json!({"replicas": 0}),
        json!({"replicas": 6}),
        json!({"weight": 0}),
        json!({"weight": 100}),
        json!({"matchTrafficWeight": true}),
    ]
    .choose(rng)?
    .clone();
    let steps = steps(docs)?;
    let at = rng.random_range(0..=steps.len());
    let what = format!("spec.strategy.canary.steps[{at}] = setCanaryScale {scale} (inserted)");
    steps.insert(at, json!({"setCanaryScale": scale}));
    Some(what)
}

const ABSENT: &str = "absent-template";

fn analysis_of_a_missing_template(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let absent = json!({"templates": [{"templateName": ABSENT}]});
    let key = rollout(docs)?
        .pointer("/spec/strategy")?
        .as_object()?
        .keys()
        .next()?
        .clone();
    let at = strategy(docs, &key)?;
    let field = match key.as_str() {
        "canary" if rng.random_bool(0.5) => {
            let steps = at.get_mut("steps")?.as_array_mut()?;
            let i = rng.random_range(0..=steps.len());
            steps.insert(i, json!({"analysis": absent}));
            format!("steps[{i}].analysis (inserted)")
        }
        "blueGreen" => {
            let which = *["prePromotionAnalysis", "postPromotionAnalysis"].choose(rng)?;
            at[which] = absent;
            which.to_owned()
        }
        _ => {
            at["analysis"] = absent;
            "analysis".to_owned()
        }
    };
    Some(format!(
        "spec.strategy.{key}.{field} names AnalysisTemplate {ABSENT}, which nobody created"
    ))
}

fn document_left_out(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let others: Vec<usize> = (0..docs.len())
        .filter(|i| !docs[*i].is_null() && docs[*i]["kind"] != "Rollout")
        .collect();
    let i = *others.choose(rng)?;
    // Null: a document left out of the file when it is written.
    let gone = std::mem::take(&mut docs[i]);
    Some(format!(
        "{} {} left out of the file",
        gone["kind"].as_str().unwrap_or("?"),
        gone["metadata"]["name"].as_str().unwrap_or("?")
    ))
}

fn weight_above_the_router_maximum(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let max = *[0, 20].choose(rng)?;
    let routing = strategy(docs, "canary")?.get_mut("trafficRouting")?;
    routing["maxTrafficWeight"] = json!(max);
    Some(format!(
        "spec.strategy.canary.trafficRouting.maxTrafficWeight = {max}, below the steps' weights"
    ))
}

fn progress_deadline(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let abort = rng.random_bool(0.5);
    let spec = &mut rollout(docs)?["spec"];
    spec["progressDeadlineSeconds"] = json!(1);
    spec["progressDeadlineAbort"] = json!(abort);
    Some(format!(
        "spec.progressDeadlineSeconds = 1, progressDeadlineAbort = {abort}"
    ))
}

fn spec_flags(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let (field, value) = [
        ("paused", json!(true)),
        ("revisionHistoryLimit", json!(0)),
        ("minReadySeconds", json!(3600)),
        ("minReadySeconds", json!(0)),
    ]
    .choose(rng)?
    .clone();
    rollout(docs)?["spec"][field] = value.clone();
    Some(format!("spec.{field} = {value}"))
}

fn pods_that_cannot_be_scheduled(docs: &mut [Json], _: &mut StdRng) -> Option<String> {
    let pod = rollout(docs)?.pointer_mut("/spec/template/spec")?;
    pod["nodeSelector"] = json!({"fuzz.sluice.dev/no-such-node": "true"});
    Some("spec.template.spec.nodeSelector matches no node".into())
}

fn a_replica_set_the_apiserver_refuses(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let template = rollout(docs)?.pointer_mut("/spec/template")?;
    let what = match rng.random_range(0..4) {
        0 => {
            template["metadata"]["annotations"] = json!({"fuzz": "x".repeat(300 * 1024)});
            "spec.template.metadata.annotations of 300 KiB"
        }
        1 => {
            let containers = template.pointer_mut("/spec/containers")?.as_array_mut()?;
            let twin = containers.first()?.clone();
            containers.push(twin);
            "spec.template.spec.containers: the same container twice"
        }
        2 => {
            template["spec"]["containers"][0]["image"] = json!("");
            "spec.template.spec.containers[0].image = \"\""
        }
        _ => {
            template["spec"]["containers"][0]["env"] =
                json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "no.such"}}}]);
            "spec.template.spec.containers[0].env[0] from an unknown fieldPath"
        }
    };
    Some(what.into())
}

fn surge_and_unavailable(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let (surge, unavailable) = [
        (json!(0), json!("100%")),
        (json!("100%"), json!(0)),
        (json!(0), json!(1)),
        (json!("50%"), json!("50%")),
        (json!(10), json!(10)),
    ]
    .choose(rng)?
    .clone();
    let key = ["canary", "rollingUpdate"].into_iter().find(|k| {
        rollout(docs).is_some_and(|r| r.pointer(&format!("/spec/strategy/{k}")).is_some())
    })?;
    let at = strategy(docs, key)?;
    at["maxSurge"] = surge.clone();
    at["maxUnavailable"] = unavailable.clone();
    Some(format!(
        "spec.strategy.{key}.maxSurge = {surge}, maxUnavailable = {unavailable}"
    ))
}

fn blue_green_settings(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let bg = strategy(docs, "blueGreen")?;
    let what = match rng.random_range(0..5) {
        0 => {
            bg["autoPromotionEnabled"] = json!(false);
            "autoPromotionEnabled = false".to_owned()
        }
        1 => {
            bg["autoPromotionSeconds"] = json!(0);
            "autoPromotionSeconds = 0".to_owned()
        }
        2 => {
            bg["previewReplicaCount"] = json!(6);
            "previewReplicaCount = 6".to_owned()
        }
        3 => {
            let active = bg["activeService"].clone();
            bg["previewService"] = active;
            "previewService = activeService".to_owned()
        }
        _ => {
            bg["scaleDownDelaySeconds"] = json!(0);
            bg.as_object_mut()?.remove("previewService");
            "scaleDownDelaySeconds = 0, no previewService".to_owned()
        }
    };
    Some(format!("spec.strategy.blueGreen.{what}"))
}

fn ab_test_settings(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let ab = strategy(docs, "abTest")?;
    let what = match rng.random_range(0..3) {
        0 => {
            ab["duration"] = json!("0s");
            "duration = 0s"
        }
        1 => {
            ab["duration"] = json!("1s");
            ab["promote"] = json!("manual");
            "duration = 1s, promote = manual"
        }
        _ => {
            ab.as_object_mut()?.remove("analysis");
            ab["duration"] = json!("1s");
            "duration = 1s, no analysis"
        }
    };
    Some(format!("spec.strategy.abTest.{what}"))
}

fn one_service_for_both(docs: &mut [Json], _: &mut StdRng) -> Option<String> {
    let key = ["canary", "abTest"].into_iter().find(|k| {
        rollout(docs).is_some_and(|r| {
            r.pointer(&format!("/spec/strategy/{k}/canaryService"))
                .is_some()
        })
    })?;
    let at = strategy(docs, key)?;
    at["canaryService"] = at["stableService"].clone();
    Some(format!("spec.strategy.{key}.canaryService = stableService"))
}

fn template_settings(docs: &mut [Json], rng: &mut StdRng) -> Option<String> {
    let template = docs.iter_mut().find(|d| d["kind"] == "AnalysisTemplate")?;
    let spec = &mut template["spec"];
    let what = match rng.random_range(0..4) {
        0 => {
            let metric = spec.pointer_mut("/metrics/0")?;
            metric["interval"] = json!("1s");
            metric["count"] = json!(1);
            "metrics[0].interval = 1s, count = 1"
        }
        1 => {
            let args = spec.get_mut("args")?.as_array_mut()?;
            args.push(json!({"name": "never-given"}));
            "args[] + never-given, with no value and none passed"
        }
        2 => {
            let arg = spec.pointer_mut("/args/0")?.as_object_mut()?;
            arg.remove("value");
            "args[0].value deleted"
        }
        _ => {
            let metric = spec.pointer_mut("/metrics/0")?;
            metric["failureLimit"] = json!(0);
            metric["consecutiveErrorLimit"] = json!(0);
            "metrics[0].failureLimit = 0, consecutiveErrorLimit = 0"
        }
    };
    Some(format!("AnalysisTemplate spec.{what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web-stable}\nspec:\n  selector: {app: web}\n---\napiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: errors}\nspec:\n  args: [{name: prometheus, value: http://prometheus.monitoring:9090}]\n  metrics: [{name: e, interval: 1m, provider: {prometheus: {address: '{{args.prometheus}}', query: up}}}]\n---\napiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  replicas: 5\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: 'web:1'}]}\n  strategy:\n    canary:\n      stableService: web-stable\n      analysis: {templates: [{templateName: errors}]}\n      steps: [{setWeight: 20}, {pause: {duration: 1m}}]\n";

    fn example() -> Example {
        prepared(
            &Example::parse("canary", FILE).unwrap(),
            "http://127.0.0.1:9",
            2,
        )
    }

    #[test]
    fn prepared_examples_measure_on_loopback_and_ask_for_few_pods() {
        let example = example();
        assert_eq!(
            example.documents[1].pointer("/spec/args/0/value"),
            Some(&json!("http://127.0.0.1:9"))
        );
        assert_eq!(example.documents[2]["spec"]["replicas"], 2);
    }

    #[test]
    fn the_same_seed_gives_the_same_cases_and_another_seed_others() {
        let labels = |seed| -> Vec<String> {
            cases(&[example()], seed, 10, 20, 6.0)
                .unwrap()
                .into_iter()
                .map(|c| c.label)
                .collect()
        };
        assert_eq!(labels(3), labels(3));
        assert_ne!(labels(3), labels(4));
        assert!(labels(3).len() >= 25, "{:?}", labels(3));
    }

    #[test]
    fn renaming_apart_keeps_references_and_selectors_together() {
        let example = example();
        let docs = unchanged(&example, "-f7").unwrap();
        let rollout: Json = serde_norway::from_str(&docs[2]).unwrap();
        assert_eq!(rollout["metadata"]["name"], "web-f7");
        assert_eq!(rollout["spec"]["selector"]["matchLabels"]["app"], "web-f7");
        assert_eq!(
            rollout["spec"]["strategy"]["canary"]["stableService"],
            "web-stable-f7"
        );
        assert_eq!(
            rollout["spec"]["strategy"]["canary"]["analysis"]["templates"][0]["templateName"],
            "errors-f7"
        );
        let service: Json = serde_norway::from_str(&docs[0]).unwrap();
        assert_eq!(service["spec"]["selector"]["app"], "web-f7");
        // Names a mutation wrote are what is tested: they stay as they are.
        let missing = rename_apart(
            "spec: {stableService: missing, other: web.example.com}\n",
            &names(&example),
            "-f7",
        )
        .unwrap();
        assert!(missing.contains("stableService: missing"), "{missing}");
        assert!(missing.contains("web.example.com"), "{missing}");
    }

    #[test]
    fn numbers_beyond_64_bits_survive_renaming_as_written() {
        let doc = "metadata:\n  name: web\nspec:\n  replicas: 18446744073709551616\n  steps:\n  - -18446744073709551617\n";
        let renamed = rename_apart(doc, &names(&example()), "-f1").unwrap();
        assert!(
            renamed.contains("replicas: 18446744073709551616\n"),
            "{renamed}"
        );
        assert!(renamed.contains("- -18446744073709551617\n"), "{renamed}");
        assert!(renamed.contains("name: web-f1\n"), "{renamed}");
    }

    #[test]
    fn no_case_asks_for_more_pods_than_the_bound() {
        for case in cases(&[example()], 11, 40, 40, 6.0).unwrap() {
            for doc in &case.documents {
                let value: Json = serde_norway::from_str(&protect(doc).0).unwrap_or(Json::Null);
                assert!(fits(&value, 6.0), "{}: {doc}", case.label);
            }
        }
        assert!(!fits(&json!({"spec": {"replicas": 101}}), 6.0));
        assert!(!fits(&json!({"spec": {"replicas": 1e3}}), 6.0));
        assert!(fits(&json!({"spec": {"replicas": "101"}}), 6.0));
    }

    #[test]
    fn every_case_changes_its_example() {
        let example = example();
        let all = cases(std::slice::from_ref(&example), 5, 10, 30, 6.0).unwrap();
        assert!(all.len() >= 35, "{}", all.len());
        for case in all {
            assert!(case.label.starts_with("canary "), "{}", case.label);
            assert_ne!(
                case.documents,
                unchanged(&example, &case.suffix).unwrap(),
                "{}",
                case.label
            );
        }
    }
}
