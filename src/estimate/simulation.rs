//! Simulation proof of simultaneous coverage (estimation.md §9).
//!
//! Each run draws the matches seen at every checkpoint of one scan of a uniformly permuted store
//! and asks whether the confidence set contained the true count at *all* checkpoints. Two
//! generators, both exact for sampling without replacement:
//!
//! * increments: S_{t_k} − S_{t_{k−1}} ~
//!   Hypergeometric(N − t_{k−1}, M − S_{t_{k−1}}, t_k − t_{k−1}), drawn in order, which is the
//!   law of the match counts at the checkpoints of a random permutation and costs
//!   O(checkpoints) per run whatever N is;
//! * shuffle: a partial Fisher–Yates shuffle of an explicit store of N flags, read in order (the
//!   physical process itself, for smaller stores).
//!
//! The same draws feed a naive Wilson interval with finite-population correction re-checked at
//! every checkpoint; its simultaneous coverage must fall well below 95%, which proves the harness
//! would catch an implementation that is only valid at one pre-chosen look.
//!
//! Checkpoints: every max(1, n/10,000) rows up to 1% of the sample (dense early, small counts),
//! then every 1% of the sample: 199 looks (149 when n < 10,000, 109 for n = 1,000). Runs are seeded per run index, so results do not depend on the
//! number of threads. The default tests run 10,000 runs per scenario and check the confidence set
//! by its defining inequality ln R < ln(1/α) at the true count (one evaluation per look), and
//! drive the full [`RunningEstimate`] (bisection, intersection, invariants) on a subset of runs.
//! The `#[ignore]`d heavy test runs the full estimator on every run of a larger grid:
//!
//! ```text
//! cargo test --release --lib estimate::simulation::heavy -- --ignored --nocapture
//! ```

use std::time::Instant;

use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use statrs::function::gamma::ln_gamma;

use super::running::RunningEstimate;
use super::sequence::ConfidenceSequence;

const ALPHA: f64 = 0.05;
/// Φ⁻¹(0.975).
const Z: f64 = 1.959_963_984_540_054;
const RUNS: u64 = 10_000;
/// Runs (from run 0) on which the bisected interval is checked against the ln R membership test.
const AGREEMENT_RUNS: u64 = 100;

/// How the match counts at the checkpoints are drawn.
#[derive(Clone, Copy, Debug)]
enum Draws {
    Increments,
    Shuffle,
}

/// One store, sample and segment, simulated `runs` times.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    store: u64,
    sample: u64,
    matching: u64,
    runs: u64,
    seed: u64,
    draws: Draws,
    /// Runs (from run 0) that also drive the full `RunningEstimate` at every look.
    full_runs: u64,
}

impl Scenario {
    fn new(name: &'static str, store: u64, sample: u64, fraction: f64, seed: u64) -> Self {
        let matching = (store as f64 * fraction).round() as u64;
        Self {
            name,
            store,
            sample,
            matching,
            runs: RUNS,
            seed,
            draws: Draws::Increments,
            full_runs: 100,
        }
    }

    fn shuffled(self) -> Self {
        Self {
            draws: Draws::Shuffle,
            ..self
        }
    }
}

/// Coverage counts of one scenario.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    /// Runs whose confidence set held the true count at every look.
    cs_all: u64,
    /// Runs whose displayed `RunningEstimate` bounds held it at every look (full runs only).
    displayed_all: u64,
    full_runs: u64,
    naive_all: u64,
    cs_per_look: Vec<u64>,
    naive_per_look: Vec<u64>,
    /// Summed widths (confidence set, Wilson) at each look, over full runs.
    widths: Vec<(f64, f64)>,
}

impl Tally {
    fn new(looks: usize) -> Self {
        Self {
            cs_per_look: vec![0; looks],
            naive_per_look: vec![0; looks],
            widths: vec![(0.0, 0.0); looks],
            ..Self::default()
        }
    }

