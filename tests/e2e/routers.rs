//! The traffic routers against the real apiserver: an ingress-nginx canary Ingress beside the
//! user's, and weights and a header rule on a Gateway API HTTPRoute (the Gateway API's standard
//! channel installed from its own release). No proxy runs here: the objects are what the tests
//! check, as ingress-nginx and a Gateway implementation would read them.

use anyhow::{Context, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use serde_json::{Value, json};
use traffic::gateway::{GatewayRouter, MANAGED_RULES_ANNOTATION, http_route_resource};
use traffic::spec::GatewayApiRouting;
use traffic::{Applied, TrafficRouter};

use crate::rollouts::{
    create_rollout, create_service, decide, replica_counts, rollout_manifest, set_image,
    status_until,
};
use crate::support::{Env, RunningController, TestNamespace, eventually};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(routers::nginx_canary_ingress_follows_the_steps_and_goes_at_the_end),
        trial!(routers::gateway_api_weights_and_header_rule_and_an_abort_restores_the_route),
        trial!(routers::ab_test_on_nginx_routes_by_header_then_promotes),
        trial!(routers::ab_test_on_gateway_api_routes_by_header_and_cookie_then_promotes),
        trial!(routers::the_gateway_api_standard_channel_is_installed),
        trial!(routers::a_stale_http_route_patch_is_refused_and_the_router_reads_again),
    ]
}

/// The HTTPRoute router's JSON patch against the real apiserver: a patch computed from a route
/// someone changed since is refused (its resourceVersion test fails, 422), and the router reads
/// the route again and writes over the change without undoing it; a patch the apiserver refuses
/// for itself is an error at once, not a conflict retried.
async fn a_stale_http_route_patch_is_refused_and_the_router_reads_again(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("route-patch", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &http_route_resource());
        let route: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
                {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                                 {"name": "web-canary", "port": 80, "weight": 0}]}]},
        }))?;
        routes.create(&PostParams::default(), &route).await?;
        let backends = traffic::Backends {
            rollout: "web".into(),
            stable_service: "web-stable".into(),
            canary_service: "web-canary".into(),
        };
        let state = traffic::TrafficState { canary_weight: 10, routes: vec![] };
        let stale = serde_json::to_value(routes.get("web").await?)?;
        let ops = traffic::gateway::route_patch(&stale, &backends, &state, 100)?.context("nothing to write")?;

        // Someone else's change in between.
        let mut edited = stale.clone();
        edited["metadata"]["annotations"] = json!({"team": "shop"});
        routes.replace("web", &PostParams::default(), &serde_json::from_value(edited)?).await?;
        let params = PatchParams::default();
        match routes.patch("web", &params, &Patch::<()>::Json(serde_json::from_value(json!(ops))?)).await {
            Err(kube::Error::Api(status)) if status.code == 422 => {}
            other => anyhow::bail!("a stale patch was not refused with 422: {other:?}"),
        }

        let router = GatewayRouter::new(
            client.clone(), &ns, "sluice", &GatewayApiRouting { http_route: "web".into() },
        );
        ensure!(router.apply(&backends, Some(&state), 100).await? == Applied::Wrote("HTTPRoute"));
        let route = serde_json::to_value(routes.get("web").await?)?;
        ensure!(route["spec"]["rules"][0]["backendRefs"][1]["weight"] == 10, "{route}");
        ensure!(route["metadata"]["annotations"]["team"] == "shop", "the change in between was undone: {route}");
        ensure!(router.apply(&backends, Some(&state), 100).await? == Applied::Unchanged);

        // A weight beyond the CRD's maximum: refused whatever the resourceVersion.
        match router.apply(&backends, Some(&state), 2_000_000).await {
            Err(traffic::TrafficError::Api { source, .. }) if matches!(*source, kube::Error::Api(ref s) if s.code == 422) => {}
            other => anyhow::bail!("an invalid patch was not an API error: {other:?}"),
        }
        Ok(())
    })
    .await
}

