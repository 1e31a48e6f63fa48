//! The running estimate of a preview job: point estimate, standard error and anytime-valid bounds
//! after each committed prefix of the rank-ordered sample.

use serde::{Deserialize, Serialize};

use super::sequence::ConfidenceSequence;

/// The confidence level used when a caller does not choose one ("95%" in the estimate response).
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// Reports why a running estimate rejected its inputs.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum EstimateError {
    /// The sample is larger than the store it was drawn from.
    #[error("sample size {sample_size} exceeds store size {store_size}")]
    SampleLargerThanStore {
        /// Profiles in the sample (n).
        sample_size: u64,
        /// Profiles in the store (N).
        store_size: u64,
    },
    /// The confidence level is not strictly between 0 and 1.
    #[error("confidence level {0} is not strictly between 0 and 1")]
    InvalidConfidence(f64),
    /// More profiles were reported read than the sample holds.
    #[error("read count {read} exceeds sample size {sample_size}")]
    ReadBeyondSample {
        /// Profiles reported read (t).
        read: u64,
        /// Profiles in the sample (n).
        sample_size: u64,
    },
    /// The new progress is not an extension of the previous one: a count went down, or more
    /// profiles matched since the last checkpoint than were read.
    #[error("read/matched {read}/{matched} does not extend {previous_read}/{previous_matched}")]
    InconsistentProgress {
        /// Profiles read at the previous checkpoint.
        previous_read: u64,
        /// Profiles matched at the previous checkpoint.
        previous_matched: u64,
        /// Profiles reported read now.
        read: u64,
        /// Profiles reported matched now.
        matched: u64,
    },
}

/// Snapshot of an estimate after a checkpoint: the numbers a `GET /estimate` response reports.
///
/// Invariants (estimation.md §1): `read ≤ sample_size ≤ store_size`, `matched ≤ read`,
/// `matched ≤ lower ≤ estimated_size ≤ upper ≤ store_size − (read − matched)`,
/// `standard_error == 0` exactly when the whole store was read, and then
/// `lower == upper == matched`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Profiles in the store when the sample was taken (N, `totalRows` of the whole store).
    pub store_size: u64,
    /// Profiles in the sample (n, `numRowsToRead`).
    pub sample_size: u64,
    /// Profiles read so far, a prefix of the sample in rank order (t, `profilesReadSoFar`).
    pub read: u64,
    /// Read profiles that matched (S, `profilesMatchedSoFar`).
    pub matched: u64,
    /// Projected matches in the whole store, round(N·S/t) (`estimatedSize`); 0 before any read.
    pub estimated_size: u64,
    /// Standard error of `estimated_size` with the finite-population correction
    /// (`standardError`); descriptive only, the bounds carry the coverage guarantee.
    pub standard_error: f64,
    /// Lower bound on the store's matching count at `confidence`, valid at every checkpoint.
    pub lower: u64,
    /// Upper bound on the store's matching count at `confidence`, valid at every checkpoint.
    pub upper: u64,
    /// Confidence level of the bounds, e.g. 0.95.
    pub confidence: f64,
    /// Whether the whole store was read, so that `estimated_size` is the exact count.
    pub exact: bool,
}

impl Estimate {
    /// Returns the half-width of the bounds relative to the point estimate, (upper − lower) / 2 /
    /// estimated_size, so a job can stop once it is below a target such as 0.05.
    ///
    /// Returns 0 when the bounds have collapsed to one count (including an exact empty segment)
    /// and infinity when nothing matched yet but the bounds are still open: relative precision
    /// is undefined there, and a caller that wants to stop on rare segments needs an absolute
    /// rule on `upper`.
    pub fn relative_half_width(&self) -> f64 {
        let half_width = (self.upper - self.lower) as f64 / 2.0;
        if half_width == 0.0 {
            0.0
        } else if self.estimated_size == 0 {
            f64::INFINITY
        } else {
            half_width / self.estimated_size as f64
        }
    }
}

