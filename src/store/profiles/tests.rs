//! Store-level tests: identity merging, merge semantics through the store,
//! batch atomicity, durability across reopen, deletes and tenant isolation.

use super::*;
use crate::clock::ManualClock;
use serde_json::json;
use std::time::Duration;

fn tenant() -> Tenant {
    Tenant::new("ORG@AdobeOrg", "prod")
}

fn record(ids: Value, attributes: Value) -> Value {
    let mut row = attributes;
    row["identityMap"] = ids;
    row
}

fn event(ids: Value, id: &str, timestamp: &str) -> Value {
    json!({"_id": id, "timestamp": timestamp, "eventType": "web.webpagedetails.pageViews", "identityMap": ids})
}

fn open() -> (tempfile::TempDir, ProfileStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    (dir, store)
}

fn all_profiles(store: &ProfileStore, policy: &MergePolicy) -> Vec<MergedProfile> {
    let mut profiles = Vec::new();
    store
        .scan(&tenant(), policy, |p| profiles.push(p.clone()))
        .unwrap();
    profiles
}

#[test]
fn a_record_linking_two_people_merges_them() {
    let (_dir, store) = open();
    let t = tenant();
    store
        .apply_batch(
            &t,
            "crm",
            RecordKind::Profile,
            vec![
                record(
                    json!({"CRMID": [{"id": "c-1", "primary": true}]}),
                    json!({"person": {"gender": "female"}}),
                ),
                record(
                    json!({"CRMID": [{"id": "c-2", "primary": true}]}),
                    json!({"person": {"gender": "male"}}),
                ),
            ],
        )
        .unwrap();
    let web_ecid = "11111111111111111111111111111111111111";
    store
        .apply_batch(
            &t,
            "web",
            RecordKind::Event,
            vec![event(
                json!({"ECID": [{"id": web_ecid}]}),
                "e1",
                "2024-06-01T00:00:00Z",
            )],
        )
        .unwrap();
    assert_eq!(store.profile_count(&t).unwrap(), 3);

    // Email links c-1 and the anonymous ECID.
    let report = store
        .apply_batch(&t, "web_profiles", RecordKind::Profile, vec![record(
            json!({"ECID": [{"id": web_ecid, "primary": true}], "Email": [{"id": "ann@x.com"}], "CRMID": [{"id": "c-1"}]}),
            json!({"homeAddress": {"city": "Cambridge"}}),
        )])
        .unwrap();
    assert_eq!(report.persons_merged, 1);
    assert_eq!(store.profile_count(&t).unwrap(), 2);

    let policy = MergePolicy::default();
    let by_email = store
        .lookup(&t, "email", "ann@x.com", &policy)
        .unwrap()
        .unwrap();
    let by_crm = store.lookup(&t, "CRMID", "c-1", &policy).unwrap().unwrap();
    assert_eq!(by_email, by_crm);
    assert_eq!(by_crm.identities.len(), 3);
    assert_eq!(by_crm.attributes["person"]["gender"], "female");
    assert_eq!(by_crm.attributes["homeAddress"]["city"], "Cambridge");
    assert_eq!(
        by_crm.events.len(),
        1,
        "the anonymous event joins the known profile"
    );
    assert_eq!(all_profiles(&store, &policy).len(), 2);

    // A later event carrying c-1 and c-2 links both persons: one profile left.
    store
        .apply_batch(
            &t,
            "web",
            RecordKind::Event,
            vec![event(
                json!({"ECID": [{"id": web_ecid, "primary": true}], "CRMID": [{"id": "c-2"}]}),
                "e2",
                "2024-06-02T00:00:00Z",
            )],
        )
        .unwrap();
    assert_eq!(store.profile_count(&t).unwrap(), 1);
    let merged = store.lookup(&t, "crmid", "c-2", &policy).unwrap().unwrap();
    assert_eq!(merged.identities.len(), 4);
    assert_eq!(
        merged
            .events
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["e1", "e2"]
    );
    let profiles = all_profiles(&store, &policy);
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0], merged);
}

/// Within one batch, rows that make new persons, join them, link two of them and repeat a key
/// ([`BatchWriter::link_looked_up`], whose changes the index sees only at commit): every identity
/// ends with the person it belongs to, and a person id is never given twice.
#[test]
fn identities_of_one_batch_end_with_the_person_they_join() {
    let (_dir, store) = open();
    let t = tenant();
    let crm = |ids: Value, city: &str| record(ids, json!({"homeAddress": {"city": city}}));
    store
        .apply_batch(
            &t,
            "crm",
            RecordKind::Profile,
            vec![
                // A new person.
                crm(json!({"CRMID": [{"id": "c-1", "primary": true}], "Email": [{"id": "a@x.com"}]}), "one"),
                // New.
                crm(json!({"CRMID": [{"id": "c-2", "primary": true}]}), "two"),
                // The e-mail belongs to c-1's person, which this row joins.
                crm(json!({"CRMID": [{"id": "c-3", "primary": true}], "Email": [{"id": "a@x.com"}]}), "three"),
                // New.
                crm(json!({"CRMID": [{"id": "c-4", "primary": true}]}), "four"),
                // Links c-1's and c-2's persons.
                crm(json!({"CRMID": [{"id": "c-2", "primary": true}], "Email": [{"id": "a@x.com"}]}), "five"),
                // New.
                crm(json!({"CRMID": [{"id": "c-5", "primary": true}]}), "six"),
                // The same key twice and one of c-4's.
                crm(json!({"CRMID": [{"id": "c-4", "primary": true}], "Phone": [{"id": "1"}, {"id": "1"}]}), "seven"),
            ],
        )
        .unwrap();
    assert_eq!(store.profile_count(&t).unwrap(), 3);
    let policy = MergePolicy::default();
    let person_of = |namespace: &str, id: &str| {
        store
            .lookup(&t, namespace, id, &policy)
            .unwrap()
            .unwrap_or_else(|| panic!("{namespace} {id} is known"))
    };
    let joined = person_of("CRMID", "c-1");
    for (namespace, id) in [("CRMID", "c-2"), ("CRMID", "c-3"), ("Email", "a@x.com")] {
        assert_eq!(person_of(namespace, id), joined, "{namespace} {id}");
    }
    let mut identities: Vec<&str> = joined.identities.iter().map(|i| i.id.as_str()).collect();
    identities.sort_unstable();
    assert_eq!(identities, ["a@x.com", "c-1", "c-2", "c-3"]);
    let fourth = person_of("CRMID", "c-4");
    assert_eq!(person_of("Phone", "1"), fourth);
    assert_eq!(fourth.attributes["homeAddress"]["city"], "seven");
    assert_ne!(fourth.person_id, joined.person_id);
    let fifth = person_of("CRMID", "c-5");
    assert_eq!(fifth.attributes["homeAddress"]["city"], "six");
    assert!(![joined.person_id, fourth.person_id].contains(&fifth.person_id));
    assert_eq!(all_profiles(&store, &policy).len(), 3);
}

