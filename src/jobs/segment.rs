//! Segment jobs (`api.md` §4): the resource, its persistence, and the evaluation of definitions over
//! the whole store with membership transitions (`api.md` §9).
//!
//! One pass over the merged profiles per merge policy evaluates every requested definition of that
//! policy; within a pass, definitions run in `inSegment` dependency order, and a definition sees the
//! memberships this job has already computed for the ones it references. Results are written to the
//! membership store in one transaction only when the job succeeds, so a failed or cancelled job
//! changes nothing. Relative dates use the job's start time.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::pql::{self, CompiledQuery};
use crate::profile::policies::{self, SandboxInfo};
use crate::segment::definitions::{self, SegmentDefinition};
use crate::snapshot::{ColumnarSnapshots, Partition};
use crate::store::membership::{
    Membership, MembershipError, MembershipSnapshot, MembershipStatus, MembershipStore,
    MembershipWrite, Memberships,
};
use crate::store::metadata::StoreError;
use crate::store::profiles::{MergePolicy, ProfileStore};
use crate::tenant::Tenant;

/// Namespace of Platform segments in `segmentMembership`.
pub const UPS_NAMESPACE: &str = "ups";
/// Definitions one job may name explicitly (`api.md` §4.3).
pub const MAX_SEGMENTS_PER_JOB: usize = 1500;

/// The lifecycle of a segment job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Accepted.
    New,
    /// Waiting for a worker.
    Queued,
    /// Evaluating.
    Processing,
    /// Finished; memberships written.
    Succeeded,
    /// Failed; memberships unchanged.
    Failed,
    /// Cancel requested.
    Cancelling,
    /// Cancelled; memberships unchanged.
    Cancelled,
}

impl JobStatus {
    /// Returns the status as stored and filtered on (`NEW`, `QUEUED`...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::New => "NEW",
            JobStatus::Queued => "QUEUED",
            JobStatus::Processing => "PROCESSING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses a status name.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(Value::String(name.to_owned())).ok()
    }

    /// Tells whether the job is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// `{startTimeInMs, endTimeInMs, totalTimeInMs}`; empty while unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// Start, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_in_ms: Option<i64>,
    /// End, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time_in_ms: Option<i64>,
    /// End minus start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time_in_ms: Option<i64>,
}

impl Timing {
    fn started(at: i64) -> Self {
        Self {
            start_time_in_ms: Some(at),
            ..Self::default()
        }
    }

    /// Records the end time and the total.
    pub fn finish(&mut self, at: i64) {
        self.end_time_in_ms = Some(at);
        self.total_time_in_ms = self.start_time_in_ms.map(|start| at - start);
    }
}

/// Job metrics, as the seeds show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMetrics {
    /// Request creation to completion.
    pub total_time: Timing,
    /// The evaluation phase.
    pub profile_segmentation_time: Timing,
    /// Profiles scanned (over all merge policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_profiles: Option<u64>,
    /// Merged profiles per merge policy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub total_profiles_by_merge_policy: BTreeMap<String, u64>,
    /// Qualified profiles per segment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segmented_profile_counter: BTreeMap<String, u64>,
    /// Qualified profiles per segment per identity namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segmented_profile_by_namespace_counter: BTreeMap<String, BTreeMap<String, u64>>,
    /// Profiles per segment per status this job wrote (`realized`, `exited`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segmented_profile_by_status_counter: BTreeMap<String, BTreeMap<String, u64>>,
    /// Progress while processing: profiles evaluated so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles_processed_so_far: Option<u64>,
}

/// One error on a job (`api.md` §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    /// A code.
    pub code: String,
    /// What happened.
    pub msg: String,
}

/// A segment reference of a job, with the definition as it was when the job was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSegment {
    /// The definition id.
    pub segment_id: String,
    /// `{id, version, expression, mergePolicyId, mergePolicy}`.
    pub segment: Value,
}