/// Tracks the estimate of one preview job across checkpoints.
///
/// Feed it the cumulative `(read, matched)` of the longest contiguous completed prefix of the
/// rank-ordered sample after each chunk; poll [`RunningEstimate::estimate`] as often as wanted.
/// The bounds come from the confidence sequence of estimation.md §5.3, which is a function of
/// (t, S) alone, so the only state carried between checkpoints is the last counts and the running
/// intersection of the bounds. The intersection stays valid, because all sets of the sequence
/// contain the true count simultaneously with probability ≥ the confidence level, and it keeps
/// the displayed range from widening between checkpoints (except to take in the point estimate,
/// or after the rare reset described in [`RunningEstimate::observe`]).
///
/// Cost per [`RunningEstimate::observe`]: O(log N) evaluations of the log-likelihood ratio (about
/// 60 at N = 2·10⁸, each eight `ln_gamma` calls); polling `estimate` is O(1).
#[derive(Clone, Debug)]
pub struct RunningEstimate {
    sequence: ConfidenceSequence,
    current: Estimate,
    /// Running intersection of the confidence sets before widening to the point estimate.
    intersection: (u64, u64),
}

impl RunningEstimate {
    /// Starts an estimate for a store of `store_size` profiles scanned through a sample of
    /// `sample_size`, with 95% bounds.
    pub fn new(store_size: u64, sample_size: u64) -> Result<Self, EstimateError> {
        Self::with_confidence(store_size, sample_size, DEFAULT_CONFIDENCE)
    }

    /// Starts an estimate with bounds at `confidence` (e.g. 0.99).
    pub fn with_confidence(
        store_size: u64,
        sample_size: u64,
        confidence: f64,
    ) -> Result<Self, EstimateError> {
        if sample_size > store_size {
            return Err(EstimateError::SampleLargerThanStore {
                sample_size,
                store_size,
            });
        }
        // The negated form also rejects NaN.
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(EstimateError::InvalidConfidence(confidence));
        }
        let sequence = ConfidenceSequence::new(store_size, sample_size, 1.0 - confidence);
        let current = Estimate {
            store_size,
            sample_size,
            read: 0,
            matched: 0,
            estimated_size: 0,
            standard_error: standard_error(store_size, 0, 0),
            lower: 0,
            upper: store_size,
            confidence,
            exact: store_size == 0,
        };
        Ok(Self {
            sequence,
            current,
            intersection: (0, store_size),
        })
    }

    /// Records the cumulative progress `read` profiles read, `matched` of them matching, and
    /// returns the updated estimate.
    ///
    /// Progress must only grow: `read` and `matched` may not decrease, the matches added since the
    /// last checkpoint may not exceed the reads added, and `read` may not exceed the sample. A
    /// rejected update leaves the estimate unchanged.
    ///
    /// The bounds are the intersection of the sets at all checkpoints so far, widened to include
    /// `estimated_size` when rounding (or the intersection) leaves it outside. If the intersection
    /// is empty, which can only happen after some set missed the true count (probability
    /// ≤ 1 − confidence), the bounds restart from the current set.
    pub fn observe(&mut self, read: u64, matched: u64) -> Result<Estimate, EstimateError> {
        let previous = self.current;
        if read > previous.sample_size {
            return Err(EstimateError::ReadBeyondSample {
                read,
                sample_size: previous.sample_size,
            });
        }
        let extends = read >= previous.read
            && matched >= previous.matched
            && matched - previous.matched <= read - previous.read;
        if !extends {
            return Err(EstimateError::InconsistentProgress {
                previous_read: previous.read,
                previous_matched: previous.matched,
                read,
                matched,
            });
        }
        if read == previous.read {
            return Ok(previous);
        }

        let store_size = previous.store_size;
        let (fresh_lower, fresh_upper) = self.sequence.interval(read, matched);
        let (kept_lower, kept_upper) = self.intersection;
        let (lower, upper) = (kept_lower.max(fresh_lower), kept_upper.min(fresh_upper));
        // An empty intersection means some earlier set missed the true count (probability ≤ α);
        // restart from the current set, which alone is still a valid bound at this look.
        self.intersection = if lower <= upper {
            (lower, upper)
        } else {
            (fresh_lower, fresh_upper)
        };

        let estimated_size = point_estimate(store_size, read, matched);
        // Rounding (and, rarely, the intersection) can leave the point estimate just outside the
        // set; widening to include it keeps every bound valid, since a superset of a confidence
        // set is one too.
        let (lower, upper) = self.intersection;
        self.current = Estimate {
            read,
            matched,
            estimated_size,
            standard_error: standard_error(store_size, read, matched),
            lower: lower.min(estimated_size),
            upper: upper.max(estimated_size),
            exact: read == store_size,
            ..previous
        };
        debug_assert_invariants(&self.current);
        Ok(self.current)
    }

    /// Returns the estimate at the last checkpoint.
    pub fn estimate(&self) -> Estimate {
        self.current
    }
}