#[test]
fn merging_inside_one_batch_moves_stored_event_chunks() {
    let (_dir, store) = open();
    let t = tenant();
    for n in 0..3 {
        let rows = (0..2).map(|i| {
            event(
                json!({"CRMID": [{"id": format!("c-{i}")}]}),
                &format!("e{n}-{i}"),
                "2024-01-01T00:00:00Z",
            )
        });
        store
            .apply_batch(&t, "ev", RecordKind::Event, rows.collect::<Vec<_>>())
            .unwrap();
    }
    store
        .apply_batch(
            &t,
            "crm",
            RecordKind::Profile,
            vec![
                record(
                    json!({"CRMID": [{"id": "c-0"}, {"id": "c-1"}]}),
                    json!({"a": 1}),
                ),
                record(json!({"CRMID": [{"id": "c-1"}]}), json!({"b": 2})),
            ],
        )
        .unwrap();
    assert_eq!(store.profile_count(&t).unwrap(), 1);
    let profile = store
        .lookup(&t, "crmid", "c-1", &MergePolicy::default())
        .unwrap()
        .unwrap();
    assert_eq!(profile.events.len(), 6);
    assert_eq!(profile.attributes["a"], 1);
    assert_eq!(profile.attributes["b"], 2);
}

#[test]
fn newer_fragment_wins_field_by_field_and_last_updated_date_overrides_ingest_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new("2024-06-12T00:00:00Z".parse().unwrap()));
    let store = ProfileStore::open(dir.path())
        .unwrap()
        .with_clock(clock.clone());
    let t = tenant();
    let ids = json!({"CRMID": [{"id": "c-1"}]});
    store
        .apply_one(&t, "crm", RecordKind::Profile, record(ids.clone(), json!({
            "person": {"name": {"firstName": "Ann"}}, "homeAddress": {"city": "Boston"}, "loyalty": {"tier": "silver"},
            "extSourceSystemAudit": {"lastUpdatedDate": "2024-06-11T00:00:00Z"}
        })))
        .unwrap();
    store
        .apply_one(&t, "loyalty", RecordKind::Profile, record(ids.clone(), json!({
            "loyalty": {"tier": "gold", "points": 1200}, "extSourceSystemAudit": {"lastUpdatedDate": "2024-06-10T00:00:00Z"}
        })))
        .unwrap();
    // Ingested at 06-12 by the clock: newer than both custom timestamps.
    store
        .apply_one(
            &t,
            "web",
            RecordKind::Profile,
            record(ids.clone(), json!({"homeAddress": {"city": "Cambridge"}})),
        )
        .unwrap();
    let profile = store
        .lookup(&t, "CRMID", "c-1", &MergePolicy::default())
        .unwrap()
        .unwrap();
    let attributes = &profile.attributes;
    assert_eq!(attributes["person"]["name"]["firstName"], "Ann");
    assert_eq!(
        attributes["homeAddress"]["city"], "Cambridge",
        "ingested now, newest"
    );
    assert_eq!(
        attributes["loyalty"]["tier"], "silver",
        "custom timestamp 06-11 beats 06-10"
    );
    assert_eq!(attributes["loyalty"]["points"], 1200);

    // A new record in the same dataset for the same identity replaces its fragment.
    clock.advance(chrono::Duration::days(1));
    store
        .apply_one(
            &t,
            "web",
            RecordKind::Profile,
            record(ids, json!({"preferredLanguage": "en"})),
        )
        .unwrap();
    let profile = store
        .lookup(&t, "CRMID", "c-1", &MergePolicy::default())
        .unwrap()
        .unwrap();
    assert_eq!(profile.attributes["homeAddress"]["city"], "Boston");
    assert_eq!(profile.attributes["preferredLanguage"], "en");
}

#[test]
fn an_invalid_row_mid_batch_stores_nothing() {
    let (_dir, store) = open();
    let t = tenant();
    let rows = vec![
        record(json!({"CRMID": [{"id": "c-1"}]}), json!({"a": 1})),
        json!({"a": 2}),
        record(json!({"CRMID": [{"id": "c-3"}]}), json!({"a": 3})),
    ];
    let error = store
        .apply_batch(&t, "crm", RecordKind::Profile, rows)
        .unwrap_err();
    assert!(
        matches!(error, ProfileStoreError::InvalidRow { row: 2, .. }),
        "{error}"
    );
    let events = vec![
        event(
            json!({"CRMID": [{"id": "c-1"}]}),
            "e1",
            "2024-01-01T00:00:00Z",
        ),
        json!({"identityMap": {"CRMID": [{"id": "c-1"}]}}),
    ];
    assert!(matches!(
        store.apply_batch(&t, "ev", RecordKind::Event, events),
        Err(ProfileStoreError::InvalidRow { row: 2, .. })
    ));
    assert_eq!(store.profile_count(&t).unwrap(), 0);
    assert!(
        store
            .lookup(&t, "crmid", "c-1", &MergePolicy::default())
            .unwrap()
            .is_none()
    );
    assert!(store.dataset_row_counts(&t).unwrap().is_empty());
    assert!(all_profiles(&store, &MergePolicy::default()).is_empty());
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    {
        let store = ProfileStore::open(dir.path()).unwrap();
        store
            .apply_one(
                &t,
                "crm",
                RecordKind::Profile,
                record(json!({"CRMID": [{"id": "c-1"}]}), json!({"a": 1})),
            )
            .unwrap();
        store
            .apply_one(
                &t,
                "ev",
                RecordKind::Event,
                event(
                    json!({"CRMID": [{"id": "c-1"}]}),
                    "e1",
                    "2024-01-01T00:00:00Z",
                ),
            )
            .unwrap();
    }
    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(store.profile_count(&t).unwrap(), 1);
    assert_eq!(
        store.dataset_row_counts(&t).unwrap(),
        BTreeMap::from([("crm".to_owned(), 1), ("ev".to_owned(), 1)])
    );
    let profile = store
        .lookup(&t, "crmid", "c-1", &MergePolicy::default())
        .unwrap()
        .unwrap();
    assert_eq!(profile.attributes["a"], 1);
    assert_eq!(profile.events[0].timestamp_ms, 1_704_067_200_000);
    // Person ids keep counting after a reopen, so a new person does not reuse one.
    store
        .apply_one(
            &t,
            "crm",
            RecordKind::Profile,
            record(json!({"CRMID": [{"id": "c-2"}]}), json!({})),
        )
        .unwrap();
    let second = store
        .lookup(&t, "crmid", "c-2", &MergePolicy::default())
        .unwrap()
        .unwrap();
    assert_ne!(second.person_id, profile.person_id);
}