    fn merge(&mut self, other: Tally) {
        self.runs += other.runs;
        self.cs_all += other.cs_all;
        self.displayed_all += other.displayed_all;
        self.full_runs += other.full_runs;
        self.naive_all += other.naive_all;
        for (mine, theirs) in self.cs_per_look.iter_mut().zip(other.cs_per_look) {
            *mine += theirs;
        }
        for (mine, theirs) in self.naive_per_look.iter_mut().zip(other.naive_per_look) {
            *mine += theirs;
        }
        for (mine, theirs) in self.widths.iter_mut().zip(other.widths) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
    }

    fn rate(hits: u64, runs: u64) -> f64 {
        hits as f64 / runs as f64
    }

    fn min_per_look(per_look: &[u64], runs: u64) -> f64 {
        per_look
            .iter()
            .map(|&hits| Self::rate(hits, runs))
            .fold(1.0, f64::min)
    }
}

/// Returns the checkpoints: every max(1, n/10,000) rows up to n/100, then every n/100 rows.
fn checkpoints(sample: u64) -> Vec<u64> {
    let dense = (sample / 10_000).max(1);
    let mut looks: Vec<u64> = (1..=100)
        .map(|k| k * dense)
        .filter(|&t| t <= sample / 100)
        .collect();
    looks.extend((1..=100).map(|k| (sample * k).div_ceil(100)));
    looks.retain(|&t| t > 0);
    looks.sort_unstable();
    looks.dedup();
    looks
}

/// Draws from Hypergeometric(population, successes, draws) by inversion from the mode outwards.
///
/// Exact up to floating-point rounding of the pmf; O(standard deviation) steps per draw.
/// `rand_distr::Hypergeometric` is not used because its set-up for small modes loops over
/// K + n factorial terms and overflows for large populations (estimation.md §8).
fn hypergeometric<R: Rng + ?Sized>(
    rng: &mut R,
    population: u64,
    successes: u64,
    draws: u64,
) -> u64 {
    debug_assert!(successes <= population && draws <= population);
    let failures = population - successes;
    let (lowest, highest) = (draws.saturating_sub(failures), draws.min(successes));
    if lowest == highest {
        return lowest;
    }
    let mode = ((u128::from(draws) + 1) * (u128::from(successes) + 1)
        / (u128::from(population) + 2)) as u64;
    let mode = mode.clamp(lowest, highest);
    let ln_choose = |n: u64, k: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
    };
    let ln_mode_pmf = ln_choose(successes, mode) + ln_choose(failures, draws - mode)
        - ln_choose(population, draws);
    let mut u = rng.random::<f64>() - ln_mode_pmf.exp();
    if u < 0.0 {
        return mode;
    }
    let (k, n) = (successes as f64, draws as f64);
    let (mut up, mut up_pmf, mut down, mut down_pmf) =
        (mode, ln_mode_pmf.exp(), mode, ln_mode_pmf.exp());
    loop {
        let mut moved = false;
        if up < highest {
            let x = up as f64;
            // failures − draws + x + 1 ≥ 1 because x ≥ lowest.
            up_pmf *= (k - x) * (n - x) / ((x + 1.0) * ((failures + up + 1 - draws) as f64));
            up += 1;
            u -= up_pmf;
            if u < 0.0 {
                return up;
            }
            moved = true;
        }
        if down > lowest {
            let x = down as f64;
            down_pmf *= x * ((failures + down - draws) as f64) / ((k - x + 1.0) * (n - x + 1.0));
            down -= 1;
            u -= down_pmf;
            if u < 0.0 {
                return down;
            }
            moved = true;
        }
        if !moved {
            // Only the rounding residue of the pmf's total (≈ 1e-12) is left.
            return mode;
        }
    }
}

