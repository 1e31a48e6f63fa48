//! Schedules (`api.md` §6): stored definitions of when to run segment jobs, with the classic rules
//! enforced at write time.
//!
//! Rules (each refusal names it): at most one `batch_segmentation` schedule per organization and
//! sandbox ([`ScheduleError::OnePerSandbox`], 409); the cron expression fires at most once in any 24 hours
//! (400); scheduled evaluation needs at most five merge policies in the sandbox (422). Cron text is
//! Quartz, validated and normalised by [`QuartzCron`]; times are UTC unless the schedule stores an
//! IANA `timeZone` (a segmentd extension), in which case daylight-saving changes are followed.
//! Updates are RFC 6902 JSON Patch limited to `/state` and `/schedule` (and `/timeZone`), applied
//! atomically: a patch with one bad operation changes nothing.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::profile::policies::{self, SandboxInfo};
use crate::schedule::cron::QuartzCron;
use crate::store::metadata::StoreError;
use crate::tenant::Tenant;

/// The schedule used when a create names none: daily at 01:00 UTC, as Adobe's examples.
pub const DEFAULT_CRON: &str = "0 0 1 * * ?";
/// Merge policies a sandbox may have for scheduled evaluation.
pub const MAX_SCHEDULED_POLICIES: usize = 5;

/// Whether a schedule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleState {
    /// Fires at its times.
    Active,
    /// Never fires.
    Inactive,
}

/// What a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleType {
    /// A segment job over `properties.segments`.
    BatchSegmentation,
    /// An export job with the parameters in `properties` (the body of `POST /export/jobs`).
    Export,
}

/// The body of `POST /config/schedules`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSchedule {
    /// Display name.
    pub name: String,
    /// `batch_segmentation` (or `export`).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub schedule_type: ScheduleType,
    /// `{"segments": ["*"]}` or a list of definition ids.
    #[schema(value_type = Object)]
    pub properties: Value,
    /// Quartz cron; default `0 0 1 * * ?`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `active` or `inactive` (default).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub state: Option<ScheduleState>,
    /// Extension: IANA time zone of the cron fields (default UTC).
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// The id.
    pub id: String,
    /// Owning organization.
    pub ims_org_id: String,
    /// Owning sandbox.
    pub sandbox: SandboxInfo,
    /// Display name.
    pub name: String,
    /// What it runs.
    #[serde(rename = "type")]
    pub schedule_type: ScheduleType,
    /// Segments (and export parameters).
    pub properties: Value,
    /// Normalised Quartz cron.
    pub schedule: String,
    /// IANA time zone of the cron fields.
    pub time_zone: String,
    /// Whether it fires.
    pub state: ScheduleState,
    /// Creation, Unix s.
    pub create_epoch: i64,
    /// Last update, Unix s.
    pub update_epoch: i64,
    /// Extension: the last time it fired (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fire_time: Option<String>,
    /// Extension: the id of the last job it created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_id: Option<String>,
}

/// Why a schedule write was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Invalid content.
    #[error("{0}")]
    Invalid(String),
    /// The sandbox already has a schedule.
    #[error("this organization and sandbox already have a schedule ({0}); only one is allowed")]
    OnePerSandbox(String),
    /// Too many merge policies for scheduled evaluation.
    #[error(
        "scheduled evaluation needs at most {MAX_SCHEDULED_POLICIES} merge policies in the sandbox; it has {0}"
    )]
    TooManyPolicies(usize),
    /// No such schedule.
    #[error("schedule {0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ScheduleError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