#[test]
fn streamed_events_compact_and_deduplicate() {
    let (_dir, store) = open();
    let t = tenant();
    let ids = json!({"CRMID": [{"id": "c-1"}]});
    for n in 0..(MAX_CHUNKS * 2) {
        let mut row = event(
            ids.clone(),
            &format!("e{}", n % 20),
            &format!("2024-01-01T00:00:{:02}Z", n % 60),
        );
        row["n"] = json!(n);
        store.apply_one(&t, "ev", RecordKind::Event, row).unwrap();
    }
    let profile = store
        .lookup(&t, "crmid", "c-1", &MergePolicy::default())
        .unwrap()
        .unwrap();
    assert_eq!(profile.total_events, 20);
    let e5 = profile.events.iter().find(|e| e.id == "e5").unwrap();
    assert_eq!(
        e5.to_value().unwrap()["n"],
        25,
        "the later write of the same _id wins"
    );
}

#[test]
fn delete_removes_the_whole_person() {
    let (_dir, store) = open();
    let t = tenant();
    store
        .apply_one(
            &t,
            "crm",
            RecordKind::Profile,
            record(
                json!({"CRMID": [{"id": "c-1"}], "Email": [{"id": "a@x.com"}]}),
                json!({}),
            ),
        )
        .unwrap();
    store
        .apply_one(
            &t,
            "ev",
            RecordKind::Event,
            event(
                json!({"Email": [{"id": "a@x.com"}]}),
                "e1",
                "2024-01-01T00:00:00Z",
            ),
        )
        .unwrap();
    assert!(store.delete_person(&t, "Email", "a@x.com").unwrap());
    assert!(!store.delete_person(&t, "Email", "a@x.com").unwrap());
    assert_eq!(store.profile_count(&t).unwrap(), 0);
    assert!(
        store
            .lookup(&t, "crmid", "c-1", &MergePolicy::default())
            .unwrap()
            .is_none()
    );
    assert!(all_profiles(&store, &MergePolicy::default()).is_empty());
}

#[test]
fn tenants_are_isolated() {
    let (_dir, store) = open();
    let other = Tenant::new("ORG@AdobeOrg", "dev");
    store
        .apply_one(
            &tenant(),
            "crm",
            RecordKind::Profile,
            record(json!({"CRMID": [{"id": "c-1"}]}), json!({})),
        )
        .unwrap();
    assert_eq!(store.profile_count(&other).unwrap(), 0);
    assert!(
        store
            .lookup(&other, "crmid", "c-1", &MergePolicy::default())
            .unwrap()
            .is_none()
    );
    let mut seen = 0;
    store
        .scan(&other, &MergePolicy::default(), |_| seen += 1)
        .unwrap();
    assert_eq!(seen, 0);
}

#[test]
fn graphs_over_50_identities_are_excluded() {
    let (_dir, store) = open();
    let t = tenant();
    let rows: Vec<Value> = (0..3)
        .map(|batch| {
            let emails: Vec<Value> = (0..19)
                .map(|i| json!({"id": format!("{batch}-{i}@x.com")}))
                .collect();
            record(
                json!({"CRMID": [{"id": "c-1"}], "Email": emails}),
                json!({}),
            )
        })
        .collect();
    store
        .apply_batch(&t, "crm", RecordKind::Profile, rows)
        .unwrap();
    assert!(matches!(
        store.lookup(&t, "crmid", "c-1", &MergePolicy::default()),
        Err(ProfileStoreError::GraphTooLarge(58))
    ));
    let stats = store.scan(&t, &MergePolicy::default(), |_| {}).unwrap();
    assert_eq!(
        stats,
        ScanStats {
            profiles: 0,
            skipped_large_graphs: 1
        }
    );
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ProfileStore>();
}

/// Partitions cut the person ids into ranges: scanned one after the other they give exactly the
/// sequential scan, holes left by merges included, and their versions follow the writes that
/// touched them.
#[test]
fn partitions_split_the_scan_and_version_the_writes_that_touched_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path())
        .unwrap()
        .with_partition_persons(16);
    let t = tenant();
    // 60 persons, 10 of them merged away by a linking record, so person ids have holes.
    let records = (0..60).map(|n| {
        record(
            json!({"CRMID": [{"id": format!("c-{n}"), "primary": true}]}),
            json!({"loyalty": {"points": n}}),
        )
    });
    let loaded = store
        .apply_batch(&t, "crm", RecordKind::Profile, records)
        .unwrap();
    let sequential = |store: &ProfileStore| -> Vec<u64> {
        all_profiles(store, &MergePolicy::default())
            .iter()
            .map(|profile| profile.person_id)
            .collect()
    };
    let partitioned = |partitions: &Partitions| -> Vec<u64> {
        let mut persons = Vec::new();
        for partition in 0..partitions.len() {
            partitions
                .scan(partition, &MergePolicy::default(), |profile| {
                    assert_eq!(profile.person_id / 16, partition as u64);
                    persons.push(profile.person_id)
                })
                .unwrap();
        }
        persons
    };
    let partitions = store.partitions(&t).unwrap().unwrap();
    // Person ids 1..=60: partitions 0-15, 16-31, 32-47, 48-63.
    assert_eq!(partitions.len(), 4);
    assert!((0..4).all(|p| partitions.version(p) == loaded.batch_seq));
    assert_eq!(partitioned(&partitions), sequential(&store));
    drop(partitions);

    // Links c-0..c-9 (persons 1-10, partition 0) with c-50..c-59 (persons 51-60, partition 3).
    let links = (0..10).map(|n| {
        record(
            json!({"CRMID": [{"id": format!("c-{n}"), "primary": true}, {"id": format!("c-{}", n + 50)}]}),
            json!({}),
        )
    });
    let linked = store
        .apply_batch(&t, "links", RecordKind::Profile, links)
        .unwrap();
    let partitions = store.partitions(&t).unwrap().unwrap();
    let versions: Vec<u64> = (0..4).map(|p| partitions.version(p)).collect();
    assert_eq!(
        versions,
        [
            linked.batch_seq,
            loaded.batch_seq,
            loaded.batch_seq,
            linked.batch_seq
        ]
    );
    assert_eq!(partitioned(&partitions).len(), 50);
    assert_eq!(partitioned(&partitions), sequential(&store));
    assert!(
        store
            .partitions(&Tenant::new("ORG@AdobeOrg", "dev"))
            .unwrap()
            .is_none()
    );
}