/// Returns the naive Wilson interval with finite-population correction, as counts clipped to the
/// logical range (estimation.md §4). Valid at one pre-chosen look only.
fn wilson_fpc(store: u64, read: u64, matched: u64) -> (f64, f64) {
    let (lowest, highest) = (matched as f64, (store - (read - matched)) as f64);
    if read == store {
        return (lowest, highest);
    }
    let (n, t) = (store as f64, read as f64);
    let p = matched as f64 / t;
    let effective = t * (n - 1.0) / (n - t);
    let z2 = Z * Z;
    let scale = 1.0 + z2 / effective;
    let centre = (p + z2 / (2.0 * effective)) / scale;
    let half = Z / scale * (p * (1.0 - p) / effective + z2 / (4.0 * effective * effective)).sqrt();
    (
        ((centre - half) * n).max(lowest),
        ((centre + half) * n).min(highest),
    )
}

/// Simulates runs `first..end` of a scenario.
fn simulate_runs(scenario: &Scenario, looks: &[u64], first: u64, end: u64) -> Tally {
    let Scenario {
        store,
        sample,
        matching,
        ..
    } = *scenario;
    let sequence = ConfidenceSequence::new(store, sample, ALPHA);
    let mut tally = Tally::new(looks.len());
    let mut flags: Vec<bool> = match scenario.draws {
        Draws::Shuffle => (0..store).map(|i| i < matching).collect(),
        Draws::Increments => Vec::new(),
    };
    let mut matched_at = vec![0u64; looks.len()];
    for run in first..end {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(scenario.seed.wrapping_add(run));
        match scenario.draws {
            Draws::Increments => {
                let (mut read, mut matched) = (0, 0);
                for (slot, &t) in matched_at.iter_mut().zip(looks) {
                    matched += hypergeometric(&mut rng, store - read, matching - matched, t - read);
                    read = t;
                    *slot = matched;
                }
            }
            Draws::Shuffle => {
                // The chosen prefix is uniform whatever order earlier runs left the flags in.
                let (chosen, _) = flags.partial_shuffle(&mut rng, sample as usize);
                let (mut read, mut matched) = (0usize, 0u64);
                for (slot, &t) in matched_at.iter_mut().zip(looks) {
                    matched += chosen[read..t as usize].iter().filter(|&&hit| hit).count() as u64;
                    read = t as usize;
                    *slot = matched;
                }
            }
        }

        let full = run < scenario.full_runs;
        let mut running = full.then(|| RunningEstimate::new(store, sample).unwrap());
        let (mut cs_all, mut displayed_all, mut naive_all) = (true, true, true);
        for (index, (&t, &s)) in looks.iter().zip(&matched_at).enumerate() {
            let cs_in = if t == store {
                s == matching
            } else {
                sequence.contains(&sequence.look(t, s), matching)
            };
            let (wilson_lo, wilson_hi) = wilson_fpc(store, t, s);
            // Rounded outwards to counts, which favours the naive interval (and keeps S = 0 from
            // missing M = 0 by a rounding error).
            let naive_in =
                wilson_lo.floor() <= matching as f64 && matching as f64 <= wilson_hi.ceil();
            tally.cs_per_look[index] += u64::from(cs_in);
            tally.naive_per_look[index] += u64::from(naive_in);
            cs_all &= cs_in;
            naive_all &= naive_in;
            if run < AGREEMENT_RUNS {
                let (lower, upper) = sequence.interval(t, s);
                assert_eq!(
                    (lower..=upper).contains(&matching),
                    cs_in,
                    "bisection disagrees with ln R: {} run {run} t={t} S={s}",
                    scenario.name
                );
            }
            if let Some(running) = running.as_mut() {
                let estimate = running.observe(t, s).unwrap();
                let displayed_in = (estimate.lower..=estimate.upper).contains(&matching);
                // The intersection covers whenever every set so far covered.
                assert!(
                    !cs_all || displayed_in,
                    "{} run {run} t={t}: {estimate:?}",
                    scenario.name
                );
                displayed_all &= displayed_in;
                tally.widths[index].0 += (estimate.upper - estimate.lower) as f64;
                tally.widths[index].1 += wilson_hi - wilson_lo;
            }
        }
        tally.runs += 1;
        tally.cs_all += u64::from(cs_all);
        tally.naive_all += u64::from(naive_all);
        if full {
            tally.full_runs += 1;
            tally.displayed_all += u64::from(displayed_all);
        }
    }
    tally
}

