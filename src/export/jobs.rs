//! Export jobs (`api.md` §5): write the members of segments (or all profiles) as Parquet into new
//! batches of a profile-union dataset.
//!
//! A job is stored when accepted (numeric ids, as Adobe's), then run on the blocking pool: one scan of
//! the merged profiles under the job's merge policy, rows filtered by `segmentMembership`
//! (status set, default `["realized"]`, and qualification time window), projected to `fields` plus
//! `identityMap` and `segmentMembership`, and written by [`ExportWriter`] under temporary names. Only
//! when every file is written are the batches marked `success` (visible to Data Access) in one
//! metadata transaction; the previous successful batches of the same dataset and segments are then
//! marked `inactive`, so the dataset holds only the latest export's members. A crash leaves the batches
//! in `loading` (never listed); jobs interrupted that way run again at start-up.
//!
//! Not implemented (refused with 501 at create, so nothing is silently ignored):
//! `filter.fromIngestTimestamp`, `additionalFields.eventList` and `evaluationInfo.segmentation`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::batches::{self, BatchStatus, FileFormat, InputFormat, NewBatch};
use crate::catalog::datasets::{self, PROFILE_UNION_SCHEMA};
use crate::export::parquet::{ExportOptions, ExportWriter};
use crate::jobs::segment::{JobError, Timing, UPS_NAMESPACE};
use crate::profile::{policies, projection};
use crate::segment::definitions;
use crate::store::membership::{MembershipStatus, MembershipStore, Memberships};
use crate::store::metadata::StoreError;
use crate::store::profiles::ProfileStore;
use crate::tenant::Tenant;

/// `filter.segments[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentFilter {
    /// The segment.
    pub segment_id: String,
    /// Its namespace (only `ups` is evaluated by segmentd).
    #[serde(default = "default_namespace")]
    pub segment_ns: String,
    /// Statuses to export; default `["realized"]`.
    #[serde(default = "default_statuses")]
    pub status: Vec<MembershipStatus>,
}

fn default_namespace() -> String {
    UPS_NAMESPACE.into()
}

fn default_statuses() -> Vec<MembershipStatus> {
    vec![MembershipStatus::Realized]
}

/// `filter.segmentQualificationTime`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QualificationWindow {
    /// Inclusive lower bound (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Inclusive upper bound (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

/// `filter`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportFilter {
    /// Segments whose members are exported; absent = every profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<SegmentFilter>>,
    /// Bounds on `lastQualificationTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_qualification_time: Option<QualificationWindow>,
    /// Not implemented (501).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ingest_timestamp: Option<String>,
    /// Include profiles that have only events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_profiles: Option<bool>,
}

/// The body of `POST /export/jobs`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewExportJob {
    /// Comma-separated dotted paths; blank = all fields.
    #[serde(default)]
    pub fields: Option<String>,
    /// `{id, version}`; default: the first segment's policy, else the sandbox default.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub merge_policy: Option<Value>,
    /// What to export.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<ExportFilter>,
    /// Not implemented (501).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub additional_fields: Option<Value>,
    /// `{datasetId, segmentPerBatch}`.
    #[schema(value_type = Object)]
    pub destination: Destination,
    /// `{name: "_xdm.context.profile"}`.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Not implemented (501).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub evaluation_info: Option<Value>,
}

/// `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Target dataset (profile union schema, persisted).
    pub dataset_id: String,
    /// One batch per segment.
    #[serde(default)]
    pub segment_per_batch: bool,
    /// The batch written (one-batch exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

/// The lifecycle of an export job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExportStatus {
    /// Accepted.
    New,
    /// Writing.
    Processing,
    /// Written and published.
    Succeeded,
    /// Failed; nothing published.
    Failed,
    /// Cancelled; nothing published.
    Cancelled,
}

impl ExportStatus {
    /// Returns the stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportStatus::New => "NEW",
            ExportStatus::Processing => "PROCESSING",
            ExportStatus::Succeeded => "SUCCEEDED",
            ExportStatus::Failed => "FAILED",
            ExportStatus::Cancelled => "CANCELLED",
        }
    }
}