/// A batch larger than the flush threshold writes persons out part-way and reads them back for
/// later rows: with a flush after every row the store ends up exactly as with none, merges of
/// persons written in earlier flushes included.
#[test]
fn flushing_part_way_through_a_batch_gives_the_same_store() {
    let rows = |n: usize| {
        let mut rows = Vec::new();
        for person in 0..n {
            rows.push(record(
                json!({"CRMID": [{"id": format!("c-{person}"), "primary": true}]}),
                json!({"loyalty": {"points": person}}),
            ));
        }
        // Second fragments and links to people written in earlier flushes.
        for person in 0..n / 2 {
            rows.push(record(
                json!({"CRMID": [{"id": format!("c-{person}"), "primary": true}],
                       "Email": [{"id": format!("p{}@x.com", person % 7)}]}),
                json!({"person": {"name": {"firstName": format!("F{person}")}}}),
            ));
        }
        rows
    };
    let events = |n: usize| {
        (0..n * 3).map(move |i| {
            event(
                json!({"CRMID": [{"id": format!("c-{}", i % n), "primary": true}]}),
                &format!("e{i}"),
                "2024-01-01T00:00:00Z",
            )
        })
    };
    let load = |store: ProfileStore| {
        let t = tenant();
        store
            .apply_batch(&t, "crm", RecordKind::Profile, rows(40))
            .unwrap();
        store
            .apply_batch(&t, "web", RecordKind::Event, events(40))
            .unwrap();
        let profiles = all_profiles(&store, &MergePolicy::default());
        (store.profile_count(&t).unwrap(), profiles)
    };
    let (_a, whole) = open();
    let dir = tempfile::tempdir().unwrap();
    let flushing = ProfileStore::open(dir.path()).unwrap().with_flush_bytes(1);
    let (count, profiles) = load(whole);
    assert_eq!((count, profiles.len()), (40 - 20 + 7, 27));
    assert_eq!(load(flushing), (count, profiles));
}

/// Derived copies learn which tenants changed: writes in this process, and every tenant of the
/// store at opening (another process may have written).
#[test]
fn changed_tenants_are_given_once_quiet_and_all_of_them_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap();
    assert!(store.take_quiet_tenants(Duration::ZERO).is_empty());
    let row = record(
        json!({"CRMID": [{"id": "c-1", "primary": true}]}),
        json!({}),
    );
    store
        .apply_batch(&tenant(), "crm", RecordKind::Profile, [row])
        .unwrap();
    assert!(
        store
            .take_quiet_tenants(Duration::from_secs(3600))
            .is_empty(),
        "not quiet yet"
    );
    assert_eq!(store.take_quiet_tenants(Duration::ZERO), [tenant()]);
    assert!(
        store.take_quiet_tenants(Duration::ZERO).is_empty(),
        "given once"
    );
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(store.take_quiet_tenants(Duration::ZERO), [tenant()]);
}

#[test]
fn events_appended_without_rewriting_the_header_are_read_merged_compacted_and_deleted() {
    let (_dir, store) = open();
    let t = tenant();
    let policy = MergePolicy::default();
    let add = |kind: RecordKind, dataset: &str, row: Value| {
        store.apply_one(&t, dataset, kind, row).unwrap();
    };
    let add_event = |crm_id: &str, id: String| {
        let ids = json!({"CRMID": [{"id": crm_id}]});
        add(
            RecordKind::Event,
            "ev",
            event(ids, &id, "2024-01-01T00:00:00Z"),
        );
    };
    // A known person, then events in writes of their own: each appends a chunk past the count
    // the header was last written with, and the last ones are compacted.
    add(
        RecordKind::Profile,
        "crm",
        record(json!({"CRMID": [{"id": "c-1"}]}), json!({"a": 1})),
    );
    let appended = MAX_CHUNKS as usize + 3;
    for n in 0..appended {
        add_event("c-1", format!("e{n}"));
    }
    let profile = store.lookup(&t, "crmid", "c-1", &policy).unwrap().unwrap();
    assert_eq!(profile.total_events, appended);
    assert_eq!(profile.attributes["a"], 1);

    // A second person with an event, then a record linking both: the merge moves every chunk.
    add_event("c-2", "f0".to_owned());
    let both = json!({"CRMID": [{"id": "c-1"}, {"id": "c-2"}]});
    add(
        RecordKind::Profile,
        "loyalty",
        record(both, json!({"b": 2})),
    );
    assert_eq!(store.profile_count(&t).unwrap(), 1);
    let merged = store.lookup(&t, "crmid", "c-2", &policy).unwrap().unwrap();
    assert_eq!(merged.total_events, appended + 1);
    assert_eq!(merged.attributes["a"], 1);
    assert_eq!(merged.attributes["b"], 2);
    let scanned = all_profiles(&store, &policy);
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].total_events, appended + 1);

    // More events past the header's count, and a later person: deleting the merged one removes
    // all of its chunks, so none of them is read as the next person's.
    for n in 0..3 {
        add_event("c-1", format!("h{n}"));
    }
    add_event("c-3", "g0".to_owned());
    assert!(store.delete_person(&t, "crmid", "c-1").unwrap());
    let left = all_profiles(&store, &policy);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].total_events, 1);
}

/// The segment files under a store's directory with their lengths.
fn segment_files(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir.join(segments::SEGMENTS_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|entry| {
            let entry = entry.unwrap();
            let length = entry.metadata().unwrap().len();
            (entry.file_name().to_string_lossy().into_owned(), length)
        })
        .collect();
    files.sort();
    files
}

/// Events of persons `c-0..c-{persons}`, `per_person` each, ids starting at `first`.
/// A person's rows that come one after another, with a flush between every two, each reach it:
/// the writer's shortcut for rows naming the last row's identities must not outlive the flush
/// that wrote that person out of memory.
#[test]
fn consecutive_rows_of_a_person_flushed_between_all_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = ProfileStore::open(dir.path()).unwrap().with_flush_bytes(1);
    let ids = json!({"CRMID": [{"id": "c-1", "primary": true}]});
    let rows: Vec<Value> = (0..3)
        .map(|i| event(ids.clone(), &format!("e{i}"), "2024-01-01T00:00:00Z"))
        .collect();
    store
        .apply_batch(&tenant(), "web", RecordKind::Event, rows)
        .unwrap();
    let profiles = all_profiles(&store, &MergePolicy::default());
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0].total_events, 3);
}

fn events_of(persons: usize, per_person: usize, first: usize) -> Vec<Value> {
    (0..persons * per_person)
        .map(|i| {
            event(
                json!({"CRMID": [{"id": format!("c-{}", i % persons), "primary": true}]}),
                &format!("e{}", first + i),
                &format!("2024-01-{:02}T00:00:00Z", 1 + (first + i) % 28),
            )
        })
        .collect()
}

