//! Building, holding and swapping samples: one per (tenant, merge policy).
//!
//! A sample is built by one pass over the merged profiles ([`ProfileStore::scan`]), keeping the k
//! smallest ranks in a bounded max-heap, so memory is O(k) whatever the store size. It is then sorted
//! by rank and published as an `Arc`: a running preview keeps the sample it started on while a new
//! one replaces it for later previews.
//!
//! Representation: columnar ([`crate::sample::columns`]): attributes and events flattened into
//! typed, dictionary-encoded columns that a compiled query binds once, with per-profile keys (rank,
//! XID, namespace set) beside them.
//!
//! When samples are rebuilt is the business of [`crate::sample::service`].

use std::collections::BinaryHeap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde_json::Value;

use crate::profile::xid;
use crate::sample::columns::{ColumnError, ProfileTables, ProfileTablesBuilder};
use crate::sample::rank::{RankKey, SampleTier, sample_size_for};
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

/// A profile admitted to the bottom-k heap: its rank, XID (to break rank ties, so the sample is a
/// function of the store) and its row in the staging tables. The heap's top is the largest rank.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u64,
    xid: Box<str>,
    row: u32,
    namespace_set: u32,
}

/// Builds a sample in one pass over the tenant's merged profiles.
///
/// Profiles enter columnar staging tables as the bottom-k heap admits them (k(1 + ln(N/k)) of
/// them in expectation for a store in random order, all of them under 1M); the kept ones are then
/// selected, column by column, in rank order. `max_profiles` caps the sample below its tier's
/// size (`None`: the tier decides).
pub fn build_sample(
    store: &ProfileStore,
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
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(capacity.min(1 << 20) + 1);
    let mut staging = ProfileTablesBuilder::default();
    let mut namespace_sets = NamespaceSets::default();
    let mut seen = 0u64;
    let mut failure = None;
    store.scan(tenant, policy, |profile| {
        seen += 1;
        let Some(profile_xid) = profile.xid() else {
            return;
        };
        let rank = key.rank(&profile_xid);
        let admitted = heap.len() < capacity
            || heap.peek().is_some_and(|largest| {
                (rank, profile_xid.as_str()) < (largest.rank, &*largest.xid)
            });
        if !admitted || failure.is_some() {
            return;
        }
        let Ok(row) = u32::try_from(staging.len()) else {
            failure = Some(ColumnError::TooLarge("profiles".into()));
            return;
        };
        let events = profile.events.iter().map(|event| event.packed.as_slice());
        if let Err(error) = staging.push_with_packed_events(&profile.attributes, events) {
            failure = Some(error);
            return;
        }
        heap.push(Candidate {
            rank,
            xid: profile_xid.into(),
            row,
            namespace_set: namespace_sets.intern(&profile),
        });
        if heap.len() > capacity {
            heap.pop();
        }
    })?;
    if let Some(error) = failure {
        return Err(error.into());
    }
    let (size, tier) = sample_size_for(seen);
    let mut kept = heap.into_sorted_vec();
    kept.truncate(usize::try_from(size).unwrap_or(usize::MAX).min(capacity));
    let rows: Vec<usize> = kept
        .iter()
        .map(|candidate| candidate.row as usize)
        .collect();
    let tables = staging.finish().select(&rows);
    let (mut ranks, mut xids, mut namespace_set_of) = (
        Vec::with_capacity(kept.len()),
        Vec::with_capacity(kept.len()),
        Vec::with_capacity(kept.len()),
    );
    for candidate in kept {
        ranks.push(candidate.rank);
        xids.push(candidate.xid);
        namespace_set_of.push(candidate.namespace_set);
    }
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
        build_sample(
            store,
            tenant,
            "p",
            &policy,
            &key,
            Utc::now(),
            Some(capacity),
        )
        .unwrap()
    }

    #[test]
    fn a_small_store_is_sampled_whole_in_rank_order() {
        let (_dir, store, tenant) = store_with(500);
        let sample = build_sample(
            &store,
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