/// Export job metrics, as the seeds show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportMetrics {
    /// The whole job.
    pub total_time: Timing,
    /// Reading and filtering profiles.
    pub profile_export_time: Timing,
    /// Writing and publishing the files.
    #[serde(rename = "aCPDatasetWriteTime")]
    pub acp_dataset_write_time: Timing,
    /// Profiles exported over all batches.
    #[serde(default)]
    pub total_exported_profile_counter: u64,
    /// Exported profiles per identity namespace.
    #[serde(default)]
    pub exported_profile_by_namespace_counter: BTreeMap<String, u64>,
}

/// An export job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportJob {
    /// Numeric id.
    pub id: i64,
    /// `BATCH`.
    pub job_type: String,
    /// Owning organization.
    pub ims_org_id: String,
    /// Owning sandbox name.
    pub sandbox_name: String,
    /// `ups`.
    pub profile_instance_id: String,
    /// The status.
    pub status: ExportStatus,
    /// Projection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<String>,
    /// `{id, version}` of the policy used.
    pub merge_policy: Value,
    /// Echo of the filter.
    pub filter: ExportFilter,
    /// Target, with `batchId` once written.
    pub destination: Destination,
    /// Per-segment batches when `segmentPerBatch` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<Value>,
    /// `{name}`.
    pub schema: Value,
    /// Errors.
    pub errors: Vec<JobError>,
    /// Metrics.
    pub metrics: ExportMetrics,
    /// Creation, Unix ms.
    pub creation_time: i64,
    /// Last update, Unix ms.
    pub update_time: i64,
}

/// Why an export could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ExportJobError {
    /// Invalid request.
    #[error("{0}")]
    Invalid(String),
    /// A documented option segmentd does not implement yet.
    #[error("{0} is not implemented by segmentd yet")]
    NotImplemented(&'static str),
    /// No such job.
    #[error("export job {0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ExportJobError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

impl From<serde_json::Error> for ExportJobError {
    fn from(error: serde_json::Error) -> Self {
        Self::Store(error.into())
    }
}

fn parse_time(text: &str, what: &str) -> Result<DateTime<Utc>, ExportJobError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| {
            ExportJobError::Invalid(format!("{what} `{text}` is not an RFC 3339 date-time"))
        })
}

/// Validates a request and stores the job (`NEW`), in one transaction.
pub fn create_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    request: NewExportJob,
    now_ms: i64,
) -> Result<ExportJob, ExportJobError> {
    let transaction = connection.transaction()?;
    let job = create_in(&transaction, tenant, request, now_ms)?;
    transaction.commit()?;
    Ok(job)
}