/// Chunks kept in segment files (appended through the page cache or directly) read, merge,
/// compact and delete as chunks kept in the B-tree: the same writes give the same store every
/// way, before and after reopening.
#[test]
fn event_chunks_in_segment_files_give_the_same_store() {
    let t = tenant();
    let policy = MergePolicy::default();
    let load = |dir: &Path, segment_min_bytes: usize, direct_min_bytes: usize| {
        let clock = Arc::new(ManualClock::new("2024-06-12T00:00:00Z".parse().unwrap()));
        let open = || {
            ProfileStore::open(dir)
                .unwrap()
                .with_clock(clock.clone())
                .with_flush_bytes(2_000)
                .with_segment_min_bytes(segment_min_bytes)
                .with_direct_min_bytes(direct_min_bytes)
        };
        let store = open();
        store
            .apply_batch(&t, "web", RecordKind::Event, events_of(30, 3, 0))
            .unwrap();
        // Records linking c-{2k} and c-{2k+1}: their persons merge, moving stored chunks.
        let links = (0..10).map(|k| {
            record(
                json!({"CRMID": [{"id": format!("c-{}", 2 * k), "primary": true},
                                 {"id": format!("c-{}", 2 * k + 1)}]}),
                json!({"loyalty": {"tier": "gold"}}),
            )
        });
        store
            .apply_batch(&t, "crm", RecordKind::Profile, links)
            .unwrap();
        // Enough further writes to c-25 for its chunks to be compacted, one of them a re-sent
        // event that compaction deduplicates.
        for write in 0..MAX_CHUNKS as usize + 2 {
            let mut batch = events_of(30, 1, 1_000 + 100 * write);
            batch[25]["_id"] = json!(format!("again-{}", write % 3));
            store
                .apply_batch(&t, "web", RecordKind::Event, batch)
                .unwrap();
        }
        // Compaction keeps a person's chunks where they were: in a segment or in the B-tree.
        let c25 = store.lookup(&t, "CRMID", "c-25", &policy).unwrap().unwrap();
        let txn = store.db.begin_read().unwrap();
        let tenant_id = lookup_tenant(&txn, &t).unwrap().unwrap();
        let chunks = txn.open_table(CHUNKS).unwrap();
        let compacted = chunks
            .get(chunk_key(tenant_id, c25.person_id, 1).as_slice())
            .unwrap()
            .unwrap();
        let in_segment = codec::segment_location(compacted.value())
            .unwrap()
            .is_some();
        assert_eq!(in_segment, segment_min_bytes == 0);
        drop((compacted, chunks, txn));
        assert!(store.delete_person(&t, "CRMID", "c-29").unwrap());
        let before = all_profiles(&store, &policy);
        drop(store);
        let store = open();
        assert_eq!(all_profiles(&store, &policy), before);
        let merged = store.lookup(&t, "CRMID", "c-3", &policy).unwrap().unwrap();
        (before, merged)
    };
    let inline = tempfile::tempdir().unwrap();
    let in_segments = tempfile::tempdir().unwrap();
    let direct = tempfile::tempdir().unwrap();
    let expected = load(inline.path(), usize::MAX, usize::MAX);
    let (profiles, merged) = load(in_segments.path(), 0, usize::MAX);
    assert_eq!((&profiles, &merged), (&expected.0, &expected.1));
    assert_eq!(load(direct.path(), 0, 0), expected);
    assert_eq!(profiles.len(), 30 - 10 - 1);
    assert_eq!(merged.events.len(), 2 * 3 + 2 * (MAX_CHUNKS as usize + 2));
    let c25 = profiles
        .iter()
        .find(|p| p.identities.iter().any(|i| i.id == "c-25"))
        .unwrap();
    assert_eq!(c25.events.len(), 3 + 3);
    assert!(segment_files(inline.path()).is_empty());
    assert!(!segment_files(in_segments.path()).is_empty());
}

/// A batch that fails after its flushes appended to a segment leaves no bytes behind, and the
/// next batch appends where the last committed one ended.
#[test]
fn an_abandoned_batch_leaves_nothing_in_the_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    let open = || {
        ProfileStore::open(dir.path())
            .unwrap()
            .with_flush_bytes(1)
            .with_segment_min_bytes(0)
    };
    let store = open();
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(5, 2, 0))
        .unwrap();
    let committed = segment_files(dir.path());
    let mut failing = events_of(5, 2, 100);
    failing.push(json!({"identityMap": {"CRMID": [{"id": "c-1"}]}}));
    assert!(matches!(
        store.apply_batch(&t, "web", RecordKind::Event, failing),
        Err(ProfileStoreError::InvalidRow { row: 11, .. })
    ));
    assert_eq!(segment_files(dir.path()), committed);
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(5, 1, 200))
        .unwrap();
    drop(store);
    let store = open();
    let profiles = all_profiles(&store, &MergePolicy::default());
    let ids: BTreeSet<&str> = profiles
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.id.as_str()))
        .collect();
    let expected: BTreeSet<String> = (0..10).chain(200..205).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect());
}

/// A crash between appending to a segment and committing leaves bytes no pointer names: opening
/// the store cuts them off, and later writes and reads carry on.
#[test]
fn segment_bytes_of_a_write_that_never_committed_are_cut_off_at_opening() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    let open = || {
        ProfileStore::open(dir.path())
            .unwrap()
            .with_segment_min_bytes(0)
    };
    let store = open();
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(4, 2, 0))
        .unwrap();
    drop(store);
    let committed = segment_files(dir.path());
    let [(name, length)] = committed.as_slice() else {
        panic!("one segment: {committed:?}");
    };
    let path = dir.path().join(segments::SEGMENTS_DIR).join(name);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &[0xAB; 999]).unwrap();
    std::fs::write(
        path.with_file_name("00000002.seg"),
        b"next segment, never committed",
    )
    .unwrap();

    let store = open();
    assert_eq!(segment_files(dir.path()), vec![(name.clone(), *length)]);
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(4, 1, 100))
        .unwrap();
    let events: usize = all_profiles(&store, &MergePolicy::default())
        .iter()
        .map(|p| p.events.len())
        .sum();
    assert_eq!(events, 8 + 4);
}

/// Opens the store in `dir` with every flush's values in segment files of `segment_bytes` each.
fn open_with_small_segments(dir: &Path, segment_bytes: u64) -> ProfileStore {
    ProfileStore::open(dir)
        .unwrap()
        .with_segment_min_bytes(0)
        .with_segment_bytes(segment_bytes)
}

