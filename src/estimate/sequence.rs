//! The null-centred beta-binomial / hypergeometric confidence sequence (estimation.md §5.3).
//!
//! For a candidate store count M₀ (p₀ = M₀/N) the test martingale is the likelihood ratio of the
//! observed read against an alternative urn whose count is drawn from
//! BetaBinomial(N, κp₀, κ(1 − p₀)):
//!
//! ```text
//! R_t(M₀) = BB(S; t, κp₀, κq₀) / HG(S; N, M₀, t)
//! ln BB(S; t, a, b) = ln C(t, S) + ln B(S + a, t − S + b) − ln B(a, b)
//! ln HG(S; N, M, t) = ln C(M, S) + ln C(N − M, t − S) − ln C(N, t)
//! ```
//!
//! Under the true M it is a nonnegative martingale with R_0 = 1, so by Ville's inequality
//! C_t = {M₀ : R_t(M₀) < 1/α} misses M at *some* t with probability at most α: the set is valid
//! however often it is polled and whenever the scan stops. κ must be fixed before the scan (it
//! depends on N and n only). The set is an interval in practice (checked by brute force in the
//! tests); its ends are found by bisection between the logical limits and the maximum-likelihood
//! count, where R ≤ 1 because a mixture of hypergeometric likelihoods cannot exceed their maximum.
//!
//! Cost: one interval is O(log N) evaluations of ln R, each eight `ln_gamma` calls, about 60
//! evaluations at N = 2·10⁸.

use statrs::function::gamma::ln_gamma;

/// Parameters of one confidence sequence: the store size, the level and the mixing precision κ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ConfidenceSequence {
    store_size: u64,
    /// ln(1/α): a count stays in the set while ln R is below it.
    threshold: f64,
    /// Precision of the beta-binomial alternative; larger κ is tighter late, looser early.
    kappa: f64,
}

/// Terms of ln R that depend on the look (t, S) but not on the candidate count.
#[derive(Clone, Copy, Debug)]
pub(super) struct Look {
    read: u64,
    matched: u64,
    /// ln Γ(t + 1) − ln Γ(t + κ) + ln Γ(κ) + ln C(N, t).
    constant: f64,
}

impl ConfidenceSequence {
    /// Builds the sequence for a store of `store_size` profiles scanned through a sample of
    /// `sample_size`, at miscoverage `alpha`, tuned to be tightest at t₀ = n/16 reads.
    ///
    /// κ = max(1, t₀_eff / x*(α)) with t₀_eff = t₀ / max(1 − t₀/N, 0.1) and
    /// x*(α) = −2 ln α + ln(1 − 2 ln α) (estimation.md §5.3): the normal-mixture width is smallest
    /// where the information equals x*, and t₀ = n/16 kept the width a flat 1.5–1.9× Wilson from
    /// 1% to 100% of the scan in the note's simulations.
    pub(super) fn new(store_size: u64, sample_size: u64, alpha: f64) -> Self {
        debug_assert!(sample_size <= store_size);
        debug_assert!(alpha > 0.0 && alpha < 1.0);
        let tuning_reads = (sample_size as f64 / 16.0).max(1.0);
        let unread_fraction = if store_size == 0 {
            1.0
        } else {
            (1.0 - tuning_reads / store_size as f64).max(0.1)
        };
        let kappa = (tuning_reads / unread_fraction / x_star(alpha)).max(1.0);
        Self::with_kappa(store_size, alpha, kappa)
    }

    /// Builds the sequence with an explicit κ (the tests pin the note's reference values, which
    /// were computed with κ tuned at the reported read count).
    pub(super) fn with_kappa(store_size: u64, alpha: f64, kappa: f64) -> Self {
        debug_assert!(kappa > 0.0);
        Self {
            store_size,
            threshold: (1.0 / alpha).ln(),
            kappa,
        }
    }

    /// Precomputes the count-independent terms of ln R for the look (t, S), 0 < t < N.
    pub(super) fn look(&self, read: u64, matched: u64) -> Look {
        debug_assert!(0 < read && read < self.store_size && matched <= read);
        let (t, n, kappa) = (read as f64, self.store_size as f64, self.kappa);
        let ln_choose_n_t = ln_gamma(n + 1.0) - ln_gamma(t + 1.0) - ln_gamma(n - t + 1.0);
        let constant = ln_gamma(t + 1.0) - ln_gamma(t + kappa) + ln_gamma(kappa) + ln_choose_n_t;
        Look {
            read,
            matched,
            constant,
        }
    }

