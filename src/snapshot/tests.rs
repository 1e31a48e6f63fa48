//! Tests of the columnar snapshots: a pass gives what a store scan gives, current files are read,
//! exactly the partitions a write touched are rebuilt, damaged files are rebuilt.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::store::profiles::RecordKind;

fn tenant() -> Tenant {
    Tenant::new("ORG@AdobeOrg", "prod")
}

/// A store cutting partitions of 4 person ids (so a few persons make several partitions) holding
/// `people`, and its snapshots.
fn loaded(people: std::ops::Range<u64>) -> (tempfile::TempDir, ProfileStore, ColumnarSnapshots) {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path())
        .unwrap()
        .with_partition_persons(4);
    load_people(&store, people);
    let snapshots = ColumnarSnapshots::open(dir.path()).expect("snapshots");
    (dir, store, snapshots)
}

fn record(n: u64, attributes: Value) -> Value {
    let mut row = attributes;
    row["identityMap"] = json!({"CRMID": [{"id": format!("c-{n}"), "primary": true}]});
    row
}

/// Gives c-5 (person 6, partition 1) a second fragment, from another dataset.
fn make_c5_platinum(store: &ProfileStore) {
    store
        .apply_batch(
            &tenant(),
            "loyalty",
            RecordKind::Profile,
            [record(5, json!({"tier": "platinum"}))],
        )
        .unwrap();
}

fn load_people(store: &ProfileStore, people: std::ops::Range<u64>) {
    let records = people
        .clone()
        .map(|n| record(n, json!({"person": {"age": n}, "tier": "gold"})));
    store
        .apply_batch(&tenant(), "crm", RecordKind::Profile, records)
        .unwrap();
    let events = people.map(|n| {
        json!({
            "_id": format!("e-{n}"),
            "timestamp": "2026-01-02T03:04:05.000Z",
            "eventType": "commerce.purchases",
            "identityMap": {"CRMID": [{"id": format!("c-{n}")}]},
        })
    });
    store
        .apply_batch(&tenant(), "web", RecordKind::Event, events)
        .unwrap();
}

/// Each profile as a pass or a scan sees it: attributes, events and identity namespaces, by XID.
type Profiles = BTreeMap<String, (Value, Vec<Value>, Vec<String>)>;

/// One pass on two threads, collected by XID.
fn pass(snapshots: &ColumnarSnapshots, store: &ProfileStore) -> (PassStats, Profiles) {
    let mut parts = [Profiles::new(), Profiles::new()];
    let mut consumers: Vec<_> = parts
        .iter_mut()
        .map(|profiles| {
            move |partition: &Partition| {
                for row in 0..partition.tables.len() {
                    let seen = (
                        partition.tables.attributes().materialize(row),
                        partition.tables.materialize_events(row),
                        partition.namespaces(row).to_vec(),
                    );
                    assert!(
                        profiles.insert(partition.xids[row].clone(), seen).is_none(),
                        "each profile once"
                    );
                }
                ControlFlow::Continue(())
            }
        })
        .collect();
    let stats = snapshots
        .for_each_partition(store, &tenant(), &MergePolicy::default(), &mut consumers)
        .unwrap();
    drop(consumers);
    let [mut all, other] = parts;
    all.extend(other);
    (stats, all)
}

fn scanned(store: &ProfileStore) -> Profiles {
    let mut profiles = Profiles::new();
    store
        .scan(&tenant(), &MergePolicy::default(), |profile| {
            let events = profile
                .events
                .iter()
                .map(|e| e.to_value().unwrap())
                .collect();
            profiles.insert(
                profile.xid().unwrap(),
                (profile.attributes.clone(), events, profile.namespaces()),
            );
        })
        .unwrap();
    profiles
}

#[test]
fn a_pass_gives_every_merged_profile_of_the_store_once_and_reads_current_files() {
    let (_dir, store, snapshots) = loaded(0..10);
    let (stats, first) = pass(&snapshots, &store);
    assert_eq!(first.len(), 10);
    assert_eq!(first, scanned(&store));
    // Person ids 1..=10 in partitions of 4 ids: 0-3, 4-7, 8-11.
    assert_eq!((stats.partitions_built, stats.partitions_read), (3, 0));
    assert_eq!(stats.profiles_scanned, 10);
    let (stats, second) = pass(&snapshots, &store);
    assert_eq!((stats.partitions_built, stats.partitions_read), (0, 3));
    assert_eq!(stats.profiles_scanned, 10);
    assert_eq!(second, first);
}

#[test]
fn writes_rebuild_exactly_the_partitions_they_touched() {
    let (_dir, store, snapshots) = loaded(0..10);
    pass(&snapshots, &store);

    // Person 6 (c-5) is in partition 1; a second dataset's fragment merges with the first.
    make_c5_platinum(&store);
    let (stats, profiles) = pass(&snapshots, &store);
    assert_eq!((stats.partitions_built, stats.partitions_read), (1, 2));
    assert_eq!(profiles, scanned(&store));
    let platinum: Vec<&Value> = profiles
        .values()
        .map(|(attributes, _, _)| attributes)
        .filter(|attributes| attributes["tier"] == "platinum")
        .collect();
    assert_eq!(platinum.len(), 1);
    assert_eq!(platinum[0]["person"]["age"], 5);

    // A record linking c-0 (partition 0) and c-9 (partition 2) merges them: both change.
    let link = json!({"identityMap": {"CRMID": [
        {"id": "c-0", "primary": true}, {"id": "c-9"}
    ]}});
    store
        .apply_batch(&tenant(), "crm", RecordKind::Profile, [link])
        .unwrap();
    let (stats, profiles) = pass(&snapshots, &store);
    assert_eq!((stats.partitions_built, stats.partitions_read), (2, 1));
    assert_eq!(profiles.len(), 9);
    assert_eq!(profiles, scanned(&store));

    // Deleting c-2 (partition 0) rebuilds partition 0 only.
    assert!(store.delete_person(&tenant(), "CRMID", "c-2").unwrap());
    let (stats, profiles) = pass(&snapshots, &store);
    assert_eq!((stats.partitions_built, stats.partitions_read), (1, 2));
    assert_eq!(profiles.len(), 8);
    assert_eq!(profiles, scanned(&store));
}