/// Segments half dead after deletes and compactions are reclaimed: their live chunks move, the
/// files go, and every read (a snapshot from before, the store now, after reopening) is the same.
#[test]
fn dead_segment_space_is_reclaimed_without_changing_what_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    let policy = MergePolicy::default();
    let open = || open_with_small_segments(dir.path(), 2_000);
    let store = open();
    for batch in 0..6 {
        store
            .apply_batch(&t, "web", RecordKind::Event, events_of(12, 2, 100 * batch))
            .unwrap();
    }
    let segment_bytes = |dir: &Path| segment_files(dir).iter().map(|f| f.1).sum::<u64>();
    let before = segment_bytes(dir.path());
    assert_eq!(
        store.reclaim_segments().unwrap(),
        ReclaimReport::default(),
        "nothing is dead yet"
    );
    for person in 0..8 {
        assert!(
            store
                .delete_person(&t, "CRMID", &format!("c-{person}"))
                .unwrap()
        );
    }
    let profiles = all_profiles(&store, &policy);
    let snapshot = store.partitions(&t).unwrap().unwrap();
    // While a batch holds the segment log, a reclaim gives way at once.
    let batch_in_progress = store.segments.begin();
    assert_eq!(store.reclaim_segments().unwrap(), ReclaimReport::default());
    drop(batch_in_progress);
    assert_live_bytes_match_pointers(&store);
    let report = store.reclaim_segments().unwrap();
    assert!(report.segments_removed >= 2, "{report:?}");
    assert!(report.bytes_moved < report.bytes_removed, "{report:?}");
    assert_live_bytes_match_pointers(&store);
    assert!(segment_bytes(dir.path()) < before);
    assert_eq!(all_profiles(&store, &policy), profiles);
    let mut from_snapshot = Vec::new();
    for partition in 0..snapshot.len() {
        snapshot
            .scan(partition, &policy, |p| from_snapshot.push(p))
            .unwrap();
    }
    assert_eq!(from_snapshot, profiles);
    drop((snapshot, store));
    let store = open();
    assert_eq!(all_profiles(&store, &policy), profiles);
    assert_eq!(profiles.len(), 4);
    assert!(profiles.iter().all(|p| p.events.len() == 12));
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(12, 1, 1_000))
        .unwrap();
    assert_eq!(all_profiles(&store, &policy).len(), 12);
}

/// Checks that the live bytes the store counts per segment are exactly the bytes its headers and
/// chunks point at there.
fn assert_live_bytes_match_pointers(store: &ProfileStore) {
    let txn = store.db.begin_read().unwrap();
    let mut pointed: BTreeMap<u32, u64> = BTreeMap::new();
    for table in [HEADERS, CHUNKS] {
        for entry in txn.open_table(table).unwrap().iter().unwrap() {
            let (_, value) = entry.unwrap();
            if let Some(location) = codec::segment_location(value.value()).unwrap() {
                *pointed.entry(location.segment).or_default() += u64::from(location.len);
            }
        }
    }
    let counted: BTreeMap<u32, u64> = segments_live(&txn.open_table(META).unwrap())
        .unwrap()
        .into_iter()
        .filter(|&(_, live)| live > 0)
        .collect();
    assert_eq!(counted, pointed);
}

/// Headers of large writes are kept in segment files: a record that replaces a fragment, a merge
/// and a delete leave the old header as dead bytes (counted exactly), which a reclaim frees
/// without changing what is read.
#[test]
fn replaced_headers_in_segment_files_are_dead_bytes_that_reclaiming_frees() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    let policy = MergePolicy::default();
    let open = || open_with_small_segments(dir.path(), 4_000);
    let store = open();
    let crm = |round: usize| {
        (0..10).map(move |i| {
            record(
                json!({"CRMID": [{"id": format!("c-{i}"), "primary": true}]}),
                json!({"loyalty": {"points": round * 100 + i}}),
            )
        })
    };
    for round in 0..8 {
        store
            .apply_batch(&t, "crm", RecordKind::Profile, crm(round))
            .unwrap();
        assert_live_bytes_match_pointers(&store);
    }
    let txn = store.db.begin_read().unwrap();
    let header = txn
        .open_table(HEADERS)
        .unwrap()
        .get(header_key(1, 1).as_slice())
        .unwrap()
        .unwrap();
    assert!(
        codec::segment_location(header.value()).unwrap().is_some(),
        "the header is kept in a segment file"
    );
    drop((header, txn));
    // A record linking c-0 and c-1, and a delete.
    store
        .apply_one(
            &t,
            "crm",
            RecordKind::Profile,
            record(
                json!({"CRMID": [{"id": "c-0", "primary": true}, {"id": "c-1"}]}),
                json!({}),
            ),
        )
        .unwrap();
    assert!(store.delete_person(&t, "CRMID", "c-9").unwrap());
    assert_live_bytes_match_pointers(&store);
    let profiles = all_profiles(&store, &policy);
    assert_eq!(profiles.len(), 8);
    let report = store.reclaim_segments().unwrap();
    assert!(report.segments_removed >= 1, "{report:?}");
    assert_live_bytes_match_pointers(&store);
    assert_eq!(all_profiles(&store, &policy), profiles);
    drop(store);
    let store = open();
    assert_eq!(all_profiles(&store, &policy), profiles);
    let c5 = store.lookup(&t, "CRMID", "c-5", &policy).unwrap().unwrap();
    assert_eq!(c5.attributes["loyalty"]["points"], 705);
}