/// Runs a scenario on all cores, prints its summary and checks the acceptance rules of §9.
fn check(scenario: Scenario, naive_must_fail: bool) -> Tally {
    let started = Instant::now();
    let looks = checkpoints(scenario.sample);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let per_thread = scenario.runs.div_ceil(threads);
    let mut tally = Tally::new(looks.len());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let (first, end) = (i * per_thread, ((i + 1) * per_thread).min(scenario.runs));
                let looks = &looks;
                scope.spawn(move || simulate_runs(&scenario, looks, first, end))
            })
            .collect();
        for worker in workers {
            tally.merge(worker.join().unwrap());
        }
    });

    let runs = tally.runs;
    let cs = Tally::rate(tally.cs_all, runs);
    let cs_min = Tally::min_per_look(&tally.cs_per_look, runs);
    let naive = Tally::rate(tally.naive_all, runs);
    let naive_min = Tally::min_per_look(&tally.naive_per_look, runs);
    let displayed = Tally::rate(tally.displayed_all, tally.full_runs.max(1));
    let ratio_at = |percent: u64| {
        let t = (scenario.sample * percent).div_ceil(100);
        let index = looks.iter().position(|&look| look == t).unwrap();
        let (cs_width, wilson_width) = tally.widths[index];
        cs_width / wilson_width
    };
    println!(
        "{:<34} N={:<11} n={:<10} M={:<10} runs={runs} looks={} | CS all={cs:.4} min/look={cs_min:.4} \
         displayed all={displayed:.4} ({} full runs) | naive Wilson+FPC all={naive:.4} min/look={naive_min:.4} \
         | CS/Wilson width @1%={:.2} @10%={:.2} @50%={:.2} @100%={:.2} | {:.1}s",
        scenario.name,
        scenario.store,
        scenario.sample,
        scenario.matching,
        looks.len(),
        tally.full_runs,
        ratio_at(1),
        ratio_at(10),
        ratio_at(50),
        ratio_at(100),
        started.elapsed().as_secs_f64(),
    );
    assert!(runs >= RUNS && looks.len() >= 100);
    assert!(
        cs >= 1.0 - ALPHA,
        "{}: simultaneous coverage {cs}",
        scenario.name
    );
    assert!(
        cs_min >= 1.0 - ALPHA,
        "{}: per-look coverage {cs_min}",
        scenario.name
    );
    // Too few full runs would make this a coin toss; the per-look check in `simulate_runs` already
    // ties the displayed bounds to the set's coverage.
    if tally.full_runs >= RUNS {
        assert!(
            displayed >= 1.0 - ALPHA,
            "{}: displayed coverage {displayed}",
            scenario.name
        );
    }
    if naive_must_fail {
        assert!(
            naive < 0.80,
            "{}: naive simultaneous coverage {naive} should be < 0.80",
            scenario.name
        );
    }
    tally
}

const CENSUS: u64 = 500_000;
const STORE: u64 = 20_000_000;
const SAMPLE: u64 = 1_000_000;

#[test]
fn coverage_census_rare() {
    check(
        Scenario::new("census, rare p=0.001", CENSUS, CENSUS, 0.001, 11),
        true,
    );
}

#[test]
fn coverage_census_medium() {
    check(
        Scenario::new("census, medium p=0.02", CENSUS, CENSUS, 0.02, 12),
        true,
    );
}

#[test]
fn coverage_census_common() {
    check(
        Scenario::new("census, common p=0.3", CENSUS, CENSUS, 0.3, 13),
        true,
    );
}