impl From<serde_json::Error> for ScheduleError {
    fn from(error: serde_json::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Validates cron text and time zone; returns the normalised cron.
pub fn check_timing(
    cron: &str,
    time_zone: &str,
) -> Result<(QuartzCron, chrono_tz::Tz), ScheduleError> {
    let parsed = QuartzCron::parse(cron).map_err(|error| {
        ScheduleError::Invalid(format!("schedule `{cron}` is invalid: {error}"))
    })?;
    if parsed.fires_more_than_once_per(chrono::TimeDelta::days(1)) {
        return Err(ScheduleError::Invalid(format!(
            "schedule `{cron}` fires more than once in 24 hours; a segment job can be scheduled at most once a day"
        )));
    }
    let zone: chrono_tz::Tz = time_zone.parse().map_err(|_| {
        ScheduleError::Invalid(format!("timeZone `{time_zone}` is not an IANA time zone"))
    })?;
    Ok((parsed, zone))
}

/// Checks `properties`: for `batch_segmentation`, `segments` is `["*"]` or definition ids; for
/// `export`, the properties are an export job request (validated fully again at each fire time, since
/// datasets and definitions may change in between).
fn check_properties(schedule_type: ScheduleType, properties: &Value) -> Result<(), ScheduleError> {
    if schedule_type == ScheduleType::Export {
        return serde_json::from_value::<crate::export::jobs::NewExportJob>(properties.clone())
            .map(drop)
            .map_err(|error| {
                ScheduleError::Invalid(format!("properties must be an export job request: {error}"))
            });
    }
    let segments = properties
        .get("segments")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ScheduleError::Invalid(
                "properties.segments is required: [\"*\"] or definition ids".into(),
            )
        })?;
    if segments.iter().any(|segment| !segment.is_string()) {
        return Err(ScheduleError::Invalid(
            "properties.segments must hold strings".into(),
        ));
    }
    Ok(())
}

/// Returns one schedule.
pub fn get_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Schedule, ScheduleError> {
    crate::store::metadata::get_document(connection, "schedules", tenant, id)?
        .ok_or_else(|| ScheduleError::NotFound(id.to_owned()))
}

/// Returns a tenant's schedules, oldest first.
pub fn list_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
) -> Result<Vec<Schedule>, ScheduleError> {
    Ok(crate::store::metadata::list_documents(
        connection,
        "schedules",
        tenant,
        "created_s, id",
    )?)
}

/// Returns every active schedule with its tenant (for the runner).
pub fn active_blocking(
    connection: &rusqlite::Connection,
) -> Result<Vec<(Tenant, Schedule)>, ScheduleError> {
    let mut statement =
        connection.prepare("SELECT org_id, sandbox, body FROM schedules ORDER BY created_s, id")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut active = Vec::new();
    for row in rows {
        let (org, sandbox, body) = row?;
        let schedule: Schedule = serde_json::from_str(&body)?;
        if schedule.state == ScheduleState::Active {
            active.push((Tenant::new(org, sandbox), schedule));
        }
    }
    Ok(active)
}

/// Writes a schedule (insert or replace).
pub fn write_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    schedule: &Schedule,
) -> Result<(), ScheduleError> {
    connection.execute(
        "INSERT INTO schedules (org_id, sandbox, id, created_s, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (org_id, sandbox, id) DO UPDATE SET body = excluded.body",
        params![
            tenant.org_id,
            tenant.sandbox,
            schedule.id,
            schedule.create_epoch,
            serde_json::to_string(schedule)?
        ],
    )?;
    Ok(())
}

fn check_policy_count(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
) -> Result<(), ScheduleError> {
    let count = policies::list_blocking(connection, tenant)
        .map_err(|error| ScheduleError::Invalid(error.to_string()))?
        .len();
    if count > MAX_SCHEDULED_POLICIES {
        return Err(ScheduleError::TooManyPolicies(count));
    }
    Ok(())
}

