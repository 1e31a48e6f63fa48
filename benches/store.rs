//! Profile store benchmarks: demo data generation, bulk ingest (store only,
//! and from files with validation), full scan of merged profiles with events
//! (from the store, and from its columnar snapshot), and bytes on disk.
//!
//! Run: `cargo bench --bench store` (set `SEGMENTD_BENCH_PROFILES`, default
//! 20000). Data comes from the demo generator with a fixed seed.

mod support;

use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segmentd::ingest::generate::generate;
use segmentd::ingest::validate::{InputFormat, RawChunk, RawReader, read_file};
use segmentd::snapshot::{ColumnarSnapshots, Partition};
use segmentd::store::profiles::{MergePolicy, ProfileStore, RecordKind};
use serde_json::Value;
use support::{generate_config, generated, load_through_batches, profiles, tenant};

/// Rows per store transaction in the store-only measurement.
const STORE_CHUNK_ROWS: usize = 20_000;

/// Parsed rows of every dataset, so the store-only bench excludes parsing.
fn parsed_datasets(dir: &Path) -> Vec<(String, RecordKind, Vec<Value>)> {
    let manifest = segmentd::ingest::generate::read_manifest(dir).expect("manifest");
    manifest
        .datasets
        .iter()
        .map(|dataset| {
            let rows = dataset
                .files
                .iter()
                .flat_map(|file| {
                    read_file(&dir.join(file), dataset.kind)
                        .expect("readable")
                        .rows
                })
                .collect();
            (dataset.name.clone(), dataset.kind, rows)
        })
        .collect()
}

