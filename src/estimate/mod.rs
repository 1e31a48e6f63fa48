//! Audience-size estimates from a progressively read sample (estimation.md §0, §1, §4, §5).
//!
//! A preview job reads the daily sample in rank order (see `sample::rank`), so the first t
//! profiles read are a simple random sample without replacement of the whole store of N profiles,
//! and the matches S among them follow Hypergeometric(N, M, t), M being the store's true matching
//! count. Inference therefore goes straight to the store; the sample size n only caps t and tunes
//! the interval.
//!
//! After each committed prefix, [`RunningEstimate`] reports:
//!
//! * `estimatedSize` = round(N·S/t), unbiased for M;
//! * `standardError` = N·√((1 − t/N)·p̂(1 − p̂)/(t − 1)) with p̂ = S/t, replaced by
//!   (S + ½)/(t + 1) when S ∈ {0, t}, so that it is 0 only after a census (§0);
//! * 95% `lower`/`upper` bounds on M from the null-centred beta-binomial / hypergeometric
//!   likelihood-ratio confidence sequence (§5.3). They hold simultaneously at every checkpoint
//!   with probability ≥ 95%, so they stay valid however often a client polls and whenever the
//!   job (or the client) stops, e.g. once [`Estimate::relative_half_width`] drops below a
//!   target. A fixed-sample interval such as Wilson re-checked at 100 checkpoints leaves only
//!   45–64% probability that all of them covered. When the whole store is read (t = n = N) the
//!   bounds collapse to the exact count.
//!
//! The sequence needs only (t, S), so a checkpoint costs O(log N) evaluations of a closed-form
//! log-likelihood ratio (about 10–30 µs in release builds) regardless of how many came before.
//!
//! ```
//! use segmentd::estimate::RunningEstimate;
//!
//! let mut running = RunningEstimate::new(10_000_000, 1_000_000)?;
//! let estimate = running.observe(100_000, 2_000)?;
//! assert_eq!(estimate.estimated_size, 200_000);
//! assert!(estimate.lower < 200_000 && 200_000 < estimate.upper);
//! # Ok::<(), segmentd::estimate::EstimateError>(())
//! ```

pub mod preview;
mod running;
mod sequence;
#[cfg(test)]
mod simulation;

pub use running::{DEFAULT_CONFIDENCE, Estimate, EstimateError, RunningEstimate};