    /// Returns ln R_t(M₀) for a candidate count inside the logical range [S, N − (t − S)].
    fn log_ratio(&self, look: &Look, count: u64) -> f64 {
        let (read, matched, n) = (look.read, look.matched, self.store_size);
        debug_assert!(matched <= count && count <= n - (read - matched));
        // At M₀ = 0 or N the alternative urn is degenerate at M₀ itself, so R = 1 exactly; the
        // general formula would need ln Γ(0).
        if count == 0 || count == n {
            return 0.0;
        }
        let a = self.kappa * (count as f64 / n as f64);
        let b = self.kappa * ((n - count) as f64 / n as f64);
        let (s, f, m) = (matched as f64, (read - matched) as f64, count as f64);
        let rest = (n - count) as f64;
        look.constant + ln_gamma(s + a) + ln_gamma(f + b)
            - ln_gamma(a)
            - ln_gamma(b)
            - ln_gamma(m + 1.0)
            + ln_gamma(m - s + 1.0)
            - ln_gamma(rest + 1.0)
            + ln_gamma(rest - f + 1.0)
    }

    /// Returns whether `count` belongs to the confidence set at this look: it is consistent with
    /// what was read and ln R_t(count) < ln(1/α).
    pub(super) fn contains(&self, look: &Look, count: u64) -> bool {
        let consistent =
            look.matched <= count && count <= self.store_size - (look.read - look.matched);
        consistent && self.log_ratio(look, count) < self.threshold
    }

    /// Returns the confidence set for the store count after reading `read` profiles of which
    /// `matched` matched, as inclusive bounds `(lower, upper)`.
    ///
    /// t = 0 gives [0, N]; t = N (the whole store read) gives the exact count {S}. Otherwise the
    /// bounds lie in [S, N − (t − S)], the counts consistent with what was read.
    pub(super) fn interval(&self, read: u64, matched: u64) -> (u64, u64) {
        let n = self.store_size;
        debug_assert!(read <= n && matched <= read);
        if read == 0 {
            return (0, n);
        }
        if read == n {
            return (matched, matched);
        }
        let look = self.look(read, matched);
        let inside = |count: u64| self.contains(&look, count);
        let (lowest, highest) = (matched, n - (read - matched));
        // The hypergeometric maximum-likelihood count ⌊(N + 1)S/t⌋; u128 because (N + 1)S can
        // exceed u64 for stores near 2³².
        let mle = (u128::from(n) + 1) * u128::from(matched) / u128::from(read);
        let mode = u64::try_from(mle)
            .unwrap_or(u64::MAX)
            .clamp(lowest, highest);
        debug_assert!(inside(mode), "ln R at the mode must be ≤ 0");

        let lower = if inside(lowest) {
            lowest
        } else {
            // Invariant: `excluded` is outside the set, `included` inside.
            let (mut excluded, mut included) = (lowest, mode);
            while included - excluded > 1 {
                let middle = excluded + (included - excluded) / 2;
                if inside(middle) {
                    included = middle
                } else {
                    excluded = middle
                }
            }
            included
        };
        let upper = if inside(highest) {
            highest
        } else {
            let (mut included, mut excluded) = (mode, highest);
            while excluded - included > 1 {
                let middle = included + (excluded - included) / 2;
                if inside(middle) {
                    included = middle
                } else {
                    excluded = middle
                }
            }
            included
        };
        (lower, upper)
    }
}

