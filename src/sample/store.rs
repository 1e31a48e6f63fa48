//! Building, holding and swapping samples: one per (tenant, merge policy).
//!
//! A sample is built by one pass over the merged profiles ([`ProfileStore::scan`]), keeping the k
//! smallest ranks in a bounded max-heap, so memory is O(k) whatever the store size. It is then sorted
//! by rank and published as an `Arc`: a running preview keeps the sample it started on while a new
//! one replaces it for later previews.
//!
//! Representation: each sampled profile keeps its merged attributes as parsed JSON. Its events are
//! parsed too when the whole sample's parsed events fit the memory budget (`sample.parsed_events_budget_bytes`),
//! since parsed `serde_json` events cost ~10 KB each (a 200k-profile demo sample needed ~20 GB);
//! otherwise they stay JSON text (their ~0.6 KB size) and only previews whose expression reads events
//! ([`pql::reads_events`]) parse them, as they go. This is the simple row representation; the
//! columnar one that `estimation.md` measures one to two orders of magnitude faster (and smaller) is
//! not built yet.
//!
//! When samples are rebuilt is the business of [`crate::sample::service`].

use std::collections::BinaryHeap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde_json::Value;

use crate::pql;
use crate::profile::xid;
use crate::sample::rank::{RankKey, SampleTier, sample_size_for};
use crate::store::profiles::{
    IdentityGraph, MergePolicy, MergedProfile, ProfileStore, ProfileStoreError,
};
use crate::tenant::Tenant;

/// Relative change of the store's profile count that triggers a rebuild.
pub const REFRESH_CHANGE: f64 = 0.03;
/// Age after which a sample is rebuilt at its next use.
pub const MAX_AGE: chrono::Duration = chrono::Duration::days(3);

/// One sampled profile.
#[derive(Debug, Clone)]
pub struct SampledProfile {
    /// The keyed rank (sample order).
    pub rank: u64,
    /// The profile's XID (its primary identity's).
    pub xid: String,
    /// XIDs of all its identities.
    pub identity_xids: Vec<String>,
    /// Distinct namespaces of its identities, for the namespace distribution.
    pub namespaces: Vec<String>,
    /// Merged attributes.
    pub attributes: Value,
    /// Events, oldest first.
    pub events: SampledEvents,
}

/// A sampled profile's events: parsed when the sample fits the memory budget, else JSON text parsed
/// by each preview that reads events.
#[derive(Debug, Clone)]
pub enum SampledEvents {
    /// Parsed once at build time (fast event previews).
    Parsed(Vec<Value>),
    /// Kept as text (a ~16x smaller sample; event previews parse as they go).
    Text(Vec<Box<str>>),
}

/// Parsed `serde_json` events take about this many times their text size (measured on the demo
/// data: ~10 KB per ~0.6 KB event).
const PARSED_EXPANSION: usize = 16;

impl SampledProfile {
    /// Tells whether the profile matches `query` at `now_ms`; events are parsed only when the
    /// expression reads them (`with_events`).
    pub fn matches(&self, query: &pql::CompiledQuery, with_events: bool, now_ms: i64) -> bool {
        match &self.events {
            _ if !with_events => {
                query.matches_at(&pql::JsonProfile::new(&self.attributes, &[]), now_ms)
            }
            SampledEvents::Parsed(events) => {
                query.matches_at(&pql::JsonProfile::new(&self.attributes, events), now_ms)
            }
            SampledEvents::Text(texts) => {
                // Text that does not parse (never the case for validated rows) cannot match anything.
                let events: Vec<Value> = texts
                    .iter()
                    .filter_map(|event| serde_json::from_str(event).ok())
                    .collect();
                query.matches_at(&pql::JsonProfile::new(&self.attributes, &events), now_ms)
            }
        }
    }
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
    /// The sampled profiles (n of them), by increasing rank.
    pub profiles: Vec<SampledProfile>,
}

/// Heap entry ordered by rank only, so the heap's top is the largest kept rank.
struct Ranked(SampledProfile);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        (self.0.rank, &self.0.xid) == (other.0.rank, &other.0.xid)
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    // Ties on rank (a 2^-64 event) are broken by XID, so the sample is a function of the store.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.rank, &self.0.xid).cmp(&(other.0.rank, &other.0.xid))
    }
}

