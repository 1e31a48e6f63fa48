//! Building, holding and swapping samples: one per (tenant, merge policy).
//!
//! A sample is built from the store's columnar snapshot ([`crate::snapshot`]) in two passes: the
//! first reads every partition on every core and keeps the k smallest ranks (rank, XID, place) in
//! bounded max-heaps, so memory is O(k) whatever the store size; the second copies the kept rows'
//! cells out of their partitions into the sample's tables, which are then put in rank order. The sample is
//! published as an `Arc`: a running preview keeps the sample it started on while a new one replaces
//! it for later previews.
//!
//! Representation: columnar ([`crate::sample::columns`]): attributes and events flattened into
//! typed, dictionary-encoded columns that a compiled query binds once, with per-profile keys (rank,
//! XID, namespace set) beside them.
//!
//! When samples are rebuilt is the business of [`crate::sample::service`].

use std::collections::{BinaryHeap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde_json::Value;

use crate::profile::xid;
use crate::sample::columns::{ColumnError, ProfileTables, ProfileTablesBuilder};
use crate::sample::rank::{RankKey, SampleTier, sample_size_for};
use crate::snapshot::{ColumnarSnapshots, Partition, SnapshotError};
use crate::store::profiles::{
    IdentityGraph, MergePolicy, NamespaceSets, ProfileStore, ProfileStoreError,
};
use crate::tenant::Tenant;

/// Relative change of the store's profile count that triggers a rebuild.
pub const REFRESH_CHANGE: f64 = 0.03;
/// Age after which a sample is rebuilt at its next use.
pub const MAX_AGE: chrono::Duration = chrono::Duration::days(3);

/// Why a sample could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SampleBuildError {
    /// Reading the profile store failed.
    #[error(transparent)]
    Store(#[from] ProfileStoreError),
    /// The sample does not fit its columns.
    #[error(transparent)]
    Columns(#[from] ColumnError),
    /// Reading or rebuilding the columnar snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A sample of a tenant's store under one merge policy, sorted by rank.
#[derive(Debug)]
pub struct Sample {
    /// The merge policy id it was built with.
    pub merge_policy_id: String,
    /// The identity graph it was built with (the policy's, or the preview's `graphType`).
    pub graph: IdentityGraph,
    /// When it was built; relative dates in previews are evaluated at this instant, as Adobe does.
    pub built_at: DateTime<Utc>,
    /// Merged profiles in the store when it was built (N).
    pub store_size: u64,
    /// The tier of `api.md` §3.5.
    pub tier: SampleTier,
    /// The sampled profiles' attributes and events (n of them), by increasing rank.
    pub tables: ProfileTables,
    /// Per sampled profile: its rank, its XID (its primary identity's) and its set of identity
    /// namespaces (an index into `namespace_sets`, for the namespace distribution).
    ranks: Vec<u64>,
    xids: Vec<Box<str>>,
    namespace_set_of: Vec<u32>,
    namespace_sets: Vec<Vec<String>>,
}

impl Sample {
    /// Number of sampled profiles (n).
    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    /// Whether the sample is empty.
    pub fn is_empty(&self) -> bool {
        self.ranks.is_empty()
    }

    /// The rank of sampled profile `index`.
    pub fn rank(&self, index: usize) -> u64 {
        self.ranks[index]
    }

    /// The XID of sampled profile `index` (its primary identity's).
    pub fn xid(&self, index: usize) -> &str {
        &self.xids[index]
    }

    /// The distinct identity namespaces of sampled profile `index`, sorted.
    pub fn namespaces(&self, index: usize) -> &[String] {
        &self.namespace_sets[self.namespace_set_of[index] as usize]
    }

    /// XIDs of the identities of sampled profile `index`, read from its `identityMap`.
    pub fn identity_xids(&self, index: usize) -> Vec<String> {
        let attributes = self.tables.attributes().materialize(index);
        let Some(Value::Object(namespaces)) = attributes.get("identityMap") else {
            return Vec::new();
        };
        namespaces
            .iter()
            .filter_map(|(namespace, ids)| Some((namespace, ids.as_array()?)))
            .flat_map(|(namespace, ids)| {
                ids.iter()
                    .filter_map(|entry| entry.get("id")?.as_str())
                    .map(|id| xid::encode(namespace, id))
            })
            .collect()
    }

    /// Approximate heap bytes of the sample (columns and per-profile keys).
    pub fn heap_bytes(&self) -> usize {
        self.tables.heap_bytes()
            + self.ranks.capacity() * 8
            + self.namespace_set_of.capacity() * 4
            + self
                .xids
                .iter()
                .map(|xid| xid.len() + std::mem::size_of::<Box<str>>())
                .sum::<usize>()
    }
}

/// A profile admitted to a bottom-k heap: its rank, XID (to break rank ties, so the sample is a
/// function of the store) and where the first pass saw it. The heap's top is the largest rank.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u64,
    xid: Box<str>,
    partition: u32,
    row: u32,
}

/// Whether a profile of `rank` and `xid` enters a bottom-`capacity` heap: asked before a
/// candidate is built, so the XID is copied only for the few profiles that enter.
fn admits(heap: &BinaryHeap<Candidate>, capacity: usize, rank: u64, xid: &str) -> bool {
    heap.len() < capacity
        || heap
            .peek()
            .is_some_and(|largest| (rank, xid) < (largest.rank, &*largest.xid))
}

/// Adds an admitted candidate, dropping the largest when over `capacity`.
fn keep(heap: &mut BinaryHeap<Candidate>, capacity: usize, candidate: Candidate) {
    heap.push(candidate);
    if heap.len() > capacity {
        heap.pop();
    }
}

/// Builds a sample from the tenant's columnar snapshot under `policy` (stale partitions are
/// rebuilt from the store on the way).
///
/// First pass, every core: each thread keeps the bottom-k candidates of the partitions it reads;
/// the threads' heaps are merged into the store's bottom k. Second pass: the kept rows' cells are
/// copied out of their partitions' columns into the sample's tables, which are then selected
/// column by column in rank order. `max_profiles` caps the sample below its tier's size
/// (`None`: the tier decides).
///
/// The passes read the store at two moments \[I\]: a profile changed by a write in between is
/// taken as the second pass finds it (looked up by XID in its partition), and one that left its
/// partition (merged into another person, or deleted) is left out, so such a sample may hold a few
/// profiles fewer than its size. A sample is a statistical view refreshed daily; one consistent
/// read of a store under steady streaming would never finish.
pub fn build_sample(
    store: &ProfileStore,
    snapshots: &ColumnarSnapshots,
    tenant: &Tenant,
    merge_policy_id: &str,
    policy: &MergePolicy,
    key: &RankKey,
    now: DateTime<Utc>,
    max_profiles: Option<usize>,
) -> Result<Sample, SampleBuildError> {
    // The tier needs N before the pass; the pass's own count is authoritative for the sample.
    let (tier_size, _) = sample_size_for(store.profile_count(tenant)?);
    let capacity = usize::try_from(tier_size)
        .unwrap_or(usize::MAX)
        .min(max_profiles.unwrap_or(usize::MAX));
    let workers = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let mut firsts: Vec<(BinaryHeap<Candidate>, u64)> =
        (0..workers).map(|_| (BinaryHeap::new(), 0)).collect();
    let mut consumers: Vec<_> = firsts
        .iter_mut()
        .map(|(heap, seen)| {
            move |partition: &Partition| {
                *seen += partition.profiles_scanned;
                for (row, profile_xid) in partition.xids.iter().enumerate() {
                    let rank = key.rank(profile_xid);
                    if admits(heap, capacity, rank, profile_xid) {
                        let candidate = Candidate {
                            rank,
                            xid: profile_xid.as_str().into(),
                            partition: partition.index as u32,
                            row: row as u32,
                        };
                        keep(heap, capacity, candidate);
                    }
                }
                ControlFlow::Continue(())
            }
        })
        .collect();
    snapshots.for_each_partition(store, tenant, policy, &mut consumers)?;
    drop(consumers);
    let mut heap = BinaryHeap::with_capacity(capacity.min(1 << 20) + 1);
    let mut seen = 0;
    for (thread_heap, thread_seen) in firsts {
        seen += thread_seen;
        for candidate in thread_heap {
            if admits(&heap, capacity, candidate.rank, &candidate.xid) {
                keep(&mut heap, capacity, candidate);
            }
        }
    }
    let (size, tier) = sample_size_for(seen);
    let mut kept = heap.into_sorted_vec();
    kept.truncate(usize::try_from(size).unwrap_or(usize::MAX).min(capacity));

    // Second pass: the kept rows, partition by partition.
    let mut wanted: HashMap<u32, Vec<usize>> = HashMap::new();
    for (index, candidate) in kept.iter().enumerate() {
        wanted.entry(candidate.partition).or_default().push(index);
    }
    let mut staging = ProfileTablesBuilder::default();
    let mut namespace_sets = NamespaceSets::default();
    // Per kept candidate: its staging row and namespace set, once found.
    let mut found: Vec<Option<(usize, u32)>> = vec![None; kept.len()];
    let mut failure = None;
    let mut copy = [|partition: &Partition| {
        let Some(indexes) = wanted.get(&(partition.index as u32)) else {
            return ControlFlow::Continue(());
        };
        // (row in the partition, kept candidate), in row order for the column copy.
        let mut rows: Vec<(usize, usize)> = indexes
            .iter()
            .filter_map(|&index| {
                let candidate = &kept[index];
                let row = match partition.xids.get(candidate.row as usize) {
                    Some(at_row) if **at_row == *candidate.xid => Some(candidate.row as usize),
                    _ => partition
                        .xids
                        .iter()
                        .position(|other| **other == *candidate.xid),
                };
                row.map(|row| (row, index))
            })
            .collect();
        rows.sort_unstable();
        let base = staging.len();
        let partition_rows: Vec<usize> = rows.iter().map(|(row, _)| *row).collect();
        if let Err(error) = staging.push_rows_of(&partition.tables, &partition_rows) {
            failure = Some(error);
            return ControlFlow::Break(());
        }
        for (offset, (row, index)) in rows.into_iter().enumerate() {
            found[index] = Some((
                base + offset,
                namespace_sets.intern(partition.namespaces(row)),
            ));
        }
        ControlFlow::Continue(())
    }];
    snapshots.for_each_partition(store, tenant, policy, &mut copy)?;
    if let Some(error) = failure {
        return Err(error.into());
    }
    let (mut rows, mut ranks, mut xids, mut namespace_set_of) = (
        Vec::with_capacity(kept.len()),
        Vec::with_capacity(kept.len()),
        Vec::with_capacity(kept.len()),
        Vec::with_capacity(kept.len()),
    );
    for (candidate, found) in kept.into_iter().zip(found) {
        if let Some((row, namespace_set)) = found {
            rows.push(row);
            ranks.push(candidate.rank);
            xids.push(candidate.xid);
            namespace_set_of.push(namespace_set);
        }
    }
    let tables = staging.finish().select(&rows);
    Ok(Sample {
        merge_policy_id: merge_policy_id.to_owned(),
        graph: policy.identity_graph,
        built_at: now,
        store_size: seen,
        tier,
        tables,
        ranks,
        xids,
        namespace_set_of,
        namespace_sets: namespace_sets.into_sets(),
    })
}

/// The published samples, keyed by tenant and merge policy id.
#[derive(Default)]
pub struct SampleRegistry {
    samples: DashMap<(Tenant, String, IdentityGraph), Arc<Sample>>,
}

impl SampleRegistry {
    /// Returns the current sample of a tenant, merge policy and identity graph, if any.
    pub fn get(
        &self,
        tenant: &Tenant,
        merge_policy_id: &str,
        graph: IdentityGraph,
    ) -> Option<Arc<Sample>> {
        self.samples
            .get(&(tenant.clone(), merge_policy_id.to_owned(), graph))
            .map(|entry| entry.value().clone())
    }

    /// Publishes a sample, replacing the previous one of its tenant and policy.
    pub fn publish(&self, tenant: &Tenant, sample: Sample) -> Arc<Sample> {
        let sample = Arc::new(sample);
        self.samples.insert(
            (tenant.clone(), sample.merge_policy_id.clone(), sample.graph),
            sample.clone(),
        );
        sample
    }

    /// Returns the tenants that have at least one sample.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self
            .samples
            .iter()
            .map(|entry| entry.key().0.clone())
            .collect();
        tenants.sort();
        tenants.dedup();
        tenants
    }

    /// Returns the published samples of a tenant.
    pub fn of_tenant(&self, tenant: &Tenant) -> Vec<Arc<Sample>> {
        self.samples
            .iter()
            .filter(|entry| &entry.key().0 == tenant)
            .map(|entry| entry.value().clone())
            .collect()
    }
}

/// Tells whether a sample should be rebuilt given the store's current size and the time.
pub fn is_stale(sample: &Sample, current_store_size: u64, now: DateTime<Utc>) -> bool {
    let base = sample.store_size.max(1) as f64;
    let change = (current_store_size as f64 - sample.store_size as f64).abs() / base;
    change > REFRESH_CHANGE || now - sample.built_at > MAX_AGE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pql::{self, ProfileView};
    use crate::store::profiles::RecordKind;
    use serde_json::json;

    /// A store of `count` profiles `c{i}` with attribute `n = i` and `i % 4` events each.
    fn store_with(count: usize) -> (tempfile::TempDir, ProfileStore, Tenant) {
        let dir = tempfile::tempdir().unwrap();
        let store = ProfileStore::open(dir.path()).unwrap();
        let tenant = Tenant::new("o", "prod");
        let identity =
            |index: usize| json!({"CRMID": [{"id": format!("c{index}"), "primary": true}]});
        let rows: Vec<Value> = (0..count)
            .map(|index| json!({"identityMap": identity(index), "n": index}))
            .collect();
        store
            .apply_batch(&tenant, "d", RecordKind::Profile, rows)
            .unwrap();
        let events: Vec<Value> = (0..count)
            .flat_map(|index| (0..index % 4).map(move |view| (index, view)))
            .map(|(index, view)| {
                json!({"_id": format!("e{index}-{view}"), "timestamp": "2026-01-01T00:00:00.000Z",
                       "eventType": "view", "identityMap": identity(index)})
            })
            .collect();
        store
            .apply_batch(&tenant, "web", RecordKind::Event, events)
            .unwrap();
        (dir, store, tenant)
    }

    fn sample_of(store: &ProfileStore, tenant: &Tenant, key: RankKey, capacity: usize) -> Sample {
        let policy = MergePolicy::default();
        let snapshots = tempfile::tempdir().unwrap();
        build_sample(
            store,
            &ColumnarSnapshots::open(snapshots.path()).unwrap(),
            tenant,
            "p",
            &policy,
            &key,
            Utc::now(),
            Some(capacity),
        )
        .unwrap()
    }

    /// Sampled rows are copied out of the snapshot's columns cell by cell: every field and event
    /// of every profile comes through as the store merged it.
    #[test]
    fn sampled_profiles_hold_exactly_the_merged_attributes_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProfileStore::open(dir.path()).unwrap();
        let tenant = Tenant::new("o", "prod");
        let rows: Vec<Value> = (0..60)
            .map(|index| {
                json!({"identityMap": {"CRMID": [{"id": format!("c{index}"), "primary": true}]},
                       "person": {"name": {"firstName": format!("n{index}")}, "birthDate": "1990-01-02"},
                       "loyalty": {"points": index * 10, "ratio": index as f64 / 7.0, "member": index % 2 == 0,
                                   "joined": "2024-03-04T05:06:07.000Z"},
                       "tags": ["a", index], "empty": {}})
            })
            .collect();
        store
            .apply_batch(&tenant, "d", RecordKind::Profile, rows)
            .unwrap();
        let events: Vec<Value> = (0..60)
            .flat_map(|index| (0..index % 3).map(move |n| (index, n)))
            .map(|(index, n)| {
                json!({"_id": format!("e{index}-{n}"), "timestamp": format!("2026-01-0{}T00:00:00.000Z", n + 1),
                       "eventType": "commerce.purchases",
                       "commerce": {"order": {"priceTotal": index as f64 + 0.5}},
                       "productListItems": [{"SKU": format!("s{n}"), "quantity": n}],
                       "identityMap": {"CRMID": [{"id": format!("c{index}")}]}})
            })
            .collect();
        store
            .apply_batch(&tenant, "web", RecordKind::Event, events)
            .unwrap();
        let mut merged = std::collections::HashMap::new();
        store
            .scan(&tenant, &MergePolicy::default(), |profile| {
                let events: Vec<Value> = profile
                    .events
                    .iter()
                    .map(|event| event.to_value().unwrap())
                    .collect();
                merged.insert(profile.xid().unwrap(), (profile.attributes.clone(), events));
            })
            .unwrap();
        let sample = sample_of(&store, &tenant, RankKey::new(1, 2), usize::MAX);
        assert_eq!(sample.len(), 60);
        for index in 0..sample.len() {
            let (attributes, events) = &merged[sample.xid(index)];
            assert_eq!(&sample.tables.attributes().materialize(index), attributes);
            assert_eq!(&sample.tables.materialize_events(index), events);
        }
    }

    #[test]
    fn a_small_store_is_sampled_whole_in_rank_order() {
        let (dir, store, tenant) = store_with(500);
        let sample = build_sample(
            &store,
            &ColumnarSnapshots::open(dir.path()).unwrap(),
            &tenant,
            "p",
            &MergePolicy::default(),
            &RankKey::new(1, 2),
            Utc::now(),
            None,
        )
        .unwrap();
        assert_eq!(sample.store_size, 500);
        assert_eq!(sample.len(), 500);
        assert_eq!(sample.tier, SampleTier::WholeStore);
        assert!((1..sample.len()).all(|index| sample.rank(index - 1) <= sample.rank(index)));
        // Another key orders the same profiles differently.
        let other = sample_of(&store, &tenant, RankKey::new(3, 4), usize::MAX);
        assert_ne!(sample.xid(0), other.xid(0));
    }

    #[test]
    fn a_bottom_k_sample_keeps_the_smallest_ranks_with_their_own_attributes_and_events() {
        let (_dir, store, tenant) = store_with(500);
        let key = RankKey::new(5, 6);
        let sample = sample_of(&store, &tenant, key, 50);
        let mut ranks: Vec<(u64, String)> = (0..500)
            .map(|index| {
                let profile_xid = xid::encode("CRMID", &format!("c{index}"));
                (key.rank(&profile_xid), profile_xid)
            })
            .collect();
        ranks.sort();
        assert_eq!(sample.len(), 50);
        let query = pql::compile(&pql::parse("n >= 0", pql::PqlFormat::Text).unwrap()).unwrap();
        let bound = sample.tables.bind(&query);
        for (index, (rank, profile_xid)) in ranks.iter().take(50).enumerate() {
            assert_eq!(
                (sample.rank(index), sample.xid(index)),
                (*rank, profile_xid.as_str())
            );
            let n = sample.tables.attributes().materialize(index)["n"]
                .as_u64()
                .unwrap() as usize;
            assert_eq!(xid::encode("CRMID", &format!("c{n}")), *profile_xid);
            assert_eq!(sample.tables.row(&bound, index).event_count(), n % 4);
            assert_eq!(sample.namespaces(index), ["crmid"]);
            assert_eq!(sample.identity_xids(index), [profile_xid.clone()]);
        }
    }

    #[test]
    fn event_predicates_count_each_profiles_own_events() {
        let (_dir, store, tenant) = store_with(40);
        let sample = sample_of(&store, &tenant, RankKey::new(1, 2), usize::MAX);
        let query = pql::compile(
            &pql::parse(
                r#"xEvent[eventType = "view"].count() >= 2"#,
                pql::PqlFormat::Text,
            )
            .unwrap(),
        )
        .unwrap();
        let bound = sample.tables.bind(&query);
        let matched = (0..sample.len())
            .filter(|index| query.matches_at(&sample.tables.row(&bound, *index), 0))
            .count();
        // Profiles with i % 4 in {2, 3}.
        assert_eq!(matched, 20);
    }

    #[test]
    fn staleness_follows_the_three_percent_and_three_day_rules() {
        let (_dir, store, tenant) = store_with(0);
        let now = Utc::now();
        let mut sample = sample_of(&store, &tenant, RankKey::new(1, 2), usize::MAX);
        sample.built_at = now;
        sample.store_size = 1000;
        assert!(!is_stale(&sample, 1030, now));
        assert!(is_stale(&sample, 1031, now));
        assert!(is_stale(&sample, 969, now));
        assert!(!is_stale(&sample, 1000, now + chrono::Duration::days(3)));
        assert!(is_stale(
            &sample,
            1000,
            now + chrono::Duration::days(3) + chrono::Duration::seconds(1)
        ));
    }
}
