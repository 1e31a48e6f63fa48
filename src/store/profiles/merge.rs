//! Merge policies and the merge step that turns one person's fragments and
//! events into merged profiles (`ingest-api.md` §9).

use ahash::AHashMap as HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ProfileStoreError;
use super::codec::{EventRef, Fragment, PersonHeader};
use super::identity::Identity;

/// Only the newest this many events of a profile take part in segmentation
/// (`ingest-api.md` §9.7 and §10, newest guardrail).
pub const MAX_SEGMENTATION_EVENTS: usize = 5_000;

/// Profiles whose graph holds more identities than this are excluded from
/// segmentation and lookups (§9.3).
pub const MAX_GRAPH_IDENTITIES: usize = 50;

/// Top-level fields that are per fragment and meaningless after a merge (§9.6).
const PER_FRAGMENT_FIELDS: [&str; 4] = ["_id", "_repo", "createdByBatchID", "modifiedByBatchID"];

/// How conflicting attributes of several record fragments resolve (§9.4–9.5).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AttributeMerge {
    /// The most recently updated fragment wins, leaf by leaf (§9.4).
    #[default]
    TimestampOrdered,
    /// Fragments rank by the position of their dataset in the list; datasets
    /// not listed, records and events alike, are left out (§9.5).
    DataSetPrecedence(Vec<String>),
}

/// Which fragments belong together (§9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum IdentityGraph {
    /// Only fragments keyed by the identical identity merge; each distinct
    /// primary identity is one profile (with `none_merges_same_id = true`).
    None,
    /// The private graph: each connected component of identities is one profile.
    #[default]
    Pdg,
}

/// A merge policy as the merge step needs it: the default is the platform's
/// default policy, timestamp ordered over the private graph (§8.7).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MergePolicy {
    /// How attributes resolve.
    pub attribute_merge: AttributeMerge,
    /// Which fragments are merged together.
    pub identity_graph: IdentityGraph,
}

/// One event of a merged profile.
///
/// The body stays packed ([`super::packed`]): evaluators usually read a few
/// fields of a few events, so building every event of every profile as a
/// `serde_json::Value` during a scan would cost more than the scan itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileEvent {
    /// The event `timestamp` in epoch ms.
    pub timestamp_ms: i64,
    /// The dataset the event was ingested into.
    pub dataset_id: String,
    /// The event `_id`.
    pub id: String,
    /// The event as ingested, packed JSON: read it with [`ProfileEvent::to_value`] or a
    /// [`super::packed::PackedDeserializer`].
    pub packed: Vec<u8>,
}

impl ProfileEvent {
    /// Unpacks the event body.
    pub fn to_value(&self) -> Result<Value, super::packed::PackedError> {
        super::packed::to_value(&self.packed)
    }
}

/// A merged profile: the union view that segmentation and lookups read.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedProfile {
    /// The persistent id of the person (graph component) the profile belongs to.
    /// Under [`IdentityGraph::None`] several profiles may share it.
    pub person_id: u64,
    /// Every identity of the profile, exactly one of them primary.
    pub identities: Vec<Identity>,
    /// The merged attributes, with `identityMap` rebuilt from `identities`.
    pub attributes: Value,
    /// The newest [`MAX_SEGMENTATION_EVENTS`] events, deduplicated by
    /// (dataset, `_id`), sorted by timestamp then `_id`.
    pub events: Vec<ProfileEvent>,
    /// How many distinct events the profile has before the 5,000 cut.
    pub total_events: usize,
}

impl MergedProfile {
    /// The profile's XID: its primary identity's (its first identity's if none is marked
    /// primary), or `None` for a profile without identities.
    pub fn xid(&self) -> Option<String> {
        let primary = self
            .identities
            .iter()
            .find(|identity| identity.primary)
            .or(self.identities.first())?;
        Some(crate::profile::xid::encode(&primary.namespace, &primary.id))
    }

    /// The namespaces of the profile's identities, sorted, without repeats.
    pub fn namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self
            .identities
            .iter()
            .map(|identity| identity.namespace.clone())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        namespaces
    }
}