/// Returns x*(α) = −2 ln α + ln(1 − 2 ln α), the information at which a normal-mixture boundary
/// with unit mixing variance is narrowest (7.936 at α = 0.05).
fn x_star(alpha: f64) -> f64 {
    let two_ln_alpha = 2.0 * alpha.ln();
    -two_ln_alpha + (1.0 - two_ln_alpha).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHA: f64 = 0.05;

    /// Returns the set {M₀ : R_t(M₀) < 1/α} by scanning every count in the logical range.
    fn brute_force(cs: &ConfidenceSequence, read: u64, matched: u64) -> Vec<u64> {
        let look = cs.look(read, matched);
        (matched..=cs.store_size - (read - matched))
            .filter(|&count| cs.log_ratio(&look, count) < cs.threshold)
            .collect()
    }

    #[test]
    fn x_star_matches_the_note() {
        assert!((x_star(0.05) - 7.936).abs() < 1e-3);
    }

    #[test]
    fn kappa_follows_the_tuning_rule() {
        // N = 20M, n = 1M: t₀ = 62,500, t₀_eff = 62,500 / (1 − 62,500/20M) = 62,695.9.
        let cs = ConfidenceSequence::new(20_000_000, 1_000_000, ALPHA);
        assert!(
            (cs.kappa - 62_695.92 / x_star(ALPHA)).abs() < 0.01,
            "{}",
            cs.kappa
        );
        // Census: t₀_eff = (N/16) / (15/16) = N/15.
        let census = ConfidenceSequence::new(480_000, 480_000, ALPHA);
        assert!((census.kappa - 32_000.0 / x_star(ALPHA)).abs() < 1e-6);
        // Tiny samples floor κ at 1.
        assert_eq!(ConfidenceSequence::new(10, 10, ALPHA).kappa, 1.0);
        assert_eq!(ConfidenceSequence::new(0, 0, ALPHA).kappa, 1.0);
    }

    #[test]
    fn bisection_equals_brute_force_and_the_set_is_contiguous() {
        for (store, sample) in [(1, 1), (2, 2), (7, 7), (60, 60), (400, 400), (1_000, 250)] {
            let cs = ConfidenceSequence::new(store, sample, ALPHA);
            let reads = [
                1,
                2,
                3,
                store / 10,
                store / 3,
                store / 2,
                store.saturating_sub(2),
                store - 1,
            ];
            for read in reads.into_iter().filter(|&t| 0 < t && t < store) {
                for matched in 0..=read {
                    let set = brute_force(&cs, read, matched);
                    let (lower, upper) = cs.interval(read, matched);
                    assert_eq!(set.first(), Some(&lower), "N={store} t={read} S={matched}");
                    assert_eq!(set.last(), Some(&upper), "N={store} t={read} S={matched}");
                    assert_eq!(
                        set.len() as u64,
                        upper - lower + 1,
                        "gap: N={store} t={read} S={matched}"
                    );
                }
            }
        }
    }

    #[test]
    fn bisection_equals_brute_force_on_a_larger_store() {
        let cs = ConfidenceSequence::new(100_600, 100_600, ALPHA);
        for (read, matched) in [
            (83_834, 46),
            (500, 0),
            (500, 500),
            (20_000, 6_000),
            (100_599, 3),
        ] {
            let set = brute_force(&cs, read, matched);
            assert_eq!((set[0], *set.last().unwrap()), cs.interval(read, matched));
            assert_eq!(set.len() as u64, set.last().unwrap() - set[0] + 1);
        }
    }

    #[test]
    fn limits_are_exact() {
        let cs = ConfidenceSequence::new(5_000, 5_000, ALPHA);
        assert_eq!(cs.interval(0, 0), (0, 5_000));
        assert_eq!(cs.interval(5_000, 1_234), (1_234, 1_234));
        assert_eq!(cs.interval(5_000, 0), (0, 0));
        assert_eq!(cs.interval(300, 0).0, 0, "no match ⇒ lower = 0");
        assert_eq!(cs.interval(300, 300).1, 5_000, "all match ⇒ upper = N");
        let (lower, upper) = cs.interval(4_999, 17);
        assert!(lower >= 17 && upper <= 18);
    }

    #[test]
    fn reference_values_from_the_note() {
        // estimation.md §4 / §9.5: 46 matches in 83,834 reads, κ tuned at the current read count,
        // κ = t_eff / x* with t_eff = t / (1 − t/N).
        let cases = [
            (100_600, (47, 66)),
            (1_000_000, (344, 815)),
            (10_000_000, (3_356, 8_266)),
            (200_000_000, (66_948, 165_559)),
        ];
        for (store, (lower, upper)) in cases {
            let read = 83_834_u64;
            let t_eff = read as f64 / (1.0 - read as f64 / store as f64);
            let cs = ConfidenceSequence::with_kappa(store, ALPHA, t_eff / x_star(ALPHA));
            let (got_lower, got_upper) = cs.interval(read, 46);
            assert!(
                got_lower.abs_diff(lower) <= 1,
                "N={store}: lower {got_lower} vs {lower}"
            );
            assert!(
                got_upper.abs_diff(upper) <= 1,
                "N={store}: upper {got_upper} vs {upper}"
            );
        }
        let cs = ConfidenceSequence::with_kappa(10_000_000, ALPHA, 84_543.0 / x_star(ALPHA));
        assert!((cs.kappa - 10_653.0).abs() < 1.0);
    }

    #[test]
    fn higher_confidence_nests_lower_confidence() {
        for (store, sample) in [
            (2_000, 2_000),
            (10_000_000, 1_000_000),
            (200_000_000, 10_000_000),
        ] {
            let wide = ConfidenceSequence::new(store, sample, 0.01);
            let narrow = ConfidenceSequence::new(store, sample, ALPHA);
            for read in [
                1,
                10,
                100,
                sample / 100,
                sample / 16,
                sample / 2,
                sample - 1,
            ] {
                for fraction in [0.0, 0.0005, 0.02, 0.3, 0.5, 1.0] {
                    let matched = (read as f64 * fraction).round() as u64;
                    let (wide_lo, wide_hi) = wide.interval(read, matched);
                    let (lo, hi) = narrow.interval(read, matched);
                    assert!(
                        wide_lo <= lo && hi <= wide_hi,
                        "N={store} t={read} S={matched}"
                    );
                }
            }
        }
    }
}
