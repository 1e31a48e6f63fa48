//! Segment-job evaluation over the whole store: the ten definitions of `scripts/bench.sh`
//! (attributes, strings, event counts in windows, a chain) in one pass over a generated store of
//! `SEGMENTD_BENCH_PROFILES` profiles (default 50000), on every core, writing memberships.
//!
//! Two cases: the columnar snapshot current (a job after a job) and stale (a job right after an
//! ingest, rebuilding every partition).
//!
//! Run: `cargo bench --bench jobs`. Prints profiles per second as criterion's throughput.

mod support;

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use segmentd::ingest::generate::DEFAULT_NOW_MS;
use segmentd::jobs::segment::{EvaluationInput, evaluate};
use segmentd::segment::definitions::SegmentDefinition;
use segmentd::snapshot::ColumnarSnapshots;
use segmentd::store::membership::MembershipStore;
use segmentd::store::profiles::MergePolicy;
use segmentd::tenant::Tenant;
use serde_json::json;
use support::{ISSUE_PREDICATES, generated, load_through_batches, profiles, tenant};

/// With [`ISSUE_PREDICATES`], the ten definitions `scripts/bench.py` runs as one job.
const MORE_DEFINITIONS: [&str; 6] = [
    r#"loyalty.tier = "gold""#,
    "loyalty.points > 1000",
    r#"homeAddress.countryCode in ["US", "CA"]"#,
    r#"person.name.firstName.contains("an")"#,
    "xEvent[commerce.purchases.value > 0].count() >= 2",
    r#"homeAddress.stateProvince = "CA""#,
];

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
    let profiles = profiles(50_000);
    let tenant = tenant();
    let (data, _) = generated(profiles);
    let state = tempfile::tempdir().expect("tempdir");
    let (_metadata, store) = load_through_batches(state.path(), data.path());
    let memberships = MembershipStore::open(state.path()).expect("memberships");
    let definitions: Vec<_> = ISSUE_PREDICATES
        .iter()
        .map(|(_, expression)| expression)
        .chain(&MORE_DEFINITIONS)
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
    let snapshots = ColumnarSnapshots::open(state.path()).expect("snapshots");
    let run = || {
        let outcome = evaluate(
            EvaluationInput {
                profiles: &store,
                snapshots: &snapshots,
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
    };
    // The usual case: the columnar snapshot is current (the store did not change since the last
    // job), so the job reads it.
    group.bench_function(format!("ten_definitions/{profiles}_profiles"), |b| {
        b.iter(run)
    });
    // Right after an ingest touched every partition: the job rebuilds the snapshot as it goes.
    group.bench_function(
        format!("ten_definitions_stale_snapshot/{profiles}_profiles"),
        |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_dir_all(state.path().join(segmentd::snapshot::DIR));
                },
                |()| run(),
                BatchSize::PerIteration,
            )
        },
    );
    group.finish();
}

criterion_group!(benches, bench_jobs);
criterion_main!(benches);