/// The harness installs all of the pinned Gateway API's standard channel, not only HTTPRoute.
async fn the_gateway_api_standard_channel_is_installed(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    let client = env.cluster().await?.admin_client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut kinds: Vec<String> = crds
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|crd| crd.spec.group == "gateway.networking.k8s.io")
        .filter(|crd| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        })
        .map(|crd| crd.spec.names.kind)
        .collect();
    kinds.sort();
    for kind in [
        "BackendTLSPolicy",
        "GRPCRoute",
        "Gateway",
        "GatewayClass",
        "HTTPRoute",
        "ReferenceGrant",
    ] {
        ensure!(
            kinds.iter().any(|k| k == kind),
            "{kind} is not Established: {kinds:?}"
        );
    }
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client);
    ensure!(
        policies
            .get_opt("safe-upgrades.gateway.networking.k8s.io")
            .await?
            .is_some(),
        "the standard channel's upgrade policy is not installed"
    );
    eprintln!("routers: Gateway API CRDs installed: {}", kinds.join(", "));
    Ok(())
}

fn routed_strategy(routing: Value) -> Value {
    json!({"canary": {
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": routing,
        "abortScaleDownDelaySeconds": 2,
        "scaleDownDelaySeconds": 2,
        "steps": [
            {"setWeight": 10},
            {"setHeaderRoute": {"match": [{"headerName": "X-Canary", "headerValue": {"exact": "1"}}]}},
            {"pause": {}},
            {"setWeight": 50},
            {"pause": {}},
            {"setWeight": 100},
            {"pause": {}},
        ],
    }})
}

/// The pause steps of `routed_strategy` and the weight at each.
const PAUSES: [(i32, i32); 3] = [(2, 10), (4, 50), (6, 100)];

/// Waits for the rollout at pause step `index`, and returns the revision rolling out.
async fn at_pause(client: &kube::Client, ns: &str, index: i32) -> anyhow::Result<String> {
    let status = status_until(
        client,
        ns,
        "web",
        &format!("the pause at step {index}"),
        |s| {
            s.current_step_index == Some(index)
                && s.phase == Phase::Paused
                && s.updated_revision != s.stable_revision
        },
    )
    .await?;
    status.updated_revision.context("no updated revision")
}

async fn nginx_canary_ingress_follows_the_steps_and_goes_at_the_end(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("nginx", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::start(client.clone(), &ns);
        for service in ["web-stable", "web-canary"] {
            create_service(&client, &ns, service, "web").await?;
        }
        let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
        let stable: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {"team": "shop"}},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}},
                {"path": "/admin", "pathType": "Prefix",
                 "backend": {"service": {"name": "admin", "port": {"number": 80}}}},
            ]}}]},
        }))?;
        let stable = ingresses.create(&PostParams::default(), &stable).await?;
        let strategy = routed_strategy(json!({"nginx": {"stableIngress": "web"}}));
        create_rollout(&client, &ns, rollout_manifest("web", 4, "web:1", strategy)).await?;
        let v1 = status_until(&client, &ns, "web", "v1 Healthy", |s| s.phase == Phase::Healthy).await?;
        let old = v1.stable_revision.context("no stable revision")?;

        set_image(&client, &ns, "web", "web:2").await?;
        let mut new = String::new();
        for (index, weight) in PAUSES {
            new = at_pause(&client, &ns, index).await?;
            let canary = ingresses.get("web-web-canary").await.context("no canary Ingress")?;
            let annotations = canary.metadata.annotations.clone().unwrap_or_default();
            let a = |k: &str| annotations.get(&format!("nginx.ingress.kubernetes.io/{k}")).cloned();
            ensure!(a("canary").as_deref() == Some("true"), "{annotations:?}");
            ensure!(a("canary-weight") == Some(weight.to_string()), "step {index}: {annotations:?}");
            ensure!(a("canary-by-header").as_deref() == Some("X-Canary"), "{annotations:?}");
            ensure!(a("canary-by-header-value").as_deref() == Some("1"), "{annotations:?}");
            let paths = &canary.spec.as_ref().context("no spec")?.rules.as_ref().context("no rules")?[0]
                .http.as_ref().context("no http")?.paths;
            ensure!(paths.len() == 1, "only the stable path is copied: {paths:?}");
            ensure!(paths[0].backend.service.as_ref().map(|s| s.name.as_str()) == Some("web-canary"));
            let counts = replica_counts(&client, &ns).await?;
            let canary_pods = (weight * 4 + 99) / 100;
            ensure!(counts.get(&old) == Some(&4) && counts.get(&new) == Some(&canary_pods), "step {index}: {counts:?}");
            decide(&client, &ns, "web", json!({"revision": new, "promotedStep": index})).await?;
        }
        status_until(&client, &ns, "web", "v2 Healthy", |s| {
            s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(new.as_str())
        })
        .await?;
        eventually("the canary Ingress to go", || async {
            Ok(ingresses.get_opt("web-web-canary").await?.is_none().then_some(()))
        })
        .await?;
        let user = ingresses.get("web").await?;
        ensure!(user.metadata.resource_version == stable.metadata.resource_version, "the user's Ingress was changed");

        // v3 aborted at weight 10: the canary Ingress goes at once, then the canary's pods.
        let stable_hash = new;
        set_image(&client, &ns, "web", "web:3").await?;
        let v3 = at_pause(&client, &ns, 2).await?;
        decide(&client, &ns, "web", json!({"revision": v3, "abort": true})).await?;
        status_until(&client, &ns, "web", "v3 Aborted", |s| s.phase == Phase::Aborted).await?;
        eventually("the canary Ingress to go at the abort", || async {
            Ok(ingresses.get_opt("web-web-canary").await?.is_none().then_some(()))
        })
        .await?;
        eventually("v3 scaled down after abortScaleDownDelaySeconds", || async {
            let counts = replica_counts(&client, &ns).await?;
            Ok((counts.get(&v3) == Some(&0) && counts.get(&stable_hash) == Some(&4)).then_some(()))
        })
        .await?;
        print_writes(&controller, "nginx").await?;
        Ok(())
    })
    .await
}

