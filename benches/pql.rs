//! PQL engine benchmarks: parse + check time of typical expressions, and single-core
//! evaluation throughput (profiles per second) for an attribute comparison, a case-insensitive
//! string test, an event count in a time window over 20 events per profile, and a two-step
//! `chain`.
//!
//! Each evaluation benchmark runs twice: over [`JsonProfile`] (profiles as `serde_json::Value`)
//! and over the sample's columnar tables ([`ProfileTables`]), which bind the query's interned
//! field-path ids to their columns once.
//!
//! Run with `cargo bench --bench pql`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segmentd::pql::{self, JsonProfile, PqlFormat};
use segmentd::sample::columns::{ProfileTables, ProfileTablesBuilder};
use serde_json::{Value, json};

const PROFILES: usize = 1_000;
const EVENTS_PER_PROFILE: usize = 20;
/// 2024-06-15T12:00:00Z
const NOW_MS: i64 = 1_718_452_800_000;
const HOUR_MS: i64 = 3_600_000;

const NAMES: [&str; 4] = ["Johnny Appleseed", "Jane Doe", "JOHN Smith", "Ada Lovelace"];
const EVENT_TYPES: [&str; 3] = [
    "web.webpagedetails.pageViews",
    "commerce.productViews",
    "commerce.checkouts",
];

fn event_type(p: usize, e: usize) -> &'static str {
    EVENT_TYPES[(p * 7 + e * (1 + p % 2)) % EVENT_TYPES.len()]
}

/// Events every 24 to 71 hours depending on the profile, newest last (1 to 7 of them in the
/// last 7 days).
fn event_ts(p: usize, e: usize) -> i64 {
    NOW_MS - (EVENTS_PER_PROFILE - e) as i64 * (24 + (p % 48) as i64) * HOUR_MS
}

fn json_store() -> Vec<(Value, Vec<Value>)> {
    (0..PROFILES)
        .map(|p| {
            let profile = json!({
                "_id": format!("p{p}"),
                "person": {"name": NAMES[p % NAMES.len()], "age": 18 + (p % 60) as i64},
                "homeAddress": {"countryISO": if p % 3 == 0 { "CA" } else { "US" }},
            });
            let events = (0..EVENTS_PER_PROFILE)
                .map(|e| {
                    let ts = chrono::DateTime::from_timestamp_millis(event_ts(p, e)).expect("valid");
                    json!({"_id": format!("e{e}"), "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "eventType": event_type(p, e)})
                })
                .collect();
            (profile, events)
        })
        .collect()
}

/// The same profiles in the sample's columnar tables.
fn columnar(store: &[(Value, Vec<Value>)]) -> ProfileTables {
    let mut builder = ProfileTablesBuilder::default();
    for (profile, events) in store {
        builder.push(profile, events).expect("fits");
    }
    builder.finish()
}

const CASES: [(&str, &str); 4] = [
    ("a_attribute_comparison", "person.age > 40"),
    (
        "b_case_insensitive_string",
        r#"person.name.startsWith("john", false)"#,
    ),
    (
        "c_event_count_in_window",
        "xEvent[timestamp occurs < 7 days before now].count() >= 3",
    ),
    (
        "d_two_step_chain",
        r#"chain(xEvent, timestamp, [A: WHAT(eventType = "commerce.productViews"), B: WHAT(eventType = "commerce.checkouts") WHEN(< 7 days before now)])"#,
    ),
];

fn parse_and_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("pql_parse_check");
    let typical = [
        r#"homeAddress.countryISO = "CA" and person.birthYear >= 1985"#,
        r#"person.name.startsWith("john", false) and person.emailAddress.endsWith(".com")"#,
        r#"xEvent[(timestamp occurs < 7 days before now) and eventType = "commerce.checkouts"].sum(commerce.order.priceTotal) > 100"#,
        r#"workAddress.country.equals("US", false) and CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("directMarketing.emailClicked", false)) WHEN(today), C1: WHAT(eventType.equals("commerce.checkouts", false)) WHEN(today)])"#,
    ];
    for (i, src) in typical.iter().enumerate() {
        g.bench_function(format!("expr{i}_{}_bytes", src.len()), |b| {
            b.iter(|| {
                pql::compile(&pql::parse(black_box(src), PqlFormat::Text).expect("parses"))
                    .expect("compiles")
            })
        });
    }
    g.finish();
}

fn evaluate(c: &mut Criterion) {
    let store = json_store();
    let columns = columnar(&store);
    // Sanity: both stores give the same answers, so the numbers compare like with like.
    for (_, src) in CASES {
        let q = pql::compile(&pql::parse(src, PqlFormat::Text).expect("parses")).expect("compiles");
        let binding = columns.bind(&q);
        let (mut a, mut b) = (0, 0);
        for (p, (profile, events)) in store.iter().enumerate() {
            a += usize::from(q.matches_at(&JsonProfile::new(profile, events), NOW_MS));
            b += usize::from(q.matches_at(&columns.row(&binding, p), NOW_MS));
        }
        assert_eq!(a, b, "{src}");
        assert!(
            a > 0 && a < PROFILES,
            "{src} should select some but not all profiles ({a})"
        );
    }
    let mut g = c.benchmark_group("pql_eval");
    g.throughput(Throughput::Elements(PROFILES as u64));
    for (name, src) in CASES {
        let q = pql::compile(&pql::parse(src, PqlFormat::Text).expect("parses")).expect("compiles");
        g.bench_function(format!("{name}/json"), |b| {
            b.iter(|| {
                store
                    .iter()
                    .filter(|(p, e)| q.matches_at(&JsonProfile::new(p, e), NOW_MS))
                    .count()
            })
        });
        let binding = columns.bind(&q);
        g.bench_function(format!("{name}/columnar"), |b| {
            b.iter(|| {
                (0..PROFILES)
                    .filter(|&row| q.matches_at(&columns.row(&binding, row), NOW_MS))
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse_and_check, evaluate);
criterion_main!(benches);
