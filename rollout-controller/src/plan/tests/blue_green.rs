//! Blue-green: the preview, the switch (by a decision or autoPromotionSeconds), pre- and
//! post-promotion analysis, the delay before the old version goes, and retries.

use super::*;

#[test]
fn blue_green_previews_then_switches_then_scales_down_after_the_delay() {
    let mut sim = deployed(blue_green_rollout(3, false));
    let blue = hash_of(&sim.rollout);
    assert_eq!(
        sim.selector_of("web-active").as_deref(),
        Some(blue.as_str())
    );
    set_image(&mut sim.rollout, "web:2");
    let green = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!(
        sim.selector_of("web-preview").as_deref(),
        Some(green.as_str())
    );
    assert_eq!(
        sim.selector_of("web-active").as_deref(),
        Some(blue.as_str())
    );
    assert_eq!((sim.replicas_of(&green), sim.replicas_of(&blue)), (3, 3));

    sim.decide(|d| d.promoted_step = Some(0));
    sim.settle();
    assert_eq!(
        sim.selector_of("web-active").as_deref(),
        Some(green.as_str())
    );
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    assert_eq!(sim.replicas_of(&blue), 3, "kept for scaleDownDelaySeconds");
    assert_eq!(sim.status().phase, Phase::Healthy);
    // Retiring blue when the delay is over is no progress still to come: the rollout stays
    // Healthy through it, and says so once.
    sim.advance(30);
    let retiring = sim.reconcile();
    assert_eq!(retiring.status.phase, Phase::Healthy);
    assert!(
        !retiring
            .events
            .iter()
            .any(|e| e.reason == EventReason::Healthy),
        "{:?}",
        retiring.events
    );
    sim.settle();
    assert_eq!(sim.replicas_of(&blue), 0);
    assert_eq!(sim.status().phase, Phase::Healthy);
    sim.assert_ok();
}

#[test]
fn blue_green_promotes_by_itself_after_auto_promotion_seconds() {
    let mut r = blue_green_rollout(2, true);
    if let Some(bg) = r.spec.strategy.blue_green.as_mut() {
        bg.auto_promotion_seconds = Some(20);
    }
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    let green = hash_of(&sim.rollout);
    sim.settle();
    assert_ne!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    sim.advance(20);
    sim.settle();
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    sim.assert_ok();
}

#[test]
fn a_retried_blue_green_counts_auto_promotion_from_the_retry_not_from_before_the_abort() {
    let mut r = blue_green_rollout(2, true);
    if let Some(bg) = r.spec.strategy.blue_green.as_mut() {
        bg.auto_promotion_seconds = Some(20);
    }
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    let green = hash_of(&sim.rollout);
    sim.settle();
    sim.advance(10);
    sim.decide(|d| d.abort = Some(true));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted, "{:?}", sim.status());
    sim.advance(60);
    sim.decide(|d| {
        d.abort = None;
        d.retry = Some(1);
    });
    sim.settle();
    // Ready again just now: the 20 s count from here, not from before the abort.
    assert_ne!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str()),
        "promoted without waiting autoPromotionSeconds after the retry: {:?}",
        sim.status()
    );
    sim.advance(20);
    sim.settle();
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(green.as_str())
    );
    sim.assert_ok();
}

#[test]
fn blue_green_switches_after_pre_promotion_and_switches_back_when_post_promotion_fails() {
    let mut rollout = blue_green_rollout(3, true);
    if let Some(bg) = rollout.spec.strategy.blue_green.as_mut() {
        bg.pre_promotion_analysis = Some(serde_json::from_value(error_rate()).unwrap());
        bg.post_promotion_analysis = Some(serde_json::from_value(error_rate()).unwrap());
    }
    let mut sim = deployed(rollout);
    let old = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let new = hash_of(&sim.rollout);
    sim.settle();
    let pre = format!("web-{new}-pre-2");
    assert_eq!(sim.run_names(), std::slice::from_ref(&pre));
    assert_eq!(sim.selector_of("web-active"), Some(old.clone()));
    assert_eq!(sim.selector_of("web-preview"), Some(new.clone()));
    sim.end_run(&pre, RunPhase::Successful);
    sim.settle();
    let post = format!("web-{new}-post-2");
    assert!(sim.runs.contains_key(&post));
    assert_eq!(sim.selector_of("web-active"), Some(new.clone()), "switched");
    assert_eq!(
        sim.status().stable_revision,
        Some(old.clone()),
        "not stable yet"
    );
    assert_eq!(sim.replicas_of(&old), 3, "the old version stays whole");
    sim.end_run(&post, RunPhase::Failed);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted);
    assert_eq!(
        sim.selector_of("web-active"),
        Some(old.clone()),
        "switched back"
    );
    sim.assert_ok();
}