#[test]
fn damaged_files_are_rebuilt_with_the_same_profiles() {
    let (dir, store, snapshots) = loaded(0..10);
    let (_, first) = pass(&snapshots, &store);
    let mut files: Vec<PathBuf> = walk(&dir.path().join(DIR));
    files.sort();
    assert_eq!(files.len(), 3);
    // One byte changed, one file cut short (a torn write), one left alone.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&files[0], bytes).unwrap();
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() - 7]).unwrap();
    let (stats, profiles) = pass(&snapshots, &store);
    assert_eq!((stats.partitions_built, stats.partitions_read), (2, 1));
    assert_eq!(profiles, first);
}

#[test]
fn a_consumer_breaking_ends_the_pass() {
    let (_dir, store, snapshots) = loaded(0..30);
    let mut handed = 0;
    let mut consumers = [|_: &Partition| {
        handed += 1;
        ControlFlow::Break(())
    }];
    let stats = snapshots
        .for_each_partition(&store, &tenant(), &MergePolicy::default(), &mut consumers)
        .unwrap();
    assert_eq!(handed, 1);
    assert_eq!(stats.partitions_built, 1);
}

#[test]
fn merge_policies_and_tenants_have_their_own_files() {
    let (_dir, store, snapshots) = loaded(0..3);
    pass(&snapshots, &store);
    let precedence = MergePolicy {
        attribute_merge: crate::store::profiles::AttributeMerge::DataSetPrecedence(vec![
            "web".into(),
        ]),
        ..MergePolicy::default()
    };
    let mut attributes = Vec::new();
    let mut consumers = [|partition: &Partition| {
        for row in 0..partition.tables.len() {
            attributes.push(partition.tables.attributes().materialize(row));
        }
        ControlFlow::Continue(())
    }];
    let stats = snapshots
        .for_each_partition(&store, &tenant(), &precedence, &mut consumers)
        .unwrap();
    assert_eq!(stats.partitions_built, 1, "not the default policy's file");
    // Only the web dataset's fragments count: none are records, so no `tier`.
    assert!(attributes.iter().all(|value| value.get("tier").is_none()));
    let other = Tenant::new("OTHER@AdobeOrg", "prod");
    let mut seen = 0;
    let mut consumers = [|partition: &Partition| {
        seen += partition.tables.len();
        ControlFlow::Continue(())
    }];
    let stats = snapshots
        .for_each_partition(&store, &other, &MergePolicy::default(), &mut consumers)
        .unwrap();
    assert_eq!((seen, stats), (0, PassStats::default()));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

#[test]
fn opening_removes_the_files_of_interrupted_writes_only() {
    let (dir, store, snapshots) = loaded(0..3);
    pass(&snapshots, &store);
    let complete = walk(&dir.path().join(DIR));
    let folder = complete[0].parent().unwrap().to_owned();
    std::fs::write(folder.join(format!("{PARTIAL_PREFIX}abc")), b"half a file").unwrap();
    let snapshots = ColumnarSnapshots::open(dir.path()).expect("snapshots");
    assert_eq!(walk(&dir.path().join(DIR)), complete);
    let (stats, _) = pass(&snapshots, &store);
    assert_eq!(stats.partitions_read, 1);
}

#[test]
fn a_refresh_rebuilds_only_stale_partitions_and_gives_way() {
    let (_dir, store, snapshots) = loaded(0..10);
    let policy = MergePolicy::default();
    let never = || false;
    let stats = snapshots
        .refresh(&store, &tenant(), &policy, 2, &never)
        .unwrap();
    assert_eq!((stats.partitions_built, stats.partitions_read), (3, 0));
    let stats = snapshots
        .refresh(&store, &tenant(), &policy, 2, &never)
        .unwrap();
    assert_eq!((stats.partitions_built, stats.partitions_read), (0, 3));
    // c-5 is in partition 1.
    make_c5_platinum(&store);
    let stats = snapshots
        .refresh(&store, &tenant(), &policy, 1, &never)
        .unwrap();
    assert_eq!((stats.partitions_built, stats.partitions_read), (1, 2));
    let (stats, profiles) = pass(&snapshots, &store);
    assert_eq!((stats.partitions_built, stats.partitions_read), (0, 3));
    assert_eq!(profiles, scanned(&store));

    // Asked to give way, a refresh stops after the partition it is building.
    let (_dir, store, snapshots) = loaded(0..10);
    let always = || true;
    let stats = snapshots
        .refresh(&store, &tenant(), &policy, 1, &always)
        .unwrap();
    assert_eq!(stats.partitions_built, 1);
    let (stats, _) = pass(&snapshots, &store);
    assert_eq!((stats.partitions_built, stats.partitions_read), (2, 1));
}
