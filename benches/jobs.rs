//! Segment-job evaluation over the whole store: the ten definitions of `scripts/bench.sh`
//! (attributes, strings, event counts in windows, a chain) in one pass over a generated store of
//! `SEGMENTD_BENCH_PROFILES` profiles (default 50000), on every core, writing memberships.
//!
//! Run: `cargo bench --bench jobs`. Prints profiles per second as criterion's throughput.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segmentd::ingest::batch::Ingestor;
use segmentd::ingest::folder::ingest_folder;
use segmentd::ingest::generate::{DEFAULT_NOW_MS, GenerateConfig, generate};
use segmentd::jobs::segment::{EvaluationInput, evaluate};
use segmentd::segment::definitions::SegmentDefinition;
use segmentd::store::membership::MembershipStore;
use segmentd::store::metadata::MetadataStore;
use segmentd::store::profiles::{MergePolicy, ProfileStore};
use segmentd::tenant::Tenant;
use serde_json::json;

/// The definitions `scripts/bench.py` runs as one job.
const EXPRESSIONS: [&str; 10] = [
    r#"person.gender = "male" and homeAddress.countryCode = "US""#,
    r#"person.name.lastName.startsWith("mi", false)"#,
    "xEvent[timestamp occurs < 30 days before now].count() > 0",
    r#"chain(xEvent, timestamp, [C: WHAT(eventType = "commerce.productListAdds"), D: WHAT(eventType = "commerce.purchases")])"#,
    r#"loyalty.tier = "gold""#,
    "loyalty.points > 1000",
    r#"homeAddress.countryCode in ["US", "CA"]"#,
    r#"person.name.firstName.contains("an")"#,
    "xEvent[commerce.purchases.value > 0].count() >= 2",
    r#"homeAddress.stateProvince = "CA""#,
];

fn profiles() -> u64 {
    std::env::var("SEGMENTD_BENCH_PROFILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn definition(tenant: &Tenant, index: usize, expression: &str) -> SegmentDefinition {
    serde_json::from_value(json!({
        "id": format!("bench-{index}"),
        "name": format!("bench {index}"),
        "expression": {"type": "PQL", "format": "pql/text", "value": expression},
        "schema": {"name": "_xdm.context.profile"},
        "evaluationInfo": {"batch": {"enabled": true}},
        "mergePolicyId": "default",
        "profileInstanceId": "ups",
        "dataGovernancePolicy": {"excludeOptOut": true},
        "imsOrgId": tenant.org_id,
        "sandbox": {"sandboxName": tenant.sandbox, "type": "production", "default": true},
        "creationTime": 0, "updateTime": 0, "updateEpoch": 0, "version": 1,
    }))
    .expect("definition")
}

fn bench_jobs(c: &mut Criterion) {
    let profiles = profiles();
    let tenant = Tenant::new("BENCH@AdobeOrg", "prod");
    let data = tempfile::tempdir().expect("tempdir");
    let config = GenerateConfig {
        profiles,
        seed: 1,
        now_ms: DEFAULT_NOW_MS,
        threads: 2,
    };
    generate(&config, data.path(), &|| {}).expect("generate");
    let state = tempfile::tempdir().expect("tempdir");
    let metadata = MetadataStore::open(state.path()).expect("metadata");
    let store = Arc::new(ProfileStore::open(state.path()).expect("open"));
    let ingestor = Ingestor::new(
        metadata.clone(),
        store.clone(),
        state.path(),
        Arc::new(segmentd::clock::SystemClock),
    );
    ingest_folder(
        &metadata,
        &ingestor,
        &tenant,
        data.path(),
        0,
        &mut |_, _| {},
    )
    .expect("load");
    let memberships = MembershipStore::open(state.path()).expect("memberships");
    let definitions: Vec<_> = EXPRESSIONS
        .iter()
        .enumerate()
        .map(|(index, text)| (definition(&tenant, index, text), MergePolicy::default()))
        .collect();
    let now = Utc
        .timestamp_millis_opt(DEFAULT_NOW_MS)
        .single()
        .expect("now");

    let mut group = c.benchmark_group("segment_job");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(profiles));
    group.bench_function(format!("ten_definitions/{profiles}_profiles"), |b| {
        b.iter(|| {
            let outcome = evaluate(
                EvaluationInput {
                    profiles: &store,
                    memberships: &memberships,
                    definitions: definitions.clone(),
                    now,
                    cancelled: &|| false,
                    progress: &|_| {},
                },
                &tenant,
            )
            .expect("evaluate");
            black_box(outcome.metrics.total_profiles)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_jobs);
criterion_main!(benches);