/// Interns the namespace sets of profiles ([`MergedProfile::namespaces`]): most profiles share
/// one of a handful, so a pass keeps a small index per profile instead of a list.
#[derive(Debug, Default)]
pub struct NamespaceSets {
    sets: Vec<Vec<String>>,
    index: HashMap<Vec<String>, u32>,
}

impl NamespaceSets {
    /// The index of a namespace set (sorted, without repeats), added if new.
    pub fn intern(&mut self, namespaces: &[String]) -> u32 {
        if let Some(code) = self.index.get(namespaces) {
            return *code;
        }
        let code = self.sets.len() as u32;
        self.sets.push(namespaces.to_vec());
        self.index.insert(namespaces.to_vec(), code);
        code
    }

    /// The sets, by index.
    pub fn into_sets(self) -> Vec<Vec<String>> {
        self.sets
    }
}

impl MergePolicy {
    /// Tells whether fragments and events of this dataset take part.
    fn includes(&self, dataset_id: &str) -> bool {
        match &self.attribute_merge {
            AttributeMerge::TimestampOrdered => true,
            AttributeMerge::DataSetPrecedence(order) => {
                order.iter().any(|listed| listed == dataset_id)
            }
        }
    }

    /// Sorts fragments from the highest priority to the lowest.
    fn rank(&self, fragments: &mut [&Fragment]) {
        // Newer first, then the later write, then the dataset id so ties are stable (§9.4 step 2).
        let by_time = |a: &&Fragment, b: &&Fragment| {
            b.effective_ts
                .cmp(&a.effective_ts)
                .then(b.batch_seq.cmp(&a.batch_seq))
                .then(a.dataset_id.cmp(&b.dataset_id))
        };
        match &self.attribute_merge {
            AttributeMerge::TimestampOrdered => fragments.sort_by(by_time),
            AttributeMerge::DataSetPrecedence(order) => {
                let position = |fragment: &Fragment| {
                    order
                        .iter()
                        .position(|listed| *listed == fragment.dataset_id)
                };
                fragments.sort_by(|a, b| position(a).cmp(&position(b)).then_with(|| by_time(a, b)));
            }
        }
    }
}