/// Creates a schedule.
pub fn create_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    request: NewSchedule,
    now_s: i64,
) -> Result<Schedule, ScheduleError> {
    if request.name.trim().is_empty() {
        return Err(ScheduleError::Invalid("name must not be empty".into()));
    }
    check_properties(request.schedule_type, &request.properties)?;
    let time_zone = request.time_zone.unwrap_or_else(|| "UTC".into());
    let (cron, _) = check_timing(
        request.schedule.as_deref().unwrap_or(DEFAULT_CRON),
        &time_zone,
    )?;
    let transaction = connection.transaction()?;
    // The one-per-sandbox rule is the classic batch segmentation schedule's (`api.md` §6).
    let classic = list_blocking(&transaction, tenant)?
        .into_iter()
        .find(|existing| existing.schedule_type == ScheduleType::BatchSegmentation);
    if let (ScheduleType::BatchSegmentation, Some(existing)) = (request.schedule_type, classic) {
        return Err(ScheduleError::OnePerSandbox(existing.id));
    }
    check_policy_count(&transaction, tenant)?;
    let schedule = Schedule {
        id: uuid::Uuid::new_v4().to_string(),
        ims_org_id: tenant.org_id.clone(),
        sandbox: SandboxInfo::of(tenant),
        name: request.name,
        schedule_type: request.schedule_type,
        properties: request.properties,
        schedule: cron.to_string(),
        time_zone,
        state: request.state.unwrap_or(ScheduleState::Inactive),
        create_epoch: now_s,
        update_epoch: now_s,
        last_fire_time: None,
        last_job_id: None,
    };
    write_blocking(&transaction, tenant, &schedule)?;
    transaction.commit()?;
    Ok(schedule)
}

/// Paths a JSON Patch may touch.
const PATCHABLE: &[&str] = &["/state", "/schedule", "/timeZone"];

/// Applies an RFC 6902 patch atomically; only `/state`, `/schedule` and `/timeZone` may change.
pub fn patch_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
    operations: Value,
    now_s: i64,
) -> Result<Schedule, ScheduleError> {
    let patch: json_patch::Patch = serde_json::from_value(operations).map_err(|error| {
        ScheduleError::Invalid(format!("the body is not a JSON Patch: {error}"))
    })?;
    for operation in &patch.0 {
        let path = operation_path(operation);
        let allowed = matches!(
            operation,
            json_patch::PatchOperation::Add(_) | json_patch::PatchOperation::Replace(_)
        ) && PATCHABLE.contains(&path.as_str());
        if !allowed {
            return Err(ScheduleError::Invalid(format!(
                "operation on `{path}` is not allowed: use add or replace on {}",
                PATCHABLE.join(", ")
            )));
        }
    }
    let transaction = connection.transaction()?;
    let current = get_blocking(&transaction, tenant, id)?;
    let mut document = serde_json::to_value(&current)?;
    json_patch::patch(&mut document, &patch)
        .map_err(|error| ScheduleError::Invalid(format!("the patch cannot be applied: {error}")))?;
    let mut updated: Schedule = serde_json::from_value(document).map_err(|error| {
        ScheduleError::Invalid(format!("the patched schedule is invalid: {error}"))
    })?;
    let (cron, _) = check_timing(&updated.schedule, &updated.time_zone)?;
    if updated.state == ScheduleState::Active {
        check_policy_count(&transaction, tenant)?;
    }
    updated.schedule = cron.to_string();
    updated.update_epoch = now_s;
    write_blocking(&transaction, tenant, &updated)?;
    transaction.commit()?;
    Ok(updated)
}

fn operation_path(operation: &json_patch::PatchOperation) -> String {
    use json_patch::PatchOperation::*;
    match operation {
        Add(op) => op.path.to_string(),
        Remove(op) => op.path.to_string(),
        Replace(op) => op.path.to_string(),
        Move(op) => op.path.to_string(),
        Copy(op) => op.path.to_string(),
        Test(op) => op.path.to_string(),
    }
}

/// Deletes a schedule.
pub fn delete_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<(), ScheduleError> {
    let deleted = connection.execute(
        "DELETE FROM schedules WHERE org_id = ?1 AND sandbox = ?2 AND id = ?3",
        params![tenant.org_id, tenant.sandbox, id],
    )?;
    if deleted == 0 {
        return Err(ScheduleError::NotFound(id.to_owned()));
    }
    Ok(())
}

/// Returns the ids of schedules that name a segment definition (a definition in use cannot be deleted).
pub fn naming_segment_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    segment_id: &str,
) -> Result<Vec<String>, StoreError> {
    let schedules =
        list_blocking(connection, tenant).map_err(|error| StoreError::Task(error.to_string()))?;
    Ok(schedules
        .into_iter()
        .filter(|schedule| {
            schedule.properties["segments"]
                .as_array()
                .is_some_and(|segments| segments.iter().any(|segment| segment == segment_id))
        })
        .map(|schedule| schedule.id)
        .collect())
}
