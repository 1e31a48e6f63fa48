//! Measures an export job's write path: 1M merged profiles projected to 5 fields and written as one
//! zstd Parquet file (target: under 10 s). The "project only" case times the row generation and
//! projection alone, so the writer's share is the difference; file size and row groups are printed
//! once before measuring.
//!
//! Needs `[[bench]] name = "export" harness = false` in Cargo.toml; run with
//! `cargo bench --bench export`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segmentd::export::parquet::{ExportOptions, ExportWriter, WrittenFile};
use segmentd::profile::projection::{parse_fields, project};
use serde_json::{Value, json};

const MEMBERS: u64 = 1_000_000;
const FIELDS: &str = "identityMap,person.name.firstName,person.name.lastName,personalEmail.address,segmentMembership";
const FIRST_NAMES: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John",
];
const LAST_NAMES: [&str; 6] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth",
];

/// Builds a deterministic merged profile with more fields than the export keeps.
fn profile(index: u64) -> Value {
    let mut ups = serde_json::Map::new();
    for segment in 0..1 + index % 3 {
        ups.insert(
            format!("seg-{segment}"),
            json!({"status": if index.is_multiple_of(7) { "exited" } else { "realized" },
                   "lastQualificationTime": format!("2024-06-{:02}T12:00:00Z", 1 + index % 28)}),
        );
    }
    json!({
        "_id": format!("p-{index}"),
        "identityMap": {
            "CRMID": [{"id": format!("crm-{index}"), "primary": true, "authenticatedState": "authenticated"}],
            "ECID": [{"id": format!("{:038}", index * 7919)}]
        },
        "person": {"name": {"firstName": FIRST_NAMES[(index % 8) as usize],
                            "lastName": LAST_NAMES[(index % 6) as usize]},
                   "gender": "not_specified"},
        "personalEmail": {"address": format!("user{index}@example.com")},
        "homeAddress": {"city": "Paris", "countryCode": "FR"},
        "loyalty": {"points": (index % 1000) as f64, "tier": "gold"},
        "segmentMembership": {"ups": ups}
    })
}

/// Projects and writes every member, returning the published files.
fn export(fields: &[String]) -> (tempfile::TempDir, Vec<WrittenFile>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut writer =
        ExportWriter::create(dir.path(), "part", ExportOptions::default()).expect("writer");
    for index in 0..MEMBERS {
        writer
            .write_row(project(&profile(index), fields))
            .expect("row written");
    }
    let files = writer.finish().expect("export finished");
    (dir, files)
}

fn export_members(c: &mut Criterion) {
    let fields = parse_fields(FIELDS);
    let (_dir, files) = export(&fields);
    for file in &files {
        println!(
            "export: {} rows, {} row groups, {:.1} MiB, columns {:?}",
            file.rows,
            file.row_groups,
            file.bytes as f64 / (1024.0 * 1024.0),
            file.schema
                .fields()
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
        );
    }

    let mut group = c.benchmark_group("export");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(MEMBERS));
    group.bench_function("project only, 1M members", |b| {
        b.iter(|| {
            for index in 0..MEMBERS {
                black_box(project(&profile(index), &fields));
            }
        })
    });
    group.bench_function("project and write parquet, 1M members", |b| {
        b.iter(|| black_box(export(&fields)))
    });
    group.finish();
}

criterion_group!(benches, export_members);
criterion_main!(benches);