/// Returns round(N·S/t), half up, in exact integer arithmetic (0 before any read).
fn point_estimate(store_size: u64, read: u64, matched: u64) -> u64 {
    if read == 0 {
        return 0;
    }
    let (product, t) = (
        u128::from(store_size) * u128::from(matched),
        u128::from(read),
    );
    let (quotient, remainder) = (product / t, product % t);
    let rounded = quotient + u128::from(2 * remainder >= t);
    // N·S/t ≤ N because S ≤ t, so the rounded quotient fits in u64.
    u64::try_from(rounded).expect("N·S/t ≤ N fits in u64")
}

/// Returns SE(N̂) = N·√((1 − t/N)·p(1 − p)/(t − 1)) (Cochran's unbiased variance under sampling
/// without replacement, estimation.md §0).
///
/// p = S/t, except that S ∈ {0, t} uses p̃ = (S + ½)/(t + 1), so the SE is 0 only when the whole
/// store was read and never suggests certainty about a segment that merely has no matches yet.
/// t − 1 is floored at 1, which gives N/2 before any read.
fn standard_error(store_size: u64, read: u64, matched: u64) -> f64 {
    if read == store_size {
        return 0.0;
    }
    let (n, t, s) = (store_size as f64, read as f64, matched as f64);
    let p = if matched == 0 || matched == read {
        (s + 0.5) / (t + 1.0)
    } else {
        s / t
    };
    n * ((1.0 - t / n) * p * (1.0 - p) / (t - 1.0).max(1.0)).sqrt()
}