/// A segment job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentJob {
    /// The id.
    pub id: String,
    /// Owning organization.
    pub ims_org_id: String,
    /// Owning sandbox.
    pub sandbox: SandboxInfo,
    /// `ups`.
    pub profile_instance_id: String,
    /// `api` or `scheduler`.
    pub source: String,
    /// The status.
    pub status: JobStatus,
    /// The definitions evaluated.
    pub segments: Vec<JobSegment>,
    /// Errors.
    pub errors: Vec<JobError>,
    /// Metrics.
    pub metrics: JobMetrics,
    /// Client or scheduler request id.
    pub request_id: String,
    /// `{name: "_xdm.context.profile"}`.
    pub schema: Value,
    /// Scheduler properties (`scheduleId`, `runId`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub properties: serde_json::Map<String, Value>,
    /// Links to cancel and check.
    #[serde(rename = "_links")]
    pub links: Value,
    /// Creation, Unix ms.
    pub creation_time: i64,
    /// Last update, Unix ms.
    pub update_time: i64,
    /// Last update, Unix s.
    pub update_epoch: i64,
}

/// Why a job could not be created or run.
#[derive(Debug, thiserror::Error)]
pub enum JobErrorKind {
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such job.
    #[error("segment job {0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for JobErrorKind {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

impl From<serde_json::Error> for JobErrorKind {
    fn from(error: serde_json::Error) -> Self {
        Self::Store(error.into())
    }
}

/// What to evaluate: explicit ids, or every definition of the sandbox (`"*"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSelection {
    /// These definitions.
    Ids(Vec<String>),
    /// All definitions of the sandbox.
    All,
}

/// Who asked for a job.
#[derive(Debug, Clone, Default)]
pub struct JobOrigin {
    /// `api` or `scheduler`.
    pub source: String,
    /// Scheduler properties.
    pub properties: serde_json::Map<String, Value>,
    /// The request id to record.
    pub request_id: String,
}

fn snapshot(definition: &SegmentDefinition) -> JobSegment {
    JobSegment {
        segment_id: definition.id.clone(),
        segment: json!({
            "id": definition.id,
            "version": definition.version,
            "expression": definition.expression,
            "mergePolicyId": definition.merge_policy_id,
            "mergePolicy": {"id": definition.merge_policy_id},
        }),
    }
}

/// Validates a request and stores a new job in `QUEUED` state, in one transaction.
pub fn create_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    selection: JobSelection,
    origin: JobOrigin,
    now_ms: i64,
) -> Result<SegmentJob, JobErrorKind> {
    let transaction = connection.transaction()?;
    let job = create_in(&transaction, tenant, selection, origin, now_ms)?;
    transaction.commit()?;
    Ok(job)
}

/// Validates a request and stores a new job in `QUEUED` state inside the caller's transaction.
pub fn create_in(
    transaction: &rusqlite::Connection,
    tenant: &Tenant,
    selection: JobSelection,
    origin: JobOrigin,
    now_ms: i64,
) -> Result<SegmentJob, JobErrorKind> {
    let all = definitions::list_blocking(transaction, tenant)
        .map_err(|error| JobErrorKind::Invalid(error.to_string()))?;
    let chosen: Vec<&SegmentDefinition> = match &selection {
        JobSelection::All => all
            .iter()
            .filter(|definition| definition.evaluation_info.batch.enabled)
            .collect(),
        JobSelection::Ids(ids) => {
            if ids.is_empty() || ids.len() > MAX_SEGMENTS_PER_JOB {
                return Err(JobErrorKind::Invalid(format!(
                    "a segment job names 1 to {MAX_SEGMENTS_PER_JOB} segment ids; use [{{\"segmentId\": \"*\"}}] for all"
                )));
            }
            let mut chosen = Vec::new();
            let mut missing = Vec::new();
            for id in ids {
                match all.iter().find(|definition| &definition.id == id) {
                    Some(definition) => chosen.push(definition),
                    None => missing.push(id.as_str()),
                }
            }
            if !missing.is_empty() {
                return Err(JobErrorKind::Invalid(format!(
                    "segment definitions not found in this sandbox: {}",
                    missing.join(", ")
                )));
            }
            chosen
        }
    };
    let id = uuid::Uuid::now_v7().to_string();
    let job = SegmentJob {
        ims_org_id: tenant.org_id.clone(),
        sandbox: SandboxInfo::of(tenant),
        profile_instance_id: "ups".into(),
        source: origin.source,
        status: JobStatus::Queued,
        segments: match selection {
            JobSelection::All if chosen.len() > MAX_SEGMENTS_PER_JOB => {
                vec![JobSegment {
                    segment_id: "*".into(),
                    segment: json!({}),
                }]
            }
            _ => chosen
                .iter()
                .map(|definition| snapshot(definition))
                .collect(),
        },
        errors: Vec::new(),
        metrics: JobMetrics {
            total_time: Timing::started(now_ms),
            ..JobMetrics::default()
        },
        request_id: if origin.request_id.is_empty() {
            format!("{id}-{now_ms}")
        } else {
            origin.request_id
        },
        schema: json!({"name": definitions::PROFILE_CLASS}),
        properties: origin.properties,
        links: json!({
            "cancel": {"href": format!("/segment/jobs/{id}"), "method": "DELETE"},
            "checkStatus": {"href": format!("/segment/jobs/{id}"), "method": "GET"},
        }),
        creation_time: now_ms,
        update_time: now_ms,
        update_epoch: now_ms / 1000,
        id,
    };
    write(transaction, tenant, &job)?;
    Ok(job)
}