#[test]
fn coverage_million_of_twenty_rare() {
    check(
        Scenario::new("1M of 20M, rare p=0.00055", STORE, SAMPLE, 0.000_55, 21),
        true,
    );
}

#[test]
fn coverage_million_of_twenty_medium() {
    check(
        Scenario::new("1M of 20M, medium p=0.02", STORE, SAMPLE, 0.02, 22),
        true,
    );
}

#[test]
fn coverage_million_of_twenty_common() {
    check(
        Scenario::new("1M of 20M, common p=0.3", STORE, SAMPLE, 0.3, 23),
        true,
    );
}

#[test]
fn coverage_shuffled_census() {
    check(
        Scenario::new("shuffled census, p=0.05", 5_000, 5_000, 0.05, 31).shuffled(),
        true,
    );
}

#[test]
fn coverage_shuffled_one_in_twenty() {
    check(
        Scenario::new("shuffled 5k of 100k, p=0.01", 100_000, 5_000, 0.01, 32).shuffled(),
        true,
    );
}

#[test]
fn null_and_full_segments_are_always_covered() {
    // With M = 0 every read has S = 0, and with M = N every read has S = t: the sets must contain
    // the truth at every t, and the census must be exact.
    for (store, sample) in [(1_000, 1_000), (20_000_000, 1_000_000)] {
        let sequence = ConfidenceSequence::new(store, sample, ALPHA);
        for t in checkpoints(sample) {
            let (lower, upper) = sequence.interval(t, 0);
            assert_eq!(lower, 0, "N={store} t={t}");
            assert!(upper < store, "N={store} t={t}");
            let (lower, upper) = sequence.interval(t, t);
            assert_eq!(upper, store, "N={store} t={t}");
            assert!(lower > 0, "N={store} t={t}");
        }
    }
}

#[test]
fn hypergeometric_draws_match_the_exact_moments() {
    // Mean nK/N and variance nK(N−K)(N−n)/(N²(N−1)); 100k draws, tolerance 5 standard errors
    // (the variance's from the sample's fourth central moment).
    let cases = [
        (500_000, 500, 5_000),
        (20_000_000, 6_000_000, 10_000),
        (1_000, 999, 998),
        (60, 30, 59),
    ];
    for (population, successes, draws) in cases {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let samples: Vec<f64> = (0..100_000)
            .map(|_| hypergeometric(&mut rng, population, successes, draws) as f64)
            .collect();
        let (n, k, big_n) = (draws as f64, successes as f64, population as f64);
        let mean = n * k / big_n;
        let variance = n * k * (big_n - k) * (big_n - n) / (big_n * big_n * (big_n - 1.0));
        let count = samples.len() as f64;
        let sample_mean = samples.iter().sum::<f64>() / count;
        let sample_variance = samples
            .iter()
            .map(|x| (x - sample_mean).powi(2))
            .sum::<f64>()
            / (count - 1.0);
        let fourth = samples
            .iter()
            .map(|x| (x - sample_mean).powi(4))
            .sum::<f64>()
            / count;
        let mean_tolerance = 5.0 * (variance / count).sqrt();
        let variance_tolerance = 5.0 * ((fourth - sample_variance.powi(2)) / count).sqrt();
        assert!(
            (sample_mean - mean).abs() <= mean_tolerance,
            "({population}, {successes}, {draws}): mean {sample_mean} vs {mean}"
        );
        assert!(
            (sample_variance - variance).abs() <= variance_tolerance,
            "({population}, {successes}, {draws}): variance {sample_variance} vs {variance}"
        );
    }
}