fn sampled(profile: &MergedProfile, key: &RankKey) -> Option<SampledProfile> {
    let primary = profile
        .identities
        .iter()
        .find(|identity| identity.primary)
        .or(profile.identities.first())?;
    let profile_xid = xid::encode(&primary.namespace, &primary.id);
    let mut namespaces: Vec<String> = profile
        .identities
        .iter()
        .map(|identity| identity.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    Some(SampledProfile {
        rank: key.rank(&profile_xid),
        identity_xids: profile
            .identities
            .iter()
            .map(|identity| xid::encode(&identity.namespace, &identity.id))
            .collect(),
        xid: profile_xid,
        namespaces,
        attributes: profile.attributes.clone(),
        events: SampledEvents::Text(
            profile
                .events
                .iter()
                .map(|event| event.json.clone().into_boxed_str())
                .collect(),
        ),
    })
}

/// Builds a sample in one pass over the tenant's merged profiles; its events are parsed when their
/// estimated parsed size fits `parsed_events_budget` bytes, else kept as text.
pub fn build_sample(
    store: &ProfileStore,
    tenant: &Tenant,
    merge_policy_id: &str,
    policy: &MergePolicy,
    key: &RankKey,
    now: DateTime<Utc>,
    parsed_events_budget: usize,
) -> Result<Sample, ProfileStoreError> {
    // The tier needs N before the pass; the pass's own count is authoritative for the sample.
    let expected = store.profile_count(tenant)?;
    let (capacity, _) = sample_size_for(expected);
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
    let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(capacity.min(1 << 20) + 1);
    let mut seen = 0u64;
    store.scan(tenant, policy, |profile| {
        seen += 1;
        let Some(candidate) = sampled(profile, key) else {
            return;
        };
        if heap.len() < capacity {
            heap.push(Ranked(candidate));
        } else if heap
            .peek()
            .is_some_and(|largest| candidate.rank < largest.0.rank)
        {
            heap.pop();
            heap.push(Ranked(candidate));
        }
    })?;
    let (size, tier) = sample_size_for(seen);
    let mut profiles: Vec<SampledProfile> = heap
        .into_sorted_vec()
        .into_iter()
        .map(|ranked| ranked.0)
        .collect();
    profiles.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    let text_bytes: usize = profiles
        .iter()
        .map(|profile| match &profile.events {
            SampledEvents::Text(texts) => texts.iter().map(|text| text.len()).sum(),
            SampledEvents::Parsed(_) => 0,
        })
        .sum();
    if text_bytes.saturating_mul(PARSED_EXPANSION) <= parsed_events_budget {
        for profile in &mut profiles {
            if let SampledEvents::Text(texts) = &profile.events {
                // Text that does not parse (never the case for validated rows) cannot match anything.
                let parsed = texts
                    .iter()
                    .filter_map(|text| serde_json::from_str(text).ok())
                    .collect();
                profile.events = SampledEvents::Parsed(parsed);
            }
        }
    }
    Ok(Sample {
        merge_policy_id: merge_policy_id.to_owned(),
        graph: policy.identity_graph,
        built_at: now,
        store_size: seen,
        tier,
        profiles,
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
    use serde_json::json;

    fn store_with(count: usize) -> (tempfile::TempDir, ProfileStore, Tenant) {
        let dir = tempfile::tempdir().unwrap();
        let store = ProfileStore::open(dir.path()).unwrap();
        let tenant = Tenant::new("o", "prod");
        let rows: Vec<Value> = (0..count)
            .map(|index| json!({"identityMap": {"CRMID": [{"id": format!("c{index}"), "primary": true}]}, "n": index}))
            .collect();
        store
            .apply_batch(
                &tenant,
                "d",
                crate::store::profiles::RecordKind::Profile,
                rows,
            )
            .unwrap();
        (dir, store, tenant)
    }

    #[test]
    fn a_small_store_is_sampled_whole_in_rank_order() {
        let (_dir, store, tenant) = store_with(500);
        let key = RankKey::new(1, 2);
        let sample = build_sample(
            &store,
            &tenant,
            "p",
            &MergePolicy::default(),
            &key,
            Utc::now(),
            usize::MAX,
        )
        .unwrap();
        assert_eq!(sample.store_size, 500);
        assert_eq!(sample.profiles.len(), 500);
        assert_eq!(sample.tier, SampleTier::WholeStore);
        assert!(
            sample
                .profiles
                .windows(2)
                .all(|pair| pair[0].rank <= pair[1].rank)
        );
        // Another key orders the same profiles differently.
        let other = build_sample(
            &store,
            &tenant,
            "p",
            &MergePolicy::default(),
            &RankKey::new(3, 4),
            Utc::now(),
            usize::MAX,
        )
        .unwrap();
        assert_ne!(sample.profiles[0].xid, other.profiles[0].xid);
    }

    #[test]
    fn events_are_parsed_within_the_budget_and_kept_as_text_beyond_it_with_the_same_answers() {
        let (_dir, store, tenant) = store_with(20);
        let events: Vec<Value> = (0..20)
            .flat_map(|index| (0..index % 4).map(move |view| (index, view)))
            .map(|(index, view)| {
                json!({"_id": format!("e{index}-{view}"), "timestamp": "2026-01-01T00:00:00Z", "eventType": "view",
                       "identityMap": {"CRMID": [{"id": format!("c{index}"), "primary": true}]}})
            })
            .collect();
        store
            .apply_batch(
                &tenant,
                "web",
                crate::store::profiles::RecordKind::Event,
                events,
            )
            .unwrap();
        let query = pql::compile(&pql::parse("xEvent.count() >= 2", pql::PqlFormat::Text).unwrap())
            .unwrap();
        let count = |budget: usize| {
            let sample = build_sample(
                &store,
                &tenant,
                "p",
                &MergePolicy::default(),
                &RankKey::new(1, 2),
                Utc::now(),
                budget,
            )
            .unwrap();
            let parsed = matches!(sample.profiles[0].events, SampledEvents::Parsed(_));
            let matched = sample
                .profiles
                .iter()
                .filter(|profile| profile.matches(&query, true, 0))
                .count();
            (parsed, matched)
        };
        assert_eq!(count(usize::MAX), (true, 10));
        assert_eq!(count(0), (false, 10));
    }

    #[test]
    fn staleness_follows_the_three_percent_and_three_day_rules() {
        let now = Utc::now();
        let sample = Sample {
            merge_policy_id: "p".into(),
            graph: IdentityGraph::Pdg,
            built_at: now,
            store_size: 1000,
            tier: SampleTier::WholeStore,
            profiles: vec![],
        };
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
