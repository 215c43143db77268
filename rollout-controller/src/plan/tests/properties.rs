//! Property tests: random event sequences (pods ready and unready, time, decisions, pauses,
//! new templates) played against each strategy; the simulator checks the invariants after
//! every write, and every history ends calm.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn canary_invariants_hold(replicas in 1..8i32, events in proptest::collection::vec(event(), 1..60)) {
        let steps = json!([{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setCanaryScale": {"replicas": 1}},
                           {"setWeight": 60}, {"pause": {}}, {"setCanaryScale": {"matchTrafficWeight": true}}]);
        let sim = play(deployed(canary_rollout(replicas, steps)), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }

    #[test]
    fn routed_canary_invariants_hold(replicas in 1..8i32, events in proptest::collection::vec(event(), 1..60)) {
        let mut rollout = canary_rollout(replicas, json!([{"setWeight": 20}, {"pause": {"duration": "30s"}},
            {"setHeaderRoute": {"match": [{"headerName": "x", "headerValue": {"exact": "1"}}]}},
            {"setWeight": 60}, {"pause": {}}, {"setWeight": 30}, {"pause": {}}]));
        if let Some(c) = rollout.spec.strategy.canary.as_mut() {
            c.traffic_routing = Some(serde_json::from_value(json!({"gatewayAPI": {"httpRoute": "web"}})).unwrap());
        }
        let sim = play(deployed(rollout), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }

    #[test]
    fn blue_green_invariants_hold(replicas in 1..6i32, auto in any::<bool>(), events in proptest::collection::vec(event(), 1..60)) {
        let sim = play(deployed(blue_green_rollout(replicas, auto)), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }

    #[test]
    fn rolling_invariants_hold(replicas in 1..12i32, surge in 0..3i32, unavailable in 0..3i32,
                               events in proptest::collection::vec(event(), 1..60)) {
        let sim = play(deployed(rolling_rollout(replicas, surge, unavailable)), &events);
        prop_assert_eq!(sim.violation.clone(), None);
        assert_converges(sim);
    }
}