#[test]
fn hypergeometric_draws_match_the_exact_pmf() {
    // HG(30, 12, 10): total variation distance of 200k draws from the exact pmf below 0.01 (the
    // sampling noise is about 0.004).
    let (population, successes, draws) = (30u64, 12u64, 10u64);
    let ln_choose = |n: u64, k: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    let mut counts = [0u32; 11];
    for _ in 0..200_000 {
        counts[hypergeometric(&mut rng, population, successes, draws) as usize] += 1;
    }
    let distance: f64 = (0..=draws)
        .map(|x| {
            let exact = (ln_choose(successes, x) + ln_choose(population - successes, draws - x)
                - ln_choose(population, draws))
            .exp();
            (counts[x as usize] as f64 / 200_000.0 - exact).abs()
        })
        .sum::<f64>()
        / 2.0;
    assert!(distance < 0.01, "total variation {distance}");
}

#[test]
fn checkpoints_are_dense_early() {
    let looks = checkpoints(1_000_000);
    assert_eq!(&looks[..3], &[100, 200, 300]);
    assert!(looks.contains(&10_000) && looks.contains(&20_000));
    assert_eq!(*looks.last().unwrap(), 1_000_000);
    assert_eq!(looks.len(), 199);
    assert_eq!(checkpoints(1_000).len(), 100 + 9);
}

#[test]
fn wilson_matches_the_note() {
    // estimation.md §4: 46 of 83,834 with N = 10M gives Wilson+FPC [4,119, 7,309].
    let (lower, upper) = wilson_fpc(10_000_000, 83_834, 46);
    assert_eq!((lower.round(), upper.round()), (4_119.0, 7_309.0));
}

#[test]
fn width_against_wilson_matches_the_note() {
    // estimation.md §9.7: at t = n/16 in the N = 10M, p = 0.02 scenario the set is 1.45–1.65× the
    // Wilson width.
    let sequence = ConfidenceSequence::new(10_000_000, 1_000_000, ALPHA);
    let (read, matched) = (62_500, 1_250);
    let (lower, upper) = sequence.interval(read, matched);
    let (wilson_lo, wilson_hi) = wilson_fpc(10_000_000, read, matched);
    let ratio = (upper - lower) as f64 / (wilson_hi - wilson_lo);
    assert!((1.45..=1.65).contains(&ratio), "ratio {ratio}");
}

/// The heavy grid of estimation.md §9 on the full estimator: every run drives `RunningEstimate`.
#[test]
#[ignore = "heavy: about 10 minutes in release on 2 cores"]
fn heavy() {
    let stores = [
        ("census 1k", 1_000, 1_000),
        ("census 500k", 500_000, 500_000),
        ("1M of 1.2M", 1_200_000, 1_000_000),
        ("1M of 10M", 10_000_000, 1_000_000),
        ("1M of 20M", 20_000_000, 1_000_000),
        ("10M of 200M", 200_000_000, 10_000_000),
    ];
    let started = Instant::now();
    let mut seed = 1_000;
    for (name, store, sample) in stores {
        let mut counts: Vec<u64> = [0.5, 0.3, 0.02, 0.001, 0.000_55]
            .iter()
            .map(|p| (store as f64 * p).round() as u64)
            .chain([5, 0, store])
            .collect();
        counts.dedup();
        for matching in counts {
            seed += 1;
            let scenario = Scenario {
                name,
                store,
                sample,
                matching,
                runs: RUNS,
                seed,
                draws: Draws::Increments,
                full_runs: RUNS,
            };
            // The naive control must fail wherever the segment is neither empty nor full and
            // expects at least a handful of matches in the sample.
            let expected_matches = matching as f64 * sample as f64 / store as f64;
            check(
                scenario,
                matching != 0 && matching != store && expected_matches >= 50.0,
            );
        }
    }
    let shuffled = Scenario::new("shuffled census 100k", 100_000, 100_000, 0.01, 2_000).shuffled();
    check(
        Scenario {
            full_runs: RUNS,
            ..shuffled
        },
        true,
    );
    println!(
        "heavy grid finished in {:.0}s",
        started.elapsed().as_secs_f64()
    );
}