async fn gateway_api_weights_and_header_rule_and_an_abort_restores_the_route(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("gateway", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::start(client.clone(), &ns);
        for service in ["web-stable", "web-canary"] {
            create_service(&client, &ns, service, "web").await?;
        }
        // The route's parent, as the standard channel's Gateway CRD has it (no implementation
        // runs to program it).
        let gateways: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway")),
        );
        let gateway: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gateway"},
            "spec": {"gatewayClassName": "example",
                     "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
        }))?;
        gateways.create(&PostParams::default(), &gateway).await?;
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &http_route_resource());
        // The routed rule rewrites paths and has timeouts: header-routed requests must get both.
        // (A prefix rewrite allows one match per rule, so Sluice's rule is one per user's rule.)
        let route: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "annotations": {"team": "shop"}},
            "spec": {
                "parentRefs": [{"name": "gateway"}],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                         "type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}}}],
                     "timeouts": {"request": "10s", "backendRequest": "5s"},
                     "backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                                     {"name": "web-canary", "port": 80, "weight": 0}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                     "filters": [{"type": "RequestHeaderModifier",
                                  "requestHeaderModifier": {"add": [{"name": "x-cdn", "value": "1"}]}}],
                     "backendRefs": [{"name": "cdn", "port": 80}]},
                ],
            },
        }))?;
        routes.create(&PostParams::default(), &route).await?;
        let rules_now = || async {
            anyhow::Ok(serde_json::to_value(routes.get("web").await?)?["spec"]["rules"].clone())
        };
        let mut original = rules_now().await?;
        let strategy = routed_strategy(json!({"gatewayAPI": {"httpRoute": "web"}}));
        create_rollout(&client, &ns, rollout_manifest("web", 4, "web:1", strategy)).await?;
        status_until(&client, &ns, "web", "v1 Healthy", |s| s.phase == Phase::Healthy).await?;

        set_image(&client, &ns, "web", "web:2").await?;
        let mut new = String::new();
        for (index, weight) in PAUSES {
            new = at_pause(&client, &ns, index).await?;
            let route = serde_json::to_value(routes.get("web").await?)?;
            let rules = route["spec"]["rules"].as_array().context("no rules")?.clone();
            ensure!(rules.len() == 3, "{rules:?}");
            ensure!(rules[0]["name"] == "sluice-web-0", "{:?}", rules[0]);
            ensure!(rules[0]["matches"][0]["path"]["value"] == "/", "{:?}", rules[0]);
            ensure!(rules[0]["matches"][0]["headers"][0]["name"] == "X-Canary", "{:?}", rules[0]);
            ensure!(
                rules[0]["filters"] == original[0]["filters"] && rules[0]["timeouts"] == original[0]["timeouts"],
                "the header rule lacks the user's filters or timeouts: {:?}", rules[0]
            );
            ensure!(route["metadata"]["annotations"]["team"] == "shop", "{:?}", route["metadata"]);
            ensure!(
                rules[1]["backendRefs"][0]["weight"] == 100 - weight && rules[1]["backendRefs"][1]["weight"] == weight,
                "step {index}: {:?}", rules[1]
            );
            ensure!(rules[2] == original[1], "the foreign rule changed: {:?}", rules[2]);
            ensure!(route["metadata"]["annotations"][MANAGED_RULES_ANNOTATION] == "sluice-web-0");
            if weight == 50 {
                // A hand edit of a weight Sluice owns is put back; one of the foreign rule is kept.
                let mut edited = route.clone();
                edited["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(100);
                edited["spec"]["rules"][1]["backendRefs"][1]["weight"] = json!(0);
                edited["spec"]["rules"][2]["matches"][0]["path"]["value"] = json!("/assets");
                let edited: DynamicObject = serde_json::from_value(edited)?;
                routes.replace("web", &PostParams::default(), &edited).await?;
                original[1]["matches"][0]["path"]["value"] = json!("/assets");
                eventually("the hand-edited weight to be restored", || async {
                    let rules = rules_now().await?;
                    Ok((rules[1]["backendRefs"][1]["weight"] == 50).then_some(rules))
                })
                .await
                .and_then(|rules| {
                    ensure!(rules[2] == original[1], "the hand edit of the foreign rule was undone: {:?}", rules[2]);
                    Ok(())
                })?;
            }
            decide(&client, &ns, "web", json!({"revision": new, "promotedStep": index})).await?;
        }
        status_until(&client, &ns, "web", "v2 Healthy", |s| {
            s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(new.as_str())
        })
        .await?;
        eventually("the route back to the user's rules", || async {
            Ok((rules_now().await? == original).then_some(()))
        })
        .await?;

        // v3 aborted at weight 10: weight 0 and the header rule gone at once, then the pods.
        let stable_hash = new;
        set_image(&client, &ns, "web", "web:3").await?;
        let v3 = at_pause(&client, &ns, 2).await?;
        decide(&client, &ns, "web", json!({"revision": v3, "abort": true})).await?;
        status_until(&client, &ns, "web", "v3 Aborted", |s| s.phase == Phase::Aborted).await?;
        eventually("the route as the user wrote it", || async {
            let route = serde_json::to_value(routes.get("web").await?)?;
            let restored = route["spec"]["rules"] == original
                && route["metadata"]["annotations"].get(MANAGED_RULES_ANNOTATION).is_none()
                && route["metadata"]["annotations"]["team"] == "shop";
            Ok(restored.then_some(()))
        })
        .await?;
        eventually("v3 scaled down after abortScaleDownDelaySeconds", || async {
            let counts = replica_counts(&client, &ns).await?;
            Ok((counts.get(&v3) == Some(&0) && counts.get(&stable_hash) == Some(&4)).then_some(()))
        })
        .await?;
        print_writes(&controller, "gateway").await?;
        Ok(())
    })
    .await
}