/// A data directory of a version that kept the graph in redb's `profile_ids` table opens with
/// the same graph: the table moves into the identity index and is deleted.
#[test]
fn a_store_with_the_legacy_identity_table_keeps_its_graph() {
    let (dir, store) = open();
    let t = tenant();
    store
        .apply_batch(
            &t,
            "crm",
            RecordKind::Profile,
            vec![
                record(
                    json!({"CRMID": [{"id": "c-1", "primary": true}], "Email": [{"id": "a@x.com"}]}),
                    json!({"person": {"gender": "female"}}),
                ),
                record(json!({"CRMID": [{"id": "c-2", "primary": true}]}), json!({})),
            ],
        )
        .unwrap();
    let policy = MergePolicy::default();
    let before = all_profiles(&store, &policy);
    drop(store);

    // Rewrite the directory as the earlier version left it: the graph in `profile_ids`, no
    // index log.
    {
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let tenant_id = lookup_tenant_in(&txn.open_table(TENANTS).unwrap(), &t)
                .unwrap()
                .unwrap();
            let mut legacy = txn.open_table(LEGACY_IDS).unwrap();
            for profile in &before {
                for identity in &profile.identities {
                    let mut key = tenant_id.to_be_bytes().to_vec();
                    key.extend_from_slice(identity.key().as_bytes());
                    legacy.insert(key.as_slice(), profile.person_id).unwrap();
                }
            }
            let mut meta = txn.open_table(META).unwrap();
            meta.remove(meta_key(GLOBAL, TAG_IDENTITY_LOG_END, "").as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    std::fs::remove_file(dir.path().join(IDENTITY_INDEX_FILES[0])).unwrap();

    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(all_profiles(&store, &policy), before);
    let first = store
        .lookup(&t, "Email", "a@x.com", &policy)
        .unwrap()
        .unwrap();
    assert_eq!(first.attributes["person"]["gender"], "female");
    assert!(store.lookup(&t, "CRMID", "c-2", &policy).unwrap().is_some());
    // New rows link into the moved graph.
    store
        .apply_batch(
            &t,
            "web",
            RecordKind::Event,
            vec![event(
                json!({"Email": [{"id": "a@x.com", "primary": true}]}),
                "e1",
                "2024-06-01T00:00:00Z",
            )],
        )
        .unwrap();
    assert_eq!(store.profile_count(&t).unwrap(), 2);
    drop(store);
    let db = Database::create(dir.path().join(DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(matches!(
        txn.open_table(LEGACY_IDS),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
    drop(txn);
    drop(db);
    let store = ProfileStore::open(dir.path()).unwrap();
    let first = store.lookup(&t, "CRMID", "c-1", &policy).unwrap().unwrap();
    assert_eq!(
        first.events.len(),
        1,
        "the event joined the moved identity's person"
    );
}

/// A data directory of a version that kept headers and event chunks in one table
/// (`profile_persons`, the header at sequence number 0) opens with the same profiles: the table
/// is split into `profile_headers` and `profile_chunks` and deleted, and writes go on.
#[test]
fn a_store_with_the_legacy_persons_table_keeps_its_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    // Chunks both in the B-tree (small batches) and in segment files (flushed past the minimum).
    let store = ProfileStore::open(dir.path())
        .unwrap()
        .with_flush_bytes(1)
        .with_segment_min_bytes(0);
    store
        .apply_batch(
            &t,
            "crm",
            RecordKind::Profile,
            (0..30).map(|i| {
                record(
                    json!({"CRMID": [{"id": format!("c-{i}"), "primary": true}]}),
                    json!({"person": {"name": {"firstName": format!("n{i}")}}}),
                )
            }),
        )
        .unwrap();
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(30, 3, 0))
        .unwrap();
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(10, 1, 500))
        .unwrap();
    let policy = MergePolicy::default();
    let before = all_profiles(&store, &policy);
    assert_eq!(before.len(), 30);
    drop(store);

    // Rewrite the directory as the earlier version left it: both tables' entries in one.
    {
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut legacy = txn.open_table(LEGACY_PERSONS).unwrap();
            for entry in txn.open_table(HEADERS).unwrap().iter().unwrap() {
                let (key, value) = entry.unwrap();
                let mut legacy_key = key.value().to_vec();
                legacy_key.extend_from_slice(&0u32.to_be_bytes());
                legacy.insert(legacy_key.as_slice(), value.value()).unwrap();
            }
            for entry in txn.open_table(CHUNKS).unwrap().iter().unwrap() {
                let (key, value) = entry.unwrap();
                legacy.insert(key.value(), value.value()).unwrap();
            }
        }
        txn.delete_table(HEADERS).unwrap();
        txn.delete_table(CHUNKS).unwrap();
        txn.commit().unwrap();
    }

    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(all_profiles(&store, &policy), before);
    let c7 = store.lookup(&t, "CRMID", "c-7", &policy).unwrap().unwrap();
    assert_eq!(c7.attributes["person"]["name"]["firstName"], "n7");
    assert_eq!(c7.events.len(), 4);
    // Writes go on over the moved persons: more events, and a record linking two of them.
    store
        .apply_batch(&t, "web", RecordKind::Event, events_of(30, 1, 900))
        .unwrap();
    store
        .apply_one(
            &t,
            "crm",
            RecordKind::Profile,
            record(
                json!({"CRMID": [{"id": "c-1", "primary": true}, {"id": "c-2"}]}),
                json!({}),
            ),
        )
        .unwrap();
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(store.profile_count(&t).unwrap(), 29);
    let merged = store.lookup(&t, "CRMID", "c-2", &policy).unwrap().unwrap();
    assert_eq!(
        merged.events.len(),
        10,
        "c-1's and c-2's events: 4 + 1 each"
    );
    drop(store);
    let db = Database::create(dir.path().join(DB_FILE)).unwrap();
    assert!(matches!(
        db.begin_read().unwrap().open_table(LEGACY_PERSONS),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
}

/// A batch abandoned part-way links none of its identities, in memory or in the index's log; the
/// next write and a reopened store know only the committed ones.
#[test]
fn an_abandoned_batch_links_no_identity() {
    let (dir, store) = open();
    let t = tenant();
    let crm = |id: &str, email: &str| {
        record(
            json!({"CRMID": [{"id": id, "primary": true}], "Email": [{"id": email}]}),
            json!({}),
        )
    };
    store
        .apply_batch(&t, "crm", RecordKind::Profile, vec![crm("c-1", "a@x.com")])
        .unwrap();
    let rows = vec![
        Ok(PreparedRow::new(RecordKind::Profile, "crm", &crm("c-2", "b@x.com")).unwrap()),
        Err(ProfileStoreError::Aborted(
            "the file became unreadable".into(),
        )),
    ];
    assert!(matches!(
        store.apply_prepared(&t, "crm", rows),
        Err(ProfileStoreError::Aborted(_))
    ));
    let policy = MergePolicy::default();
    let known =
        |store: &ProfileStore, id: &str| store.lookup(&t, "Email", id, &policy).unwrap().is_some();
    assert!(!known(&store, "b@x.com"));
    // b@x.com is new to this batch, not the person the abandoned one would have made.
    let report = store
        .apply_batch(&t, "crm", RecordKind::Profile, vec![crm("c-3", "b@x.com")])
        .unwrap();
    assert_eq!((report.persons_created, report.persons_merged), (1, 0));
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    assert!(known(&store, "a@x.com") && known(&store, "b@x.com"));
    assert!(store.lookup(&t, "CRMID", "c-2", &policy).unwrap().is_none());
    assert_eq!(store.profile_count(&t).unwrap(), 2);
}

/// The identity graph against a model: seeded random batches of records and events naming one to
/// three identities from a small pool (so rows keep linking and merging persons), deletes of
/// whole profiles, and reopenings, checked after every step against union-find components: two
/// known identities share a person exactly when the model joins them, deleted and unseen
/// identities are unknown, and the person count is the number of components.
#[test]
fn identity_graph_matches_a_union_find_model_through_merges_deletes_and_reopens() {
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    const POOL: usize = 24;
    let identity = |n: usize| match n % 3 {
        0 => ("CRMID", format!("c-{n}")),
        1 => ("Email", format!("p{n}@x.com")),
        _ => ("Phone", format!("+1555{n:04}")),
    };
    let t = tenant();
    let policy = MergePolicy::default();
    for seed in 0..40 {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut store = ProfileStore::open(dir.path()).unwrap();
        // The model: each known identity's component label.
        let mut component: Vec<Option<usize>> = vec![None; POOL];
        let mut next_label = 0;
        for step in 0..30 {
            match rng.random_range(0..10) {
                0 => {
                    drop(store);
                    store = ProfileStore::open(dir.path()).unwrap();
                }
                1 => {
                    let victim = rng.random_range(0..POOL);
                    let (namespace, id) = identity(victim);
                    let deleted = store.delete_person(&t, namespace, &id).unwrap();
                    assert_eq!(
                        deleted,
                        component[victim].is_some(),
                        "seed {seed} step {step}"
                    );
                    if let Some(label) = component[victim] {
                        for entry in &mut component {
                            if *entry == Some(label) {
                                *entry = None;
                            }
                        }
                    }
                }
                _ => {
                    // A batch holds one kind of row, as a dataset does.
                    let events = rng.random_bool(0.5);
                    let mut rows = Vec::new();
                    for row in 0..rng.random_range(1..4) {
                        let named: Vec<usize> = (0..rng.random_range(1..4))
                            .map(|_| rng.random_range(0..POOL))
                            .collect();
                        let mut map = serde_json::Map::new();
                        for (position, &n) in named.iter().enumerate() {
                            let (namespace, id) = identity(n);
                            let entries = map
                                .entry(namespace)
                                .or_insert_with(|| json!([]))
                                .as_array_mut()
                                .unwrap();
                            if !entries.iter().any(|e| e["id"] == id.as_str()) {
                                entries.push(json!({"id": id, "primary": position == 0}));
                            }
                        }
                        rows.push(if events {
                            event(
                                Value::Object(map),
                                &format!("e{step}-{row}"),
                                "2024-06-01T00:00:00Z",
                            )
                        } else {
                            record(Value::Object(map), json!({"step": step}))
                        });
                        // The model: the named identities' components become one.
                        let labels: Vec<usize> =
                            named.iter().filter_map(|&n| component[n]).collect();
                        let label = labels.first().copied().unwrap_or_else(|| {
                            next_label += 1;
                            next_label
                        });
                        for entry in &mut component {
                            if entry.is_some_and(|l| labels.contains(&l)) {
                                *entry = Some(label);
                            }
                        }
                        for &n in &named {
                            component[n] = Some(label);
                        }
                    }
                    let kind = if events {
                        RecordKind::Event
                    } else {
                        RecordKind::Profile
                    };
                    store.apply_batch(&t, "rows", kind, rows).unwrap();
                }
            }
            let person_of = |n: usize| {
                let (namespace, id) = identity(n);
                store
                    .lookup(&t, namespace, &id, &policy)
                    .unwrap()
                    .map(|profile| profile.person_id)
            };
            let persons: Vec<Option<u64>> = (0..POOL).map(person_of).collect();
            for a in 0..POOL {
                assert_eq!(
                    persons[a].is_some(),
                    component[a].is_some(),
                    "seed {seed} step {step}: identity {a}"
                );
                for b in 0..a {
                    if component[a].is_some() && component[b].is_some() {
                        assert_eq!(
                            persons[a] == persons[b],
                            component[a] == component[b],
                            "seed {seed} step {step}: identities {a} and {b}"
                        );
                    }
                }
            }
            let mut labels: Vec<usize> = component.iter().flatten().copied().collect();
            labels.sort_unstable();
            labels.dedup();
            assert_eq!(
                store.profile_count(&t).unwrap(),
                labels.len() as u64,
                "seed {seed} step {step}"
            );
        }
    }
}

/// Deleting and re-adding the same person leaves the identity log mostly superseded entries; the
/// store rewrites it into the other file when it opens, and the graph reads the same from there.
#[test]
fn a_mostly_superseded_identity_log_is_rewritten_at_opening() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant();
    let crm = |n: u32| {
        record(
            json!({"CRMID": [{"id": format!("c-{n}"), "primary": true}], "Email": [{"id": format!("p{n}@x.com")}]}),
            json!({"n": n}),
        )
    };
    let store = ProfileStore::open(dir.path()).unwrap();
    for _ in 0..10 {
        store
            .apply_batch(&t, "crm", RecordKind::Profile, vec![crm(1)])
            .unwrap();
        assert!(store.delete_person(&t, "CRMID", "c-1").unwrap());
    }
    store
        .apply_batch(&t, "crm", RecordKind::Profile, vec![crm(2), crm(3)])
        .unwrap();
    drop(store);
    let log_bytes = |file: usize| {
        std::fs::metadata(dir.path().join(IDENTITY_INDEX_FILES[file])).map(|m| m.len())
    };
    // 10 × (2 identities + 2 removals) + 4 entries, 4 of them live.
    assert_eq!(log_bytes(0).unwrap(), 44 * 24);
    let reopened = |min_entries| {
        ProfileStore::open_rewriting_identity_log_past(dir.path(), min_entries).unwrap()
    };
    let store = reopened(41);
    assert_eq!(
        log_bytes(0).unwrap(),
        44 * 24,
        "40 superseded: under the minimum"
    );
    drop(store);
    let store = reopened(40);
    assert!(log_bytes(0).is_err(), "the old log is removed");
    assert_eq!(log_bytes(1).unwrap(), 4 * 24);
    let policy = MergePolicy::default();
    let check = |store: &ProfileStore, profiles: u64| {
        assert!(store.lookup(&t, "CRMID", "c-1", &policy).unwrap().is_none());
        for n in [2, 3] {
            let profile = store
                .lookup(&t, "Email", &format!("p{n}@x.com"), &policy)
                .unwrap()
                .unwrap();
            assert_eq!(profile.attributes["n"], n);
        }
        assert_eq!(store.profile_count(&t).unwrap(), profiles);
    };
    check(&store, 2);
    store
        .apply_batch(&t, "crm", RecordKind::Profile, vec![crm(4)])
        .unwrap();
    drop(store);
    let store = ProfileStore::open(dir.path()).unwrap();
    assert_eq!(
        log_bytes(1).unwrap(),
        6 * 24,
        "writes go on in the new file"
    );
    check(&store, 3);
    assert!(store.lookup(&t, "CRMID", "c-4", &policy).unwrap().is_some());
}