fn write(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    job: &SegmentJob,
) -> Result<(), JobErrorKind> {
    connection.execute(
        "INSERT INTO segment_jobs (org_id, sandbox, id, status, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (org_id, sandbox, id) DO UPDATE SET status = excluded.status, body = excluded.body",
        params![tenant.org_id, tenant.sandbox, job.id, job.status.as_str(), job.creation_time, serde_json::to_string(job)?],
    )?;
    Ok(())
}

/// Returns one job.
pub fn get_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<SegmentJob, JobErrorKind> {
    crate::store::metadata::get_document(connection, "segment_jobs", tenant, id)?
        .ok_or_else(|| JobErrorKind::NotFound(id.to_owned()))
}

/// Returns every job of a tenant, oldest first.
pub fn list_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
) -> Result<Vec<SegmentJob>, JobErrorKind> {
    Ok(crate::store::metadata::list_documents(
        connection,
        "segment_jobs",
        tenant,
        "created_ms, id",
    )?)
}

/// Applies `change` to a job in one transaction and returns it.
pub fn update_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
    now_ms: i64,
    change: impl FnOnce(&mut SegmentJob),
) -> Result<SegmentJob, JobErrorKind> {
    let transaction = connection.transaction()?;
    let mut job = get_blocking(&transaction, tenant, id)?;
    change(&mut job);
    job.update_time = now_ms;
    job.update_epoch = now_ms / 1000;
    write(&transaction, tenant, &job)?;
    transaction.commit()?;
    Ok(job)
}

/// Returns the oldest job in one of `statuses`, across tenants.
pub fn oldest_with_status_blocking(
    connection: &rusqlite::Connection,
    statuses: &[JobStatus],
) -> Result<Option<(Tenant, String)>, JobErrorKind> {
    let placeholders = statuses
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT org_id, sandbox, id FROM segment_jobs WHERE status IN ({placeholders}) ORDER BY created_ms, id LIMIT 1"
    );
    Ok(connection
        .query_row(&sql, [], |row| {
            Ok((
                Tenant::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                row.get(2)?,
            ))
        })
        .optional()?)
}

/// Everything the evaluation of a job needs from the stores.
pub struct EvaluationInput<'a> {
    /// Profiles.
    pub profiles: &'a ProfileStore,
    /// The columnar snapshots of the store that passes read.
    pub snapshots: &'a ColumnarSnapshots,
    /// Memberships.
    pub memberships: &'a MembershipStore,
    /// The job's definitions (current versions), with their resolved merge policies.
    pub definitions: Vec<(SegmentDefinition, MergePolicy)>,
    /// The job's start: relative dates and `lastQualificationTime` use it.
    pub now: DateTime<Utc>,
    /// Checked every few thousand profiles, from any scanning thread; true means stop and write
    /// nothing.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    /// Called, from any scanning thread, with the number of profiles evaluated so far.
    pub progress: &'a (dyn Fn(u64) + Sync),
}

/// The outcome of an evaluation that ran to the end.
#[derive(Debug, Default)]
pub struct EvaluationOutcome {
    /// Metrics to record.
    pub metrics: JobMetrics,
    /// Whether the job was cancelled (nothing written).
    pub cancelled: bool,
}