fn bench_store(c: &mut Criterion) {
    let profiles = profiles(20_000);
    let tenant = tenant();
    let config = generate_config(profiles);
    let (data, manifest) = generated(profiles);
    let datasets = parsed_datasets(data.path());

    let mut generation = c.benchmark_group("generator");
    generation
        .sample_size(10)
        .throughput(Throughput::Elements(profiles));
    generation.bench_function(format!("generate/{profiles}_profiles_2_threads"), |b| {
        b.iter(|| {
            let out = tempfile::tempdir().expect("tempdir");
            black_box(generate(&config, out.path(), &|| {}).expect("generate"))
        })
    });
    generation.finish();

    let mut group = c.benchmark_group("profile_store");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(profiles));

    group.bench_function(
        format!(
            "ingest_parsed_rows/{profiles}_profiles_{}_events",
            manifest.events
        ),
        |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let db = tempfile::tempdir().expect("tempdir");
                    let store = ProfileStore::open(db.path()).expect("open");
                    let batches: Vec<(String, RecordKind, Vec<Vec<Value>>)> = datasets
                        .iter()
                        .map(|(name, kind, rows)| {
                            (
                                name.clone(),
                                *kind,
                                rows.chunks(STORE_CHUNK_ROWS)
                                    .map(<[Value]>::to_vec)
                                    .collect(),
                            )
                        })
                        .collect();
                    let started = Instant::now();
                    for (name, kind, chunks) in batches {
                        for chunk in chunks {
                            store
                                .apply_batch(&tenant, &name, kind, chunk)
                                .expect("apply");
                        }
                    }
                    total += started.elapsed();
                }
                total
            })
        },
    );

    // What each worker of batch ingestion does to a row (parse, validate, pack, encode), on one
    // thread: the part of ingest that scales with the cores. Records: the CRM dataset's.
    for (kind, dataset, noun) in [
        (RecordKind::Event, "web", "event"),
        (RecordKind::Profile, "crm", "record"),
    ] {
        let chunks = row_chunks(data.path(), kind);
        let rows: usize = chunks.iter().map(RawChunk::len).sum();
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(
            format!("prepare_{noun}_rows_1_thread/{rows}_{noun}s"),
            |b| {
                b.iter(|| {
                    chunks
                        .iter()
                        .flat_map(|chunk| chunk.prepare(kind, dataset))
                        .filter(|(_, prepared)| prepared.is_ok())
                        .count()
                })
            },
        );
    }
    group.throughput(Throughput::Elements(profiles));

    group.bench_function(format!("load_files_validated/{profiles}_profiles"), |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let db = tempfile::tempdir().expect("tempdir");
                let started = Instant::now();
                load_through_batches(db.path(), data.path());
                total += started.elapsed();
            }
            total
        })
    });

    let db = tempfile::tempdir().expect("tempdir");
    let (_metadata, store) = load_through_batches(db.path(), data.path());
    // The B-tree file, the identity index's log and the segment files of event chunks (the
    // folder also holds staged input).
    let file_bytes = |name: &str| std::fs::metadata(db.path().join(name)).map_or(0, |m| m.len());
    let bytes = file_bytes(segmentd::store::profiles::DB_FILE)
        + segmentd::store::profiles::IDENTITY_INDEX_FILES
            .iter()
            .map(|name| file_bytes(name))
            .sum::<u64>()
        + walk_bytes(&db.path().join(segmentd::store::profiles::SEGMENTS_DIR));
    println!(
        "profile_store/disk: {bytes} bytes for {profiles} profiles and {} events = {:.0} bytes/profile",
        manifest.events,
        bytes as f64 / profiles as f64
    );

    group.bench_function(
        format!("scan_merged_with_events/{profiles}_profiles"),
        |b| {
            b.iter(|| {
                let mut events = 0usize;
                let stats = store
                    .scan(&tenant, &MergePolicy::default(), |profile| {
                        events += profile.events.len()
                    })
                    .expect("scan");
                black_box((stats, events))
            })
        },
    );
    // The columnar snapshot of the same profiles (what segment jobs read): built once, then
    // every pass reads the current partition files on every core.
    let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let snapshots = ColumnarSnapshots::open(db.path()).expect("snapshots");
    let pass = || {
        let mut events = vec![0usize; threads];
        let mut consumers: Vec<_> = events
            .iter_mut()
            .map(|count| {
                move |partition: &Partition| {
                    *count += partition.tables.events().rows();
                    ControlFlow::Continue(())
                }
            })
            .collect();
        let stats = snapshots
            .for_each_partition(&store, &tenant, &MergePolicy::default(), &mut consumers)
            .expect("pass");
        drop(consumers);
        (stats, events)
    };
    let (built, _) = pass();
    let snapshot_bytes: u64 = walk_bytes(&db.path().join(segmentd::snapshot::DIR));
    println!(
        "columnar_snapshot: {} partitions, {snapshot_bytes} bytes = {:.0} bytes/profile",
        built.partitions_built,
        snapshot_bytes as f64 / profiles as f64
    );
    group.bench_function(
        format!("columnar_snapshot_pass_{threads}_threads/{profiles}_profiles"),
        |b| b.iter(|| black_box(pass())),
    );
    group.finish();
}

/// The generated rows of `kind` in JSON Lines files, read into chunks as batch ingestion reads
/// them.
fn row_chunks(dir: &Path, kind: RecordKind) -> Vec<RawChunk> {
    let manifest = segmentd::ingest::generate::read_manifest(dir).expect("manifest");
    let mut chunks = Vec::new();
    for dataset in manifest.datasets.iter().filter(|d| d.kind == kind) {
        for file in dataset.files.iter().filter(|f| f.ends_with(".jsonl")) {
            let mut reader =
                RawReader::open(&dir.join(file), InputFormat::JsonLines).expect("readable");
            loop {
                let mut chunk = RawChunk::default();
                let more = reader.read_chunk(&mut chunk).expect("readable");
                if !chunk.is_empty() {
                    chunks.push(chunk);
                }
                if !more {
                    break;
                }
            }
        }
    }
    chunks
}

/// Bytes of the files under `dir`.
fn walk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.path().is_dir() {
                    true => walk_bytes(&entry.path()),
                    false => entry.metadata().map_or(0, |metadata| metadata.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
