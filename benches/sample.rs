//! Whole-sample evaluation on both cores, as a preview runs it: a columnar sample of 1M profiles
//! (`SEGMENTD_BENCH_SAMPLE` to change) with ~10 events each, and the four predicates of the
//! sample issue: an attribute conjunction, a case-insensitive string test, an event count in a
//! 30-day window and a two-step chain. Also prints the sample's build time and bytes per profile.
//!
//! The profiles are synthetic but shaped like the demo generator's (skewed countries, a
//! thousand last names, heavy-tailed event counts over 18 months, six event types), seeded, so
//! every run evaluates the same data. Run with `cargo bench --bench sample`.

mod support;

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use segmentd::pql::{self, PqlFormat};
use segmentd::sample::columns::{ProfileTables, ProfileTablesBuilder};
use serde_json::{Value, json};
use support::ISSUE_PREDICATES;

/// 2024-06-15T12:00:00Z
const NOW_MS: i64 = 1_718_452_800_000;
const DAY_MS: i64 = 86_400_000;

const COUNTRIES: [(&str, u32); 6] = [
    ("US", 50),
    ("CA", 12),
    ("GB", 12),
    ("DE", 10),
    ("MX", 8),
    ("FR", 8),
];
const EVENT_TYPES: [(&str, u32); 6] = [
    ("web.webpagedetails.pageViews", 60),
    ("commerce.productViews", 20),
    ("commerce.productListAdds", 8),
    ("commerce.checkouts", 4),
    ("commerce.purchases", 3),
    ("web.webinteraction.linkClicks", 5),
];

fn pick<'a>(rng: &mut StdRng, weighted: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = weighted.iter().map(|(_, weight)| weight).sum();
    let mut roll = rng.random_range(0..total);
    for (value, weight) in weighted {
        if roll < *weight {
            return value;
        }
        roll -= weight;
    }
    weighted[0].0
}

fn profiles() -> usize {
    std::env::var("SEGMENTD_BENCH_SAMPLE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000)
}

fn sample(count: usize) -> ProfileTables {
    let mut rng = StdRng::seed_from_u64(7);
    let last_names: Vec<String> = (0..1000).map(|index| format!("Name{index:03}")).collect();
    let mut builder = ProfileTablesBuilder::default();
    for person in 0..count {
        let last_name = if rng.random_bool(0.05) {
            "Miller".to_owned()
        } else {
            last_names[rng.random_range(0..last_names.len())].clone()
        };
        let profile = json!({
            "identityMap": {"ECID": [{"id": format!("{person:038}"), "primary": true}]},
            "person": {
                "gender": (if rng.random_bool(0.48) { "male" } else { "female" }),
                "name": {"firstName": "Alex", "lastName": last_name},
                "birthDate": format!("{}-0{}-1{}", 1950 + person % 55, 1 + person % 9, person % 10),
            },
            "homeAddress": {"countryCode": pick(&mut rng, &COUNTRIES)},
            "loyalty": {"tier": (["bronze", "silver", "gold"][person % 3]), "points": rng.random_range(0..5000)},
        });
        // Heavy-tailed: most people have a few events, some many (mean ~10).
        let events = (rng.random::<f64>().powi(3) * 40.0) as usize + 1;
        let mut timestamps: Vec<i64> = (0..events)
            .map(|_| NOW_MS - rng.random_range(0..540 * DAY_MS))
            .collect();
        timestamps.sort_unstable();
        let events: Vec<Value> = timestamps
            .iter()
            .enumerate()
            .map(|(index, timestamp)| {
                let at = chrono::DateTime::from_timestamp_millis(*timestamp).expect("valid");
                json!({
                    "_id": format!("e{person}-{index}"),
                    "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "eventType": pick(&mut rng, &EVENT_TYPES),
                    "web": {"webPageDetails": {"name": "home"}},
                })
            })
            .collect();
        builder.push(&profile, &events).expect("fits");
    }
    builder.finish()
}

fn whole_sample(c: &mut Criterion) {
    let count = profiles();
    let started = Instant::now();
    let tables = sample(count);
    eprintln!(
        "sample: {count} profiles, {} events, built in {:.1} s, {:.0} bytes/profile",
        tables.events().rows(),
        started.elapsed().as_secs_f64(),
        tables.heap_bytes() as f64 / count as f64
    );
    let mut group = c.benchmark_group("sample_whole_both_cores");
    group.sample_size(10);
    group.throughput(Throughput::Elements(count as u64));
    for (name, source) in ISSUE_PREDICATES {
        let query =
            pql::compile(&pql::parse(source, PqlFormat::Text).expect("parses")).expect("compiles");
        let prepared = tables.prepare(&query, NOW_MS);
        let matched = tables.matching_on_every_core(&prepared, 0..count).len();
        eprintln!("{name}: {matched} of {count} match");
        assert!(
            matched > 0 && matched < count,
            "{source} should select some profiles"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(tables.matching_on_every_core(&prepared, 0..count)).len())
        });
    }
    group.finish();
}

criterion_group!(benches, whole_sample);
criterion_main!(benches);