/// Prints the controller's API writes by kind: how many each router change costs.
async fn print_writes(controller: &RunningController, router: &str) -> anyhow::Result<()> {
    let metrics = controller.metrics().await?;
    let writes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_api_writes_total{"))
        .collect();
    eprintln!(
        "routers: {router}: v2 through weights 0/10/50/100 to completion, v3 to an abort: {}",
        writes.join(", ")
    );
    Ok(())
}

fn ab_strategy(routing: Value, matches: Value) -> Value {
    json!({"abTest": {
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": routing, "match": matches, "duration": "3s", "promote": "auto",
    }})
}

/// Runs an A/B test of v2 on `strategy`; `while_running` checks the router's objects while B
/// gets the matching requests, `after` once B is promoted.
async fn run_ab_test<R, A, RF, AF>(
    client: &kube::Client,
    ns: &str,
    strategy: Value,
    while_running: R,
    after: A,
) -> anyhow::Result<()>
where
    R: Fn() -> RF,
    RF: std::future::Future<Output = anyhow::Result<Option<()>>>,
    A: Fn() -> AF,
    AF: std::future::Future<Output = anyhow::Result<Option<()>>>,
{
    create_rollout(client, ns, rollout_manifest("web", 2, "web:1", strategy)).await?;
    status_until(client, ns, "web", "v1 Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    set_image(client, ns, "web", "web:2").await?;
    let running = status_until(client, ns, "web", "the A/B test to start", |s| {
        s.ab_test.as_ref().is_some_and(|t| t.started_at.is_some())
    })
    .await?;
    let b = running.updated_revision.context("no updated revision")?;
    eventually("B to get the matching requests", while_running).await?;
    status_until(client, ns, "web", "B promoted", |s| {
        s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(b.as_str())
    })
    .await?;
    eventually("the A/B routes to go", after).await?;
    Ok(())
}

async fn ab_test_on_nginx_routes_by_header_then_promotes(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("ab-nginx", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        for service in ["web-stable", "web-canary"] {
            create_service(&client, &ns, service, "web").await?;
        }
        let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
        let stable: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]},
        }))?;
        ingresses.create(&PostParams::default(), &stable).await?;
        let strategy = ab_strategy(
            json!({"nginx": {"stableIngress": "web"}}),
            json!([{"headers": [{"name": "X-Canary", "exact": "always"}]}, {"cookie": "canary"}]),
        );
        let running = || async {
            let Some(canary) = ingresses.get_opt("web-web-canary").await? else {
                return Ok(None);
            };
            let a = canary.metadata.annotations.unwrap_or_default();
            let get = |k: &str| {
                a.get(&format!("nginx.ingress.kubernetes.io/{k}"))
                    .map(String::as_str)
            };
            ensure!(get("canary-weight") == Some("0"), "{a:?}");
            ensure!(get("canary-by-header") == Some("X-Canary"), "{a:?}");
            ensure!(get("canary-by-header-value") == Some("always"), "{a:?}");
            ensure!(get("canary-by-cookie") == Some("canary"), "{a:?}");
            Ok(Some(()))
        };
        let gone = || async {
            Ok(ingresses
                .get_opt("web-web-canary")
                .await?
                .is_none()
                .then_some(()))
        };
        run_ab_test(&client, &ns, strategy, running, gone).await
    })
    .await
}

