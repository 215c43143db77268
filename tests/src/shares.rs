//! The share of requests a version answered, judged against the weight it was given: the client
//! side of "traffic follows the weight".

/// Whether `observed` successes of `n` requests are within `sigmas` binomial standard
/// deviations of the share `p` (a fraction in 0..=1). With `p` of 0 or 1 the deviation allowed
/// is none: every request, or none, must be the version's.
pub fn within_binomial(observed: usize, n: usize, p: f64, sigmas: f64) -> bool {
    let n = n as f64;
    let deviation = (observed as f64 - n * p).abs();
    deviation <= sigmas * (n * p * (1.0 - p)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_sigmas_of_a_fifth_of_a_thousand() {
        // σ = √(1000 · 0.2 · 0.8) ≈ 12.65: 3σ ≈ 37.9.
        assert!(within_binomial(200, 1000, 0.2, 3.0));
        assert!(within_binomial(163, 1000, 0.2, 3.0));
        assert!(!within_binomial(162, 1000, 0.2, 3.0));
        assert!(within_binomial(237, 1000, 0.2, 3.0));
        assert!(!within_binomial(238, 1000, 0.2, 3.0));
    }

    #[test]
    fn all_or_nothing_allows_no_deviation() {
        assert!(within_binomial(1000, 1000, 1.0, 3.0));
        assert!(!within_binomial(999, 1000, 1.0, 3.0));
        assert!(within_binomial(0, 1000, 0.0, 3.0));
        assert!(!within_binomial(1, 1000, 0.0, 3.0));
    }
}