/// Validates a request and stores the job (`NEW`) inside the caller's transaction.
pub fn create_in(
    transaction: &rusqlite::Connection,
    tenant: &Tenant,
    request: NewExportJob,
    now_ms: i64,
) -> Result<ExportJob, ExportJobError> {
    if request.additional_fields.is_some() {
        return Err(ExportJobError::NotImplemented("additionalFields.eventList"));
    }
    if request.evaluation_info.is_some() {
        return Err(ExportJobError::NotImplemented(
            "evaluationInfo.segmentation",
        ));
    }
    let filter = request.filter.unwrap_or_default();
    if filter.from_ingest_timestamp.is_some() {
        return Err(ExportJobError::NotImplemented("filter.fromIngestTimestamp"));
    }
    if request.schema.get("name").and_then(Value::as_str).is_none() {
        return Err(ExportJobError::Invalid(
            "schema.name is required, e.g. _xdm.context.profile".into(),
        ));
    }
    if let Some(window) = &filter.segment_qualification_time {
        for (time, what) in [
            (&window.start_time, "startTime"),
            (&window.end_time, "endTime"),
        ] {
            if let Some(time) = time {
                parse_time(time, &format!("filter.segmentQualificationTime.{what}"))?;
            }
        }
    }
    let dataset =
        datasets::get_dataset_blocking(transaction, tenant, &request.destination.dataset_id)?
            .ok_or_else(|| {
                ExportJobError::Invalid(format!(
                    "destination dataset {} does not exist",
                    request.destination.dataset_id
                ))
            })?;
    let persisted = dataset
        .file_description
        .as_ref()
        .and_then(|description| description.get("persisted"))
        .and_then(Value::as_bool)
        == Some(true);
    if dataset.schema_ref.id != PROFILE_UNION_SCHEMA || !persisted {
        return Err(ExportJobError::Invalid(format!(
            "dataset {} is not an export target: it needs schemaRef.id {PROFILE_UNION_SCHEMA} and fileDescription.persisted true",
            request.destination.dataset_id
        )));
    }
    let all = definitions::list_blocking(&transaction, tenant)
        .map_err(|error| ExportJobError::Invalid(error.to_string()))?;
    if let Some(segments) = &filter.segments {
        if request.destination.segment_per_batch && segments.is_empty() {
            return Err(ExportJobError::Invalid(
                "segmentPerBatch needs filter.segments".into(),
            ));
        }
        for segment in segments {
            if segment.segment_ns != UPS_NAMESPACE {
                return Err(ExportJobError::Invalid(format!(
                    "segmentNs `{}`: segmentd evaluates the ups namespace only",
                    segment.segment_ns
                )));
            }
            if !all
                .iter()
                .any(|definition| definition.id == segment.segment_id)
            {
                return Err(ExportJobError::Invalid(format!(
                    "segment definition {} does not exist",
                    segment.segment_id
                )));
            }
        }
    } else if request.destination.segment_per_batch {
        return Err(ExportJobError::Invalid(
            "segmentPerBatch needs filter.segments".into(),
        ));
    }
    let requested_policy = request
        .merge_policy
        .as_ref()
        .and_then(|policy| policy.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let segment_policy = filter
        .segments
        .as_ref()
        .and_then(|segments| segments.first())
        .and_then(|segment| {
            all.iter()
                .find(|definition| definition.id == segment.segment_id)
        })
        .map(|definition| definition.merge_policy_id.clone());
    let (policy_id, _) = policies::resolve_blocking(
        &transaction,
        tenant,
        requested_policy.or(segment_policy).as_deref(),
    )
    .map_err(|error| ExportJobError::Invalid(error.to_string()))?;
    transaction.execute(
        "INSERT INTO export_jobs (org_id, sandbox, created_ms, status, body) VALUES (?1, ?2, ?3, 'NEW', '{}')",
        params![tenant.org_id, tenant.sandbox, now_ms],
    )?;
    let job = ExportJob {
        id: transaction.last_insert_rowid(),
        job_type: "BATCH".into(),
        ims_org_id: tenant.org_id.clone(),
        sandbox_name: tenant.sandbox.clone(),
        profile_instance_id: "ups".into(),
        status: ExportStatus::New,
        fields: request.fields.filter(|fields| !fields.trim().is_empty()),
        merge_policy: json!({"id": policy_id, "version": 1}),
        filter,
        destination: Destination {
            batch_id: None,
            ..request.destination
        },
        batches: Vec::new(),
        schema: request.schema,
        errors: Vec::new(),
        metrics: ExportMetrics {
            total_time: Timing {
                start_time_in_ms: Some(now_ms),
                ..Timing::default()
            },
            ..ExportMetrics::default()
        },
        creation_time: now_ms,
        update_time: now_ms,
    };
    write(transaction, tenant, &job)?;
    Ok(job)
}

fn write(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    job: &ExportJob,
) -> Result<(), ExportJobError> {
    connection.execute(
        "UPDATE export_jobs SET status = ?4, body = ?5 WHERE org_id = ?1 AND sandbox = ?2 AND id = ?3",
        params![tenant.org_id, tenant.sandbox, job.id, job.status.as_str(), serde_json::to_string(job)?],
    )?;
    Ok(())
}

/// Returns one job.
pub fn get_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: i64,
) -> Result<ExportJob, ExportJobError> {
    crate::store::metadata::get_document(connection, "export_jobs", tenant, id)?
        .ok_or_else(|| ExportJobError::NotFound(id.to_string()))
}