async fn ab_test_on_gateway_api_routes_by_header_and_cookie_then_promotes(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("ab-gateway", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        for service in ["web-stable", "web-canary"] {
            create_service(&client, &ns, service, "web").await?;
        }
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &http_route_resource());
        let route: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
                {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                                 {"name": "web-canary", "port": 80, "weight": 0}]}]},
        }))?;
        routes.create(&PostParams::default(), &route).await?;
        let strategy = ab_strategy(
            json!({"gatewayAPI": {"httpRoute": "web"}}),
            json!([{"headers": [{"name": "X-Canary", "prefix": "al"}, {"name": "X-Tier", "exact": "gold"}]},
                   {"cookie": "canary"}]),
        );
        let running = || async {
            let route = serde_json::to_value(routes.get("web").await?)?;
            let rules = route["spec"]["rules"].as_array().cloned().unwrap_or_default();
            if rules.len() != 3 {
                return Ok(None);
            }
            ensure!(rules[0]["name"] == "sluice-web-0" && rules[1]["name"] == "sluice-web-1", "{rules:?}");
            let headers = &rules[0]["matches"][0]["headers"];
            ensure!(headers[0]["type"] == "RegularExpression" && headers[0]["value"] == "^al.*", "{headers:?}");
            ensure!(headers[1]["name"] == "X-Tier", "{headers:?}");
            ensure!(rules[1]["matches"][0]["headers"][0]["name"] == "Cookie", "{:?}", rules[1]);
            ensure!(rules[2]["backendRefs"][1]["weight"] == 0, "B gets no weighted traffic: {:?}", rules[2]);
            Ok(Some(()))
        };
        let gone = || async {
            let route = serde_json::to_value(routes.get("web").await?)?;
            let rules = route["spec"]["rules"].as_array().cloned().unwrap_or_default();
            Ok((rules.len() == 1 && rules[0]["backendRefs"][0]["weight"] == 100).then_some(()))
        };
        run_ab_test(&client, &ns, strategy, running, gone).await
    })
    .await
}