/// Checks the invariants of estimation.md §1 on every snapshot in debug builds.
fn debug_assert_invariants(estimate: &Estimate) {
    let Estimate {
        store_size,
        sample_size,
        read,
        matched,
        estimated_size,
        lower,
        upper,
        ..
    } = *estimate;
    debug_assert!(
        read <= sample_size && sample_size <= store_size,
        "{estimate:?}"
    );
    debug_assert!(matched <= read, "{estimate:?}");
    debug_assert!(matched <= lower && lower <= estimated_size, "{estimate:?}");
    debug_assert!(
        estimated_size <= upper && upper <= store_size - (read - matched),
        "{estimate:?}"
    );
    debug_assert_eq!(
        estimate.standard_error == 0.0,
        read == store_size,
        "{estimate:?}"
    );
    debug_assert!(
        !estimate.exact || (lower == matched && upper == matched),
        "{estimate:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts the §1 invariants with `assert!`, so they also hold in release test runs.
    fn assert_invariants(e: &Estimate) {
        assert!(
            e.read <= e.sample_size && e.sample_size <= e.store_size,
            "{e:?}"
        );
        assert!(e.matched <= e.lower && e.lower <= e.estimated_size, "{e:?}");
        assert!(
            e.estimated_size <= e.upper && e.upper <= e.store_size - (e.read - e.matched),
            "{e:?}"
        );
        assert_eq!(e.standard_error == 0.0, e.read == e.store_size, "{e:?}");
        assert_eq!(e.exact, e.read == e.store_size, "{e:?}");
        assert!(
            e.standard_error.is_finite() && e.standard_error >= 0.0,
            "{e:?}"
        );
    }

    #[test]
    fn starts_with_the_whole_range() {
        let estimate = RunningEstimate::new(1_000, 1_000).unwrap().estimate();
        assert_eq!(
            (estimate.lower, estimate.upper, estimate.estimated_size),
            (0, 1_000, 0)
        );
        assert_eq!(estimate.standard_error, 500.0);
        assert_eq!(estimate.confidence, 0.95);
        assert!(!estimate.exact);
        assert_eq!(estimate.relative_half_width(), f64::INFINITY);
        assert_invariants(&estimate);
    }

    #[test]
    fn census_collapses_to_the_exact_count() {
        let mut running = RunningEstimate::new(10_000, 10_000).unwrap();
        let mut matched = 0;
        for read in (500..=10_000).step_by(500) {
            matched += 37;
            let estimate = running.observe(read, matched).unwrap();
            assert_invariants(&estimate);
        }
        let last = running.estimate();
        assert!(last.exact);
        assert_eq!(
            (last.lower, last.estimated_size, last.upper),
            (740, 740, 740)
        );
        assert_eq!(last.standard_error, 0.0);
        assert_eq!(last.relative_half_width(), 0.0);
    }

    #[test]
    fn empty_store_is_exact_from_the_start() {
        let estimate = RunningEstimate::new(0, 0).unwrap().estimate();
        assert!(estimate.exact);
        assert_eq!(
            (estimate.lower, estimate.upper, estimate.standard_error),
            (0, 0, 0.0)
        );
    }

    #[test]
    fn sampled_store_is_never_exact() {
        let mut running = RunningEstimate::new(10_000_000, 1_000_000).unwrap();
        let estimate = running.observe(1_000_000, 20_000).unwrap();
        assert!(!estimate.exact);
        assert_eq!(estimate.estimated_size, 200_000);
        assert!(estimate.lower < 200_000 && 200_000 < estimate.upper);
        assert!(estimate.standard_error > 0.0);
        assert_invariants(&estimate);
    }

    #[test]
    fn adobe_example_counts() {
        // api.md §3.4: 46 matched of 83,834 read, here with N = 10M and n = 1M. The anytime bounds
        // must be wider than the one-look Wilson+FPC interval [4,119, 7,309] of estimation.md §4.
        let mut running = RunningEstimate::new(10_000_000, 1_000_000).unwrap();
        let estimate = running.observe(83_834, 46).unwrap();
        assert_eq!(estimate.estimated_size, 5_487);
        // SE = N·√((1 − t/N)·p̂(1 − p̂)/(t − 1)) = 805 (estimation.md §4 table).
        assert!(
            (estimate.standard_error - 805.0).abs() < 1.0,
            "{}",
            estimate.standard_error
        );
        assert!(
            estimate.lower < 4_119 && estimate.upper > 7_309,
            "{estimate:?}"
        );
        assert_invariants(&estimate);
    }

    #[test]
    fn standard_error_uses_the_finite_population_correction() {
        // Cochran: N·√((1 − t/N)·p̂(1 − p̂)/(t − 1)).
        let se = standard_error(1_200_000, 1_000_000, 50_000);
        let expected = 1_200_000.0 * ((1.0 - 1.0 / 1.2) * 0.05 * 0.95 / 999_999.0_f64).sqrt();
        assert!((se - expected).abs() < 1e-9);
        // No matches yet: p̃ = ½/(t + 1) keeps the SE positive.
        assert!(standard_error(1_000_000, 1_000, 0) > 0.0);
        assert!(standard_error(1_000_000, 1_000, 1_000) > 0.0);
        assert_eq!(standard_error(1_000, 1_000, 0), 0.0);
        assert_eq!(standard_error(1, 0, 0), 0.5);
    }

    #[test]
    fn point_estimate_rounds_half_up_and_stays_in_range() {
        assert_eq!(point_estimate(10_000_000, 83_834, 46), 5_487);
        assert_eq!(point_estimate(10, 4, 1), 3); // 2.5 rounds up
        assert_eq!(point_estimate(10, 3, 1), 3); // 3.33
        assert_eq!(
            point_estimate(u64::MAX, u64::MAX - 1, u64::MAX - 1),
            u64::MAX
        );
        assert_eq!(point_estimate(7, 0, 0), 0);
    }

    #[test]
    fn rejects_inconsistent_inputs() {
        assert_eq!(
            RunningEstimate::new(10, 11).unwrap_err(),
            EstimateError::SampleLargerThanStore {
                sample_size: 11,
                store_size: 10
            }
        );
        for confidence in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(matches!(
                RunningEstimate::with_confidence(10, 10, confidence),
                Err(EstimateError::InvalidConfidence(_))
            ));
        }
        let mut running = RunningEstimate::new(100, 50).unwrap();
        assert!(matches!(
            running.observe(51, 0),
            Err(EstimateError::ReadBeyondSample { .. })
        ));
        assert!(matches!(
            running.observe(5, 6),
            Err(EstimateError::InconsistentProgress { .. })
        ));
        running.observe(20, 10).unwrap();
        for (read, matched) in [(19, 10), (25, 9), (25, 16)] {
            assert!(matches!(
                running.observe(read, matched),
                Err(EstimateError::InconsistentProgress { .. })
            ));
        }
        // A rejected update leaves the state untouched, and a repeated checkpoint is a no-op.
        assert_eq!(running.estimate().read, 20);
        assert_eq!(running.observe(20, 10).unwrap(), running.estimate());
    }

    #[test]
    fn intersection_is_nested_and_invariants_hold() {
        // A plausible 4% match stream with some deterministic jitter.
        let mut running = RunningEstimate::new(50_000, 50_000).unwrap();
        let (mut read, mut matched) = (0, 0);
        let mut previous = running.intersection;
        for step in 1..=200u64 {
            read += 250;
            matched += 10 + step % 3 - (step % 5) / 2;
            assert_invariants(&running.observe(read, matched).unwrap());
            let (lower, upper) = running.intersection;
            assert!(previous.0 <= lower && upper <= previous.1, "step {step}");
            previous = running.intersection;
        }
        assert!(running.estimate().exact);
    }

    #[test]
    fn empty_intersection_restarts_from_the_current_set() {
        // 0 of 5,000 read bounds the count far below what 2,500 of 10,000 implies; the sets are
        // disjoint, which can only happen when an earlier set missed the truth.
        let mut running = RunningEstimate::new(1_000_000, 1_000_000).unwrap();
        let first = running.observe(5_000, 0).unwrap();
        let second = running.observe(10_000, 2_500).unwrap();
        assert!(first.upper < second.lower, "{first:?} {second:?}");
        let fresh = running.sequence.interval(10_000, 2_500);
        assert_eq!((second.lower, second.upper), fresh);
        assert_invariants(&second);
    }

    #[test]
    fn relative_half_width_shrinks_with_reads() {
        let mut running = RunningEstimate::new(20_000_000, 1_000_000).unwrap();
        let early = running
            .observe(10_000, 2_000)
            .unwrap()
            .relative_half_width();
        let late = running
            .observe(1_000_000, 200_000)
            .unwrap()
            .relative_half_width();
        assert!(early > late && late > 0.0, "{early} {late}");
        let estimate = running.estimate();
        let expected =
            (estimate.upper - estimate.lower) as f64 / 2.0 / estimate.estimated_size as f64;
        assert_eq!(late, expected);
    }

    #[test]
    fn estimate_round_trips_through_json() {
        let mut running = RunningEstimate::new(1_000, 1_000).unwrap();
        let estimate = running.observe(100, 7).unwrap();
        let json = serde_json::to_value(estimate).unwrap();
        assert_eq!(json["estimatedSize"], 70);
        assert_eq!(json["standardError"], estimate.standard_error);
        let back: Estimate = serde_json::from_value(json).unwrap();
        assert_eq!(back, estimate);
    }
}