/// Returns a tenant's jobs, newest first.
pub fn list_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
) -> Result<Vec<ExportJob>, ExportJobError> {
    Ok(crate::store::metadata::list_documents(
        connection,
        "export_jobs",
        tenant,
        "created_ms DESC, id DESC",
    )?)
}

/// Applies `change` to a job in one transaction.
pub fn update_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: i64,
    now_ms: i64,
    change: impl FnOnce(&mut ExportJob),
) -> Result<ExportJob, ExportJobError> {
    let transaction = connection.transaction()?;
    let job = update_in(&transaction, tenant, id, now_ms, change)?;
    transaction.commit()?;
    Ok(job)
}

/// Applies `change` to a job inside the caller's transaction.
fn update_in(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: i64,
    now_ms: i64,
    change: impl FnOnce(&mut ExportJob),
) -> Result<ExportJob, ExportJobError> {
    let mut job = get_blocking(connection, tenant, id)?;
    change(&mut job);
    job.update_time = now_ms;
    write(connection, tenant, &job)?;
    Ok(job)
}

/// Returns jobs that did not finish (start-up runs them again).
pub fn unfinished_blocking(
    connection: &rusqlite::Connection,
) -> Result<Vec<(Tenant, i64)>, ExportJobError> {
    let mut statement =
        connection.prepare("SELECT org_id, sandbox, id FROM export_jobs WHERE status IN ('NEW', 'PROCESSING') ORDER BY id")?;
    let rows = statement.query_map([], |row| {
        Ok((
            Tenant::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?),
            row.get(2)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where an export batch's files live.
pub fn batch_dir(data_dir: &Path, batch_id: &str) -> PathBuf {
    data_dir.join("exports").join(batch_id)
}

/// The job's qualification-time window, parsed once (create validated both bounds).
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start: Option<DateTime<chrono::FixedOffset>>,
    end: Option<DateTime<chrono::FixedOffset>>,
}

impl Window {
    fn of(filter: &ExportFilter) -> Self {
        let window = filter.segment_qualification_time.as_ref();
        let bound =
            |time: Option<&String>| time.and_then(|time| DateTime::parse_from_rfc3339(time).ok());
        Self {
            start: bound(window.and_then(|window| window.start_time.as_ref())),
            end: bound(window.and_then(|window| window.end_time.as_ref())),
        }
    }

    /// Tells whether a `lastQualificationTime` lies in the window (bounds inclusive).
    fn contains(self, time: &str) -> bool {
        let Ok(time) = DateTime::parse_from_rfc3339(time) else {
            return false;
        };
        self.start.is_none_or(|start| time >= start) && self.end.is_none_or(|end| time <= end)
    }
}

/// Tells whether a profile's memberships pass the job's filter.
fn selected(
    filter: &ExportFilter,
    window: Window,
    memberships: &Memberships,
    segment: Option<&SegmentFilter>,
) -> bool {
    let member = |wanted: &SegmentFilter| {
        memberships
            .get(&wanted.segment_id)
            .is_some_and(|membership| {
                wanted.status.contains(&membership.status)
                    && window.contains(&membership.last_qualification_time)
            })
    };
    match (segment, &filter.segments) {
        (Some(one), _) => member(one),
        (None, Some(segments)) => segments.iter().any(member),
        (None, None) => true,
    }
}

/// Runs an export job to the end; returns the finished job. Blocking.
pub fn run_blocking(
    metadata: &crate::store::metadata::MetadataStore,
    profiles: &ProfileStore,
    memberships: &MembershipStore,
    data_dir: &Path,
    tenant: &Tenant,
    id: i64,
    now: impl Fn() -> i64,
    cancelled: &dyn Fn() -> bool,
) -> Result<ExportJob, ExportJobError> {
    let started = now();
    let job = metadata.call_blocking(|connection| {
        Ok(update_blocking(connection, tenant, id, started, |job| {
            job.status = ExportStatus::Processing;
            job.metrics.profile_export_time = Timing {
                start_time_in_ms: Some(started),
                ..Timing::default()
            };
        }))
    })??;
    match export(
        metadata,
        profiles,
        memberships,
        data_dir,
        tenant,
        &job,
        &now,
        cancelled,
    ) {
        Ok(finished) => Ok(finished),
        Err(message) => metadata.call_blocking(|connection| {
            Ok(update_blocking(connection, tenant, id, now(), |job| {
                if cancelled() {
                    job.status = ExportStatus::Cancelled;
                } else {
                    job.status = ExportStatus::Failed;
                    job.errors.push(JobError {
                        code: "0090000009".into(),
                        msg: message,
                    });
                }
                let end = now();
                job.metrics.total_time.finish(end);
            }))
        })?,
    }
}

/// One output batch: its id, the segment it holds (segment-per-batch), and its writer.
struct Output {
    batch_id: String,
    segment: Option<SegmentFilter>,
    writer: ExportWriter,
    rows: u64,
}

fn export(
    metadata: &crate::store::metadata::MetadataStore,
    profiles: &ProfileStore,
    memberships: &MembershipStore,
    data_dir: &Path,
    tenant: &Tenant,
    job: &ExportJob,
    now: &impl Fn() -> i64,
    cancelled: &dyn Fn() -> bool,
) -> Result<ExportJob, String> {
    let policy_id = job.merge_policy["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, policy) = metadata
        .call_blocking(|connection| {
            Ok(policies::resolve_blocking(
                connection,
                tenant,
                Some(&policy_id),
            ))
        })
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let segments: Vec<Option<SegmentFilter>> =
        match (&job.filter.segments, job.destination.segment_per_batch) {
            (Some(segments), true) => segments.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
    let created = now();
    let mut outputs = Vec::new();
    for segment in segments {
        let batch = metadata
            .call_blocking(|connection| {
                let new = NewBatch {
                    dataset_id: job.destination.dataset_id.clone(),
                    input_format: InputFormat {
                        format: FileFormat::Parquet,
                        is_multi_line_json: false,
                    },
                    external_id: Some(format!("export-job-{}", job.id)),
                    tags: Default::default(),
                    created_client: "export-job".into(),
                };
                batches::create_batch_blocking(connection, tenant, new, created)
            })
            .map_err(|error| error.to_string())?;
        let dir = batch_dir(data_dir, &batch.id);
        std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
        let writer = ExportWriter::create(&dir, "part", ExportOptions::default())
            .map_err(|error| error.to_string())?;
        outputs.push(Output {
            batch_id: batch.id,
            segment,
            writer,
            rows: 0,
        });
    }
    let stored_memberships = memberships
        .snapshot(tenant)
        .map_err(|error| error.to_string())?;
    let fields = job
        .fields
        .as_deref()
        .map(projection::parse_fields)
        .unwrap_or_default();
    let include_empty = job.filter.empty_profiles == Some(true);
    let window = Window::of(&job.filter);
    let mut by_namespace: BTreeMap<String, u64> = BTreeMap::new();
    let mut exported = 0u64;
    let mut failure = None;
    profiles
        .scan(tenant, &policy, |profile| {
            if failure.is_some() {
                return;
            }
            if cancelled() {
                failure = Some("Job cancelled.".to_owned());
                return;
            }
            let Some(profile_xid) = profile.xid() else {
                return;
            };
            // A profile with no record fragment has only its rebuilt identityMap as attributes.
            let has_record = profile
                .attributes
                .as_object()
                .is_some_and(|object| object.keys().any(|key| key != "identityMap"));
            if !has_record && !include_empty {
                return;
            }
            let memberships = match stored_memberships.get(&profile_xid) {
                Ok(memberships) => memberships,
                Err(error) => {
                    failure = Some(error.to_string());
                    return;
                }
            };
            let mut counted = false;
            for output in &mut outputs {
                if !selected(&job.filter, window, &memberships, output.segment.as_ref()) {
                    continue;
                }
                let mut row = projection::project(&profile.attributes, &fields);
                if let Some(identity_map) = profile.attributes.get("identityMap") {
                    row["identityMap"] = identity_map.clone();
                }
                if !memberships.is_empty() {
                    row["segmentMembership"] = json!({UPS_NAMESPACE: &memberships});
                }
                if let Err(error) = output.writer.write_row(row) {
                    failure = Some(error.to_string());
                    return;
                }
                output.rows += 1;
                counted = true;
            }
            if counted {
                exported += 1;
                let mut namespaces: Vec<&str> = profile
                    .identities
                    .iter()
                    .map(|identity| identity.namespace.as_str())
                    .collect();
                namespaces.sort_unstable();
                namespaces.dedup();
                for namespace in namespaces {
                    *by_namespace.entry(namespace.to_owned()).or_default() += 1;
                }
            }
        })
        .map_err(|error| error.to_string())?;
    if let Some(failure) = failure {
        // The writers are dropped here: their temporary files are deleted and the batches stay in
        // `loading`, which Data Access never lists.
        return Err(failure);
    }
    let export_done = now();
    let mut written = Vec::new();
    for output in outputs {
        let files = output.writer.finish().map_err(|error| error.to_string())?;
        written.push((
            output.batch_id,
            output.segment,
            output.rows,
            files.iter().map(|file| file.bytes).sum::<u64>(),
            files.len(),
        ));
    }
    let write_done = now();
    // Publication: every batch becomes visible, and the previous exports of the same dataset and
    // segments are superseded, in one metadata transaction.
    let segment_key = serde_json::to_string(&job.filter.segments).unwrap_or_default();
    metadata
        .call_blocking(|connection| {
            let transaction = connection.transaction()?;
            let superseded: Vec<String> = {
                let mut statement = transaction.prepare(
                    "SELECT id FROM export_batches WHERE org_id = ?1 AND sandbox = ?2 AND dataset_id = ?3 AND segments = ?4",
                )?;
                let rows = statement.query_map(params![tenant.org_id, tenant.sandbox, job.destination.dataset_id, segment_key], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for old in &superseded {
                batches::transition_in(&transaction, tenant, old, |status| status == BatchStatus::Success, |batch| batch.status = BatchStatus::Inactive)?;
            }
            transaction.execute(
                "DELETE FROM export_batches WHERE org_id = ?1 AND sandbox = ?2 AND dataset_id = ?3 AND segments = ?4",
                params![tenant.org_id, tenant.sandbox, job.destination.dataset_id, segment_key],
            )?;
            for (batch_id, _, rows, bytes, files) in &written {
                batches::transition_in(&transaction, tenant, batch_id, |status| status == BatchStatus::Loading, |batch| {
                    batch.status = BatchStatus::Success;
                    batch.metrics.output_record_count = *rows;
                    batch.metrics.input_byte_size = *bytes;
                    batch.metrics.input_file_count = *files as u64;
                    batch.completed = Some(write_done);
                    batch.updated = write_done;
                })?;
                transaction.execute(
                    "INSERT INTO export_batches (org_id, sandbox, id, dataset_id, segments) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![tenant.org_id, tenant.sandbox, batch_id, job.destination.dataset_id, segment_key],
                )?;
            }
            let finished = update_in(&transaction, tenant, job.id, write_done, |job| {
                job.status = ExportStatus::Succeeded;
                job.metrics.total_exported_profile_counter = exported;
                job.metrics.exported_profile_by_namespace_counter = by_namespace;
                job.metrics.profile_export_time.finish(export_done);
                job.metrics.acp_dataset_write_time = Timing { start_time_in_ms: Some(export_done), ..Timing::default() };
                job.metrics.acp_dataset_write_time.finish(write_done);
                job.metrics.total_time.finish(write_done);
                if job.destination.segment_per_batch {
                    job.batches = written
                        .iter()
                        .map(|(batch_id, segment, _, _, _)| {
                            let segment = segment.as_ref().expect("segment-per-batch outputs name their segment");
                            json!({"segmentId": segment.segment_id, "segmentNs": segment.segment_ns, "status": segment.status, "batchId": batch_id})
                        })
                        .collect();
                } else {
                    job.destination.batch_id = written.first().map(|(batch_id, ..)| batch_id.clone());
                }
            });
            let finished = finished.map_err(|error| StoreError::Task(error.to_string()))?;
            transaction.commit()?;
            Ok(finished)
        })
        .map_err(|error| error.to_string())
}
