//! Measures one checkpoint update of the running estimate: the confidence-sequence bisection plus
//! the point estimate and standard error.
//!
//! Needs `[[bench]] name = "estimate" harness = false` in Cargo.toml; run with
//! `cargo bench --bench estimate`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use segmentd::estimate::RunningEstimate;

/// Benchmarks `observe` at a mid-scan checkpoint for each sample tier.
fn observe(c: &mut Criterion) {
    let cases = [
        ("census 500k, p=0.02", 500_000, 500_000, 0.02),
        ("1M of 20M, p=0.00055", 20_000_000, 1_000_000, 0.000_55),
        ("1M of 20M, p=0.3", 20_000_000, 1_000_000, 0.3),
        ("10M of 200M, p=0.01", 200_000_000, 10_000_000, 0.01),
    ];
    let mut group = c.benchmark_group("observe");
    for (name, store, sample, fraction) in cases {
        let read = sample / 2;
        let matched = (read as f64 * fraction).round() as u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                // A fresh estimator per iteration, so the update is never the cached no-op.
                let mut running = RunningEstimate::new(store, sample).unwrap();
                black_box(
                    running
                        .observe(black_box(read), black_box(matched))
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