/// Orders definitions so each comes after the ones of this job it references (Kahn's algorithm; the
/// definitions API refuses cycles, so one cannot appear here).
fn dependency_order(
    definitions: Vec<(SegmentDefinition, MergePolicy)>,
) -> Vec<(SegmentDefinition, MergePolicy)> {
    let ids: HashSet<String> = definitions
        .iter()
        .map(|(definition, _)| definition.id.clone())
        .collect();
    let mut remaining = definitions;
    let mut ordered = Vec::with_capacity(remaining.len());
    let mut done: HashSet<String> = HashSet::new();
    while !remaining.is_empty() {
        let (ready, blocked): (Vec<_>, Vec<_>) =
            remaining.into_iter().partition(|(definition, _)| {
                definition
                    .referenced_segments
                    .iter()
                    .all(|reference| !ids.contains(reference) || done.contains(reference))
            });
        if ready.is_empty() {
            // Unreachable with the create-time cycle check; evaluate the rest as they are rather than loop.
            ordered.extend(blocked);
            break;
        }
        done.extend(ready.iter().map(|(definition, _)| definition.id.clone()));
        ordered.extend(ready);
        remaining = blocked;
    }
    ordered
}

/// A definition of a group, compiled, with what it reads.
struct CompiledDefinition<'a> {
    definition: &'a SegmentDefinition,
    query: CompiledQuery,
    /// Whether it reads memberships (`inSegment` or a `segmentMembership` path): it then runs per
    /// profile on the profile's JSON with this job's `segmentMembership`; the others run column
    /// at a time on the partition's tables.
    reads_memberships: bool,
    /// The definition's version as memberships record it.
    version: String,
}

/// The fixed inputs of evaluating one group of definitions (one merge policy).
struct GroupContext<'a> {
    compiled: &'a [CompiledDefinition<'a>],
    /// Whether any definition reads events: otherwise the per-profile path does not rebuild them.
    reads_events: bool,
    /// Where profiles' memberships before this group are read.
    prior: PriorMemberships<'a>,
    now_ms: i64,
    now_text: &'a str,
}

/// Where a group reads the memberships profiles had before it.
#[derive(Clone, Copy)]
enum PriorMemberships<'a> {
    /// The first group: memberships stored before the job, from a read snapshot (no lock).
    Stored(&'a MembershipSnapshot),
    /// Later groups: through the job's open write, which holds earlier groups' changes (their
    /// `inSegment` reads see them) over the stored ones.
    ThisJob(&'a Mutex<MembershipWrite>),
}

impl PriorMemberships<'_> {
    fn get(self, xid: &str) -> Result<Memberships, MembershipError> {
        match self {
            PriorMemberships::Stored(snapshot) => snapshot.get(xid),
            PriorMemberships::ThisJob(write) => write
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(xid),
        }
    }
}

/// Partial results of one worker thread: counters per definition of the group (indexed like
/// [`GroupContext::compiled`]) and changed memberships.
struct Partial {
    qualified: Vec<u64>,
    by_namespace: Vec<BTreeMap<String, u64>>,
    realized: Vec<u64>,
    exited: Vec<u64>,
    /// Changed memberships of the partition being evaluated, written out after it.
    changes: Vec<(String, Memberships)>,
    /// Merged profiles this worker was handed.
    scanned: u64,
    /// The first stored membership that could not be read: the job fails with it.
    failure: Option<String>,
}

impl Partial {
    fn new(definitions: usize) -> Self {
        Self {
            qualified: vec![0; definitions],
            by_namespace: vec![BTreeMap::new(); definitions],
            realized: vec![0; definitions],
            exited: vec![0; definitions],
            changes: Vec::new(),
            scanned: 0,
            failure: None,
        }
    }