/// Merges one person's fragments and events under `policy`, calling `emit` for
/// each resulting profile: one under [`IdentityGraph::Pdg`], one per distinct
/// primary identity under [`IdentityGraph::None`].
///
/// A profile left with no fragment and no event after dataset filtering is not
/// emitted, since it has nothing to show.
pub(crate) fn merge_person(
    person_id: u64,
    header: &PersonHeader,
    events: &[EventRef<'_>],
    policy: &MergePolicy,
    emit: &mut dyn FnMut(MergedProfile),
) -> Result<(), ProfileStoreError> {
    let fragments: Vec<&Fragment> = header
        .fragments
        .iter()
        .filter(|f| policy.includes(&f.dataset_id))
        .collect();
    let events: Vec<&EventRef<'_>> = events
        .iter()
        .filter(|e| policy.includes(e.dataset_id))
        .collect();
    match policy.identity_graph {
        IdentityGraph::Pdg => {
            let graph: Vec<Identity> = header
                .identities
                .iter()
                .map(|key| Identity::from_key(key))
                .collect();
            if let Some(profile) = merge_group(person_id, fragments, &events, Some(graph), policy)?
            {
                emit(profile);
            }
        }
        IdentityGraph::None => {
            let mut primaries: Vec<&str> = fragments.iter().map(|f| f.primary.as_str()).collect();
            primaries.extend(events.iter().map(|e| e.primary));
            primaries.sort_unstable();
            primaries.dedup();
            for primary in primaries {
                let group_fragments = fragments
                    .iter()
                    .copied()
                    .filter(|f| f.primary == primary)
                    .collect();
                let group_events: Vec<&EventRef<'_>> = events
                    .iter()
                    .copied()
                    .filter(|e| e.primary == primary)
                    .collect();
                if let Some(profile) =
                    merge_group(person_id, group_fragments, &group_events, None, policy)?
                {
                    emit(profile);
                }
            }
        }
    }
    Ok(())
}

/// Merges one group of fragments and events into a profile.
///
/// `graph` holds the identities of the whole component under `pdg`; under
/// `none` it is `None` and the identities come from the group's own records.
fn merge_group(
    person_id: u64,
    mut fragments: Vec<&Fragment>,
    events: &[&EventRef<'_>],
    graph: Option<Vec<Identity>>,
    policy: &MergePolicy,
) -> Result<Option<MergedProfile>, ProfileStoreError> {
    if fragments.is_empty() && events.is_empty() {
        return Ok(None);
    }
    policy.rank(&mut fragments);
    let mut attributes = Map::new();
    let mut record_identities: Vec<Identity> = Vec::new();
    for fragment in &fragments {
        let Value::Object(mut body) = serde_json::from_str::<Value>(&fragment.body)? else {
            return Err(ProfileStoreError::Corrupt(
                "stored record is not an object".to_owned(),
            ));
        };
        if graph.is_none()
            && let Some(Value::Object(map)) = body.get("identityMap")
        {
            for (namespace, entries) in map {
                for id in entries
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("id").and_then(Value::as_str))
                {
                    record_identities.push(Identity::new(namespace, id));
                }
            }
        }
        body.remove("identityMap");
        for field in PER_FRAGMENT_FIELDS {
            body.remove(field);
        }
        overlay_unset_leaves(&mut attributes, body);
    }

    // The primary identity is the one of the winning record, else of the newest event (§9.6).
    let newest_event = events.iter().max_by_key(|e| (e.timestamp_ms, e.id));
    let primary_key = fragments
        .first()
        .map(|f| f.primary.as_str())
        .or_else(|| newest_event.map(|e| e.primary))
        .expect("a group has a fragment or an event");
    let mut identities = graph.unwrap_or_else(|| {
        let mut own = vec![Identity::from_key(primary_key)];
        for identity in record_identities {
            if !own.contains(&identity) {
                own.push(identity);
            }
        }
        own
    });
    let primary = Identity::from_key(primary_key);
    for identity in &mut identities {
        identity.primary = identity.namespace == primary.namespace && identity.id == primary.id;
    }
    attributes.insert("identityMap".to_owned(), identity_map(&identities));

    let (events, total_events) = newest_events(events)?;
    Ok(Some(MergedProfile {
        person_id,
        identities,
        attributes: Value::Object(attributes),
        events,
        total_events,
    }))
}

/// Copies every leaf of `fragment` that is still unset in `out`. Objects recurse,
/// so fields from different fragments combine; arrays and scalars are leaves
/// taken whole from the highest-priority fragment that has them (§9.6).
fn overlay_unset_leaves(out: &mut Map<String, Value>, fragment: Map<String, Value>) {
    for (key, value) in fragment {
        match (out.get_mut(&key), value) {
            (None, value) => {
                out.insert(key, value);
            }
            (Some(Value::Object(existing)), Value::Object(nested)) => {
                overlay_unset_leaves(existing, nested)
            }
            (Some(_), _) => {}
        }
    }
}

/// Builds the `identityMap` object of a merged profile.
fn identity_map(identities: &[Identity]) -> Value {
    let mut map: Map<String, Value> = Map::new();
    for identity in identities {
        let mut entry = Map::new();
        entry.insert("id".to_owned(), Value::String(identity.id.clone()));
        if identity.primary {
            entry.insert("primary".to_owned(), Value::Bool(true));
        }
        let entries = map
            .entry(identity.namespace.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(entries) = entries {
            entries.push(Value::Object(entry));
        }
    }
    Value::Object(map)
}

/// Deduplicates events by (dataset, `_id`), the later write winning, sorts them
/// by timestamp then `_id`, and keeps the newest 5,000 (§9.2, §9.7).
///
/// `events` is in write order, so "later" means later in the slice.
fn newest_events(
    events: &[&EventRef<'_>],
) -> Result<(Vec<ProfileEvent>, usize), ProfileStoreError> {
    let mut latest: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        latest.insert((event.dataset_id, event.id), index);
    }
    let mut kept: Vec<&EventRef<'_>> = if latest.len() == events.len() {
        events.to_vec()
    } else {
        let mut indexes: Vec<usize> = latest.into_values().collect();
        indexes.sort_unstable();
        indexes.into_iter().map(|index| events[index]).collect()
    };
    kept.sort_by(|a, b| a.timestamp_ms.cmp(&b.timestamp_ms).then(a.id.cmp(b.id)));
    let total = kept.len();
    let newest = &kept[total.saturating_sub(MAX_SEGMENTATION_EVENTS)..];
    let events = newest
        .iter()
        .map(|e| {
            Ok(ProfileEvent {
                timestamp_ms: e.timestamp_ms,
                dataset_id: e.dataset_id.to_owned(),
                id: e.id.to_owned(),
                packed: e.body.to_packed()?,
            })
        })
        .collect::<Result<_, ProfileStoreError>>()?;
    Ok((events, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::profiles::codec::EventBody;
    use serde_json::json;

    fn fragment(dataset: &str, ts: i64, seq: u64, body: Value) -> Fragment {
        Fragment {
            dataset_id: dataset.into(),
            primary: "crmid\0c-1".into(),
            effective_ts: ts,
            batch_seq: seq,
            body: body.to_string(),
        }
    }

    fn header(fragments: Vec<Fragment>) -> PersonHeader {
        PersonHeader {
            identities: vec!["crmid\0c-1".into()],
            fragments,
            event_count: 0,
            chunk_count: 0,
        }
    }

    fn merge_one(
        header: &PersonHeader,
        events: &[EventRef<'_>],
        policy: &MergePolicy,
    ) -> Vec<MergedProfile> {
        let mut out = Vec::new();
        merge_person(1, header, events, policy, &mut |p| out.push(p)).unwrap();
        out
    }

    #[test]
    fn timestamp_ordered_merges_leaf_by_leaf_with_arrays_whole() {
        let old = fragment(
            "crm",
            100,
            1,
            json!({
                "_id": "old", "person": {"name": {"firstName": "Ann"}, "gender": "female"},
                "homeAddress": {"city": "Boston", "postalCode": "02110"}, "loyalty": {"tier": "silver", "loyaltyID": ["a", "b"]}
            }),
        );
        let new = fragment(
            "loyalty",
            200,
            2,
            json!({
                "_id": "new", "homeAddress": {"city": "Cambridge"}, "loyalty": {"tier": "gold", "loyaltyID": ["c"], "points": 1200}
            }),
        );
        let profiles = merge_one(&header(vec![old, new]), &[], &MergePolicy::default());
        let attributes = &profiles[0].attributes;
        assert_eq!(
            attributes["homeAddress"],
            json!({"city": "Cambridge", "postalCode": "02110"})
        );
        assert_eq!(
            attributes["loyalty"],
            json!({"tier": "gold", "loyaltyID": ["c"], "points": 1200})
        );
        assert_eq!(attributes["person"]["name"]["firstName"], "Ann");
        assert!(
            attributes.get("_id").is_none(),
            "per-fragment fields are dropped"
        );
        assert_eq!(
            attributes["identityMap"],
            json!({"crmid": [{"id": "c-1", "primary": true}]})
        );
    }

    #[test]
    fn timestamp_ties_go_to_the_later_write() {
        let first = fragment("a", 100, 1, json!({"loyalty": {"tier": "silver"}}));
        let second = fragment("b", 100, 2, json!({"loyalty": {"tier": "gold"}}));
        let profiles = merge_one(&header(vec![second, first]), &[], &MergePolicy::default());
        assert_eq!(profiles[0].attributes["loyalty"]["tier"], "gold");
    }

    #[test]
    fn dataset_precedence_ranks_by_list_and_drops_unlisted_datasets() {
        let crm = fragment(
            "crm",
            100,
            1,
            json!({"loyalty": {"tier": "silver"}, "homeAddress": {"city": "Boston"}}),
        );
        let loyalty = fragment(
            "loyalty",
            300,
            2,
            json!({"loyalty": {"tier": "gold", "points": 1200}}),
        );
        let web = fragment("web", 400, 3, json!({"homeAddress": {"city": "Cambridge"}}));
        let event = EventRef {
            timestamp_ms: 5,
            dataset_id: "events",
            primary: "crmid\0c-1",
            id: "e1",
            body: EventBody::Text("{}"),
        };
        let other = EventRef {
            dataset_id: "other",
            id: "e2",
            ..event
        };
        let policy = MergePolicy {
            attribute_merge: AttributeMerge::DataSetPrecedence(vec![
                "crm".into(),
                "loyalty".into(),
                "events".into(),
            ]),
            identity_graph: IdentityGraph::Pdg,
        };
        let profiles = merge_one(&header(vec![crm, loyalty, web]), &[event, other], &policy);
        let attributes = &profiles[0].attributes;
        assert_eq!(
            attributes["loyalty"],
            json!({"tier": "silver", "points": 1200})
        );
        assert_eq!(attributes["homeAddress"]["city"], "Boston");
        assert_eq!(profiles[0].events.len(), 1);
        assert_eq!(profiles[0].events[0].id, "e1");
    }

    #[test]
    fn events_dedupe_sort_and_keep_the_newest_5000() {
        let bodies: Vec<String> = (0..5_010).map(|i| format!("{{\"n\":{i}}}")).collect();
        let ids: Vec<String> = (0..5_010).map(|i| format!("e{i:05}")).collect();
        let packed_bodies: Vec<Vec<u8>> = bodies
            .iter()
            .map(|body| {
                crate::store::profiles::packed::to_packed(&serde_json::from_str(body).unwrap())
            })
            .collect();
        let mut events: Vec<EventRef<'_>> = (0..5_010)
            .rev()
            .map(|i| EventRef {
                timestamp_ms: i as i64,
                dataset_id: "ev",
                primary: "crmid\0c-1",
                id: &ids[i],
                // Old text chunks and packed ones merge alike.
                body: match i % 2 {
                    0 => EventBody::Text(&bodies[i]),
                    _ => EventBody::Packed(&packed_bodies[i]),
                },
            })
            .collect();
        // A rewrite of the newest event with the same _id replaces the first write.
        events.push(EventRef {
            body: EventBody::Text("{\"n\":\"rewritten\"}"),
            ..events[0]
        });
        let profiles = merge_one(&header(vec![]), &events, &MergePolicy::default());
        let profile = &profiles[0];
        assert_eq!(profile.total_events, 5_010);
        assert_eq!(profile.events.len(), MAX_SEGMENTATION_EVENTS);
        assert_eq!(profile.events[0].timestamp_ms, 10);
        assert_eq!(
            profile.events.last().unwrap().to_value().unwrap(),
            json!({"n": "rewritten"})
        );
        assert_eq!(profile.events[0].to_value().unwrap(), json!({"n": 10}));
        assert!(
            profile
                .events
                .windows(2)
                .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
        );
    }

    #[test]
    fn identity_graph_none_gives_one_profile_per_primary_identity() {
        let mut by_ecid = fragment(
            "web",
            300,
            3,
            json!({"homeAddress": {"city": "Cambridge"}, "identityMap": {"ECID": [{"id": "e"}], "Email": [{"id": "a@x.com"}]}}),
        );
        by_ecid.primary = "ecid\0e".into();
        let by_crm = fragment("crm", 100, 1, json!({"homeAddress": {"city": "Boston"}}));
        let mut person = header(vec![by_crm, by_ecid]);
        person
            .identities
            .extend(["ecid\0e".to_owned(), "email\0a@x.com".to_owned()]);
        let pdg = merge_one(&person, &[], &MergePolicy::default());
        assert_eq!(pdg.len(), 1);
        assert_eq!(pdg[0].identities.len(), 3);
        assert_eq!(pdg[0].attributes["homeAddress"]["city"], "Cambridge");
        let none = MergePolicy {
            identity_graph: IdentityGraph::None,
            ..MergePolicy::default()
        };
        let profiles = merge_one(&person, &[], &none);
        assert_eq!(profiles.len(), 2);
        let cities: Vec<&Value> = profiles
            .iter()
            .map(|p| &p.attributes["homeAddress"]["city"])
            .collect();
        assert!(cities.contains(&&json!("Boston")) && cities.contains(&&json!("Cambridge")));
        let ecid_profile = profiles
            .iter()
            .find(|p| p.attributes["homeAddress"]["city"] == "Cambridge")
            .unwrap();
        assert_eq!(
            ecid_profile.identities.len(),
            2,
            "the primary plus the record's other identity"
        );
        assert!(
            ecid_profile.identities[0].primary && ecid_profile.identities[0].namespace == "ecid"
        );
    }
}