    /// Adds this worker's counters to the job's metrics (workers' profiles are disjoint).
    fn add_to(&self, compiled: &[CompiledDefinition<'_>], metrics: &mut JobMetrics) {
        for (index, CompiledDefinition { definition, .. }) in compiled.iter().enumerate() {
            let id = &definition.id;
            *metrics
                .segmented_profile_counter
                .entry(id.clone())
                .or_default() += self.qualified[index];
            let namespaces = metrics
                .segmented_profile_by_namespace_counter
                .entry(id.clone())
                .or_default();
            for (namespace, count) in &self.by_namespace[index] {
                *namespaces.entry(namespace.clone()).or_default() += count;
            }
            let statuses = metrics
                .segmented_profile_by_status_counter
                .entry(id.clone())
                .or_default();
            for (label, count) in [
                ("realized", self.realized[index]),
                ("exited", self.exited[index]),
            ] {
                if count > 0 {
                    *statuses.entry(label.into()).or_default() += count;
                }
            }
        }
    }
}

/// Evaluates every definition of a group over one partition: definitions that do not read
/// memberships column at a time over the partition's tables (the same kernels and answers as
/// previews), then each profile's transitions, with the others evaluated per profile on its JSON
/// rebuilt from the tables, after this job's earlier results.
fn evaluate_partition(partition: &Partition, context: &GroupContext<'_>, partial: &mut Partial) {
    let tables = &partition.tables;
    let rows = tables.len();
    let columnar: Vec<Option<Vec<bool>>> = context
        .compiled
        .iter()
        .map(|compiled| {
            (!compiled.reads_memberships).then(|| {
                let prepared = tables.prepare(&compiled.query, context.now_ms);
                let mut qualifies = vec![false; rows];
                for row in tables.matching(&prepared, 0..rows) {
                    qualifies[row as usize] = true;
                }
                qualifies
            })
        })
        .collect();
    // Qualifying profiles per definition and namespace set, named once per partition.
    let mut by_set = vec![vec![0u64; partition.namespace_sets.len()]; context.compiled.len()];
    for row in 0..rows {
        let precomputed = |definition: usize| columnar[definition].as_ref().map(|rows| rows[row]);
        let set = partition.namespace_set[row] as usize;
        evaluate_profile(
            &partition.xids[row],
            || {
                let events = match context.reads_events {
                    true => tables.materialize_events(row),
                    false => Vec::new(),
                };
                (tables.attributes().materialize(row), events)
            },
            context,
            partial,
            precomputed,
            |definition| by_set[definition][set] += 1,
        );
    }
    for (definition, counts) in by_set.iter().enumerate() {
        for (set, count) in counts.iter().enumerate().filter(|(_, count)| **count > 0) {
            partial.qualified[definition] += count;
            for namespace in &partition.namespace_sets[set] {
                *partial.by_namespace[definition]
                    .entry(namespace.clone())
                    .or_default() += count;
            }
        }
    }
    partial.scanned += partition.profiles_scanned;
}

/// Evaluates every definition of a group for one profile, in dependency order, recording
/// transitions and, when a status changed, the profile's new memberships. `precomputed(i)` is
/// definition `i`'s answer when the partition's column evaluation gave one; `materialize` rebuilds
/// the profile's attributes and events for the others; `qualified(i)` is called when the profile
/// qualifies for definition `i`.
fn evaluate_profile(
    xid: &str,
    materialize: impl FnOnce() -> (Value, Vec<Value>),
    context: &GroupContext<'_>,
    partial: &mut Partial,
    precomputed: impl Fn(usize) -> Option<bool>,
    mut qualified: impl FnMut(usize),
) {
    // Rebuilt on first need.
    let mut profile = std::cell::LazyCell::new(materialize);
    let mut memberships = match context.prior.get(xid) {
        Ok(memberships) => memberships,
        Err(error) => {
            partial.failure.get_or_insert_with(|| error.to_string());
            return;
        }
    };
    let mut changed = false;
    for (index, compiled) in context.compiled.iter().enumerate() {
        let definition = compiled.definition;
        let qualifies = match precomputed(index) {
            Some(qualifies) => qualifies,
            None => {
                let (attributes, events) = std::cell::LazyCell::force_mut(&mut profile);
                // inSegment sees this job's results for earlier definitions, and stored ones for
                // others.
                if let Value::Object(object) = attributes {
                    object.insert(
                        "segmentMembership".into(),
                        json!({UPS_NAMESPACE: &memberships}),
                    );
                }
                compiled
                    .query
                    .matches_at(&pql::JsonProfile::new(attributes, events), context.now_ms)
            }
        };
        if qualifies {
            qualified(index);
        }
        let previous = memberships
            .get(&definition.id)
            .map(|membership| membership.status);
        let transition = match (previous, qualifies) {
            (None | Some(MembershipStatus::Exited), true) => Some(MembershipStatus::Realized),
            (Some(MembershipStatus::Realized), false) => Some(MembershipStatus::Exited),
            _ => None,
        };
        match transition {
            Some(status) => {
                match status {
                    MembershipStatus::Realized => partial.realized[index] += 1,
                    MembershipStatus::Exited => partial.exited[index] += 1,
                }
                memberships.insert(
                    definition.id.clone(),
                    Membership {
                        status,
                        last_qualification_time: context.now_text.to_owned(),
                        version: Some(compiled.version.clone()),
                    },
                );
                changed = true;
            }
            // An unchanged status records the version evaluated.
            None => {
                if let Some(entry) = memberships.get_mut(&definition.id)
                    && entry.version.as_deref() != Some(&compiled.version)
                {
                    entry.version = Some(compiled.version.clone());
                }
            }
        }
    }
    if changed {
        partial.changes.push((xid.to_owned(), memberships));
    }
}

/// Evaluates a job's definitions over the whole store and, unless cancelled, writes the membership
/// transitions in one transaction.
///
/// Each merge policy's pass reads the store's columnar snapshot ([`ColumnarSnapshots`]): one
/// thread per core takes partitions one after the other, reading current ones from disk and
/// rebuilding stale ones from the store, and evaluates them (`evaluate_partition`) with its own
/// counters, merged at the end of the pass. Progress is reported and cancellation checked after
/// every partition.
pub fn evaluate(input: EvaluationInput<'_>, tenant: &Tenant) -> Result<EvaluationOutcome, String> {
    let now_text = input.now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let now_ms = input.now.timestamp_millis();
    let mut metrics = JobMetrics::default();
    // The job's changes are written partition by partition into one transaction, committed only
    // when the job succeeds. Opened first: as the only writer it keeps the stored memberships
    // exactly as the snapshot below sees them.
    let write = Mutex::new(
        input
            .memberships
            .begin_write(tenant)
            .map_err(|error| error.to_string())?,
    );
    let stored = input
        .memberships
        .snapshot(tenant)
        .map_err(|error| error.to_string())?;
    // Profiles handed out over all groups so far, for progress reports.
    let processed = AtomicU64::new(0);
    let mut total_scanned = 0u64;
    let workers = std::thread::available_parallelism().map_or(1, |cores| cores.get());

    // Group by merge policy: one pass over the store per distinct policy.
    let mut groups: Vec<(MergePolicy, String, Vec<(SegmentDefinition, MergePolicy)>)> = Vec::new();
    for (definition, policy) in dependency_order(input.definitions) {
        match groups
            .iter_mut()
            .find(|(existing, _, _)| *existing == policy)
        {
            Some((_, _, members)) => members.push((definition, policy)),
            None => groups.push((
                policy.clone(),
                definition.merge_policy_id.clone(),
                vec![(definition, policy)],
            )),
        }
    }
    // Every evaluated segment appears in the counters, with 0 when nobody qualifies (as the seeds show).
    for (_, _, members) in &groups {
        for (definition, _) in members {
            metrics
                .segmented_profile_counter
                .insert(definition.id.clone(), 0);
            metrics
                .segmented_profile_by_namespace_counter
                .insert(definition.id.clone(), BTreeMap::new());
            metrics
                .segmented_profile_by_status_counter
                .insert(definition.id.clone(), BTreeMap::new());
        }
    }

    for (group, (policy, policy_id, members)) in groups.iter().enumerate() {
        let mut reads_events = false;
        let compiled: Vec<CompiledDefinition> = members
            .iter()
            .map(|(definition, _)| {
                let expr = definitions::parse_expression(&definition.expression)
                    .map_err(|error| error.to_string())?;
                reads_events |= pql::reads_events(&expr);
                let query = pql::compile(&expr).map_err(|errors| format!("{errors:?}"))?;
                let reads_memberships = !query.referenced_segments().is_empty()
                    || query.field_paths().iter().any(|path| {
                        path.segments()
                            .first()
                            .is_some_and(|first| &**first == "segmentMembership")
                    });
                Ok(CompiledDefinition {
                    definition,
                    query,
                    reads_memberships,
                    version: definition.version.to_string(),
                })
            })
            .collect::<Result<_, String>>()?;
        let context = GroupContext {
            compiled: &compiled,
            reads_events,
            prior: match group {
                0 => PriorMemberships::Stored(&stored),
                _ => PriorMemberships::ThisJob(&write),
            },
            now_ms,
            now_text: &now_text,
        };
        let cancelled = AtomicBool::new(false);
        let mut partials: Vec<Partial> =
            (0..workers).map(|_| Partial::new(compiled.len())).collect();
        let mut consumers: Vec<_> = partials
            .iter_mut()
            .map(|partial| {
                let (context, processed, cancelled) = (&context, &processed, &cancelled);
                let write = &write;
                move |partition: &Partition| {
                    evaluate_partition(partition, context, partial);
                    if !partial.changes.is_empty() {
                        let written = write
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .replace(&partial.changes);
                        partial.changes.clear();
                        if let Err(error) = written {
                            partial.failure.get_or_insert_with(|| error.to_string());
                        }
                    }
                    if partial.failure.is_some() {
                        return ControlFlow::Break(());
                    }
                    let count = processed.fetch_add(partition.profiles_scanned, Ordering::Relaxed);
                    (input.progress)(count + partition.profiles_scanned);
                    if (input.cancelled)() {
                        cancelled.store(true, Ordering::Relaxed);
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                }
            })
            .collect();
        let pass = input
            .snapshots
            .for_each_partition(input.profiles, tenant, policy, &mut consumers)
            .map_err(|error| error.to_string())?;
        drop(consumers);
        tracing::debug!(
            partitions_read = pass.partitions_read,
            partitions_built = pass.partitions_built,
            "segment job pass over the columnar snapshot"
        );
        if cancelled.load(Ordering::Relaxed) || (input.cancelled)() {
            return Ok(EvaluationOutcome {
                metrics,
                cancelled: true,
            });
        }
        if let Some(failure) = partials
            .iter_mut()
            .find_map(|partial| partial.failure.take())
        {
            return Err(failure);
        }
        let scanned: u64 = partials.iter().map(|partial| partial.scanned).sum();
        total_scanned += scanned;
        metrics
            .total_profiles_by_merge_policy
            .insert(policy_id.clone(), scanned);
        for partial in partials {
            partial.add_to(&compiled, &mut metrics);
        }
    }
    metrics.total_profiles = Some(total_scanned);
    write
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .commit()
        .map_err(|error| error.to_string())?;
    Ok(EvaluationOutcome {
        metrics,
        cancelled: false,
    })
}

/// The distinct merge policies of the tenant's batch-evaluated definitions, or its default policy
/// when it has none: the passes its jobs will make.
pub fn policies_in_use(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
) -> Result<Vec<MergePolicy>, String> {
    let all = definitions::list_blocking(connection, tenant).map_err(|error| error.to_string())?;
    let mut requested: Vec<Option<&str>> = all
        .iter()
        .filter(|definition| definition.evaluation_info.batch.enabled)
        .map(|definition| Some(definition.merge_policy_id.as_str()))
        .collect();
    if requested.is_empty() {
        requested.push(None);
    }
    let mut in_use: Vec<MergePolicy> = Vec::new();
    for id in requested {
        let (_, policy) = policies::resolve_blocking(connection, tenant, id)
            .map_err(|error| error.to_string())?;
        if !in_use.contains(&policy) {
            in_use.push(policy);
        }
    }
    Ok(in_use)
}

/// Loads the current versions of a job's definitions with their merge policies.
pub fn load_definitions(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    job: &SegmentJob,
) -> Result<Vec<(SegmentDefinition, MergePolicy)>, String> {
    let all = definitions::list_blocking(connection, tenant).map_err(|error| error.to_string())?;
    let wanted: Vec<&SegmentDefinition> =
        if job.segments.iter().any(|segment| segment.segment_id == "*") {
            all.iter()
                .filter(|definition| definition.evaluation_info.batch.enabled)
                .collect()
        } else {
            job.segments
                .iter()
                .map(|segment| {
                    all.iter()
                        .find(|definition| definition.id == segment.segment_id)
                        .ok_or_else(|| {
                            format!(
                                "segment definition {} was deleted before the job ran",
                                segment.segment_id
                            )
                        })
                })
                .collect::<Result<_, _>>()?
        };
    wanted
        .into_iter()
        .map(|definition| {
            let (_, policy) =
                policies::resolve_blocking(connection, tenant, Some(&definition.merge_policy_id))
                    .map_err(|error| format!("merge policy of {}: {error}", definition.id))?;
            Ok((definition.clone(), policy))
        })
        .collect()
}
