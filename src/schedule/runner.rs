//! Fires active schedules: a loop that, on every tick, compares each active schedule's next fire time
//! with the injected clock and creates the scheduled segment job or export job.
//!
//! Rules: the next fire time is computed after the later of the last fire and the last update (so a
//! schedule activated today does not fire for yesterday); when one or more fire times passed while the
//! service was down, the schedule fires **once** (not once per missed time); and a schedule whose
//! previous job is still running skips the fire. Schedules live in the metadata store, so a restart
//! re-arms them by reading it. Reading the clock on each tick (rather than sleeping until a computed
//! instant) is what lets tests move an injected clock instead of waiting real hours.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::export::jobs as export_jobs;
use crate::export::runner::ExportRunner;
use crate::jobs::runner::SegmentJobRunner;
use crate::jobs::segment::{self, JobOrigin, JobSelection};
use crate::schedule::schedules::{self, Schedule, ScheduleError, ScheduleType, check_timing};
use crate::store::metadata::{MetadataStore, StoreError};
use crate::tenant::Tenant;

/// How often the loop looks at the clock.
const TICK: Duration = Duration::from_millis(250);

/// The schedule loop's handles.
#[derive(Clone)]
pub struct ScheduleRunner {
    metadata: MetadataStore,
    segment_jobs: SegmentJobRunner,
    exports: ExportRunner,
    clock: Arc<dyn Clock>,
    shutting_down: CancellationToken,
}

/// When a schedule should next fire, given its history.
pub fn next_fire(schedule: &Schedule) -> Result<Option<DateTime<Utc>>, ScheduleError> {
    let (cron, zone) = check_timing(&schedule.schedule, &schedule.time_zone)?;
    let updated = DateTime::from_timestamp(schedule.update_epoch, 0).unwrap_or_default();
    let last_fire = schedule
        .last_fire_time
        .as_deref()
        .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
        .map(|time| time.with_timezone(&Utc));
    let base = last_fire.map_or(updated, |fired| fired.max(updated));
    Ok(cron.next_after(base, zone))
}

impl ScheduleRunner {
    /// Creates the loop.
    pub fn new(
        metadata: MetadataStore,
        segment_jobs: SegmentJobRunner,
        exports: ExportRunner,
        clock: Arc<dyn Clock>,
        shutting_down: CancellationToken,
    ) -> Self {
        Self {
            metadata,
            segment_jobs,
            exports,
            clock,
            shutting_down,
        }
    }

    /// Runs until shutdown.
    pub async fn run(self) {
        loop {
            if let Err(error) = self.tick().await {
                tracing::error!(%error, "schedule tick failed");
            }
            tokio::select! {
                () = self.shutting_down.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Fires every due schedule once; returns how many created a job.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let fired = self
            .metadata
            .call(move |connection| {
                fire_due(connection, now).map_err(|error| StoreError::Task(error.to_string()))
            })
            .await?;
        for job in &fired {
            match job {
                Fired::Segment => self.segment_jobs.notify(),
                Fired::Export(tenant, id) => self.exports.start(tenant.clone(), *id),
            }
        }
        Ok(fired.len())
    }
}

/// A job a schedule created, to hand to its runner once the transaction is committed.
enum Fired {
    /// A segment job (the segment runner picks it up when woken).
    Segment,
    /// An export job to start.
    Export(Tenant, i64),
}

/// Tells whether the job a schedule created last is still running.
fn still_running(connection: &rusqlite::Connection, tenant: &Tenant, schedule: &Schedule) -> bool {
    let Some(job_id) = &schedule.last_job_id else {
        return false;
    };
    match schedule.schedule_type {
        ScheduleType::BatchSegmentation => segment::get_blocking(connection, tenant, job_id)
            .is_ok_and(|job| !job.status.is_final()),
        ScheduleType::Export => job_id
            .parse()
            .ok()
            .and_then(|id| export_jobs::get_blocking(connection, tenant, id).ok())
            .is_some_and(|job| {
                matches!(
                    job.status,
                    export_jobs::ExportStatus::New | export_jobs::ExportStatus::Processing
                )
            }),
    }
}

/// Creates the job of one due schedule inside `transaction`; returns it, or None when it failed.
fn create_job(
    transaction: &rusqlite::Connection,
    tenant: &Tenant,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Option<(String, Fired)> {
    let now_ms = now.timestamp_millis();
    match schedule.schedule_type {
        ScheduleType::BatchSegmentation => {
            let segments: Vec<String> = schedule.properties["segments"]
                .as_array()
                .map(|segments| {
                    segments
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let selection = if segments.is_empty() || segments.iter().any(|segment| segment == "*")
            {
                JobSelection::All
            } else {
                JobSelection::Ids(segments)
            };
            let mut properties = serde_json::Map::new();
            properties.insert("scheduleId".into(), json!(schedule.id));
            properties.insert("runId".into(), json!(uuid::Uuid::new_v4().to_string()));
            let origin = JobOrigin {
                source: "scheduler".into(),
                properties,
                request_id: format!("{}-{now_ms}", schedule.id),
            };
            match segment::create_in(transaction, tenant, selection, origin, now_ms) {
                Ok(job) => Some((job.id, Fired::Segment)),
                Err(error) => {
                    tracing::warn!(schedule_id = schedule.id, %error, "scheduled segment job could not be created");
                    None
                }
            }
        }
        ScheduleType::Export => {
            let created = serde_json::from_value(schedule.properties.clone())
                .map_err(|error| error.to_string())
                .and_then(|request| {
                    export_jobs::create_in(transaction, tenant, request, now_ms)
                        .map_err(|error| error.to_string())
                });
            match created {
                Ok(job) => Some((job.id.to_string(), Fired::Export(tenant.clone(), job.id))),
                Err(error) => {
                    tracing::warn!(schedule_id = schedule.id, %error, "scheduled export job could not be created");
                    None
                }
            }
        }
    }
}

fn fire_due(
    connection: &mut rusqlite::Connection,
    now: DateTime<Utc>,
) -> Result<Vec<Fired>, ScheduleError> {
    let mut fired = Vec::new();
    for (tenant, schedule) in schedules::active_blocking(connection)? {
        let due = match next_fire(&schedule) {
            Ok(Some(next)) => next <= now,
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(schedule_id = schedule.id, %error, "schedule cannot be evaluated");
                false
            }
        };
        if !due {
            continue;
        }
        let transaction = connection.transaction()?;
        let mut schedule = schedules::get_blocking(&transaction, &tenant, &schedule.id)?;
        schedule.last_fire_time = Some(now.to_rfc3339());
        if still_running(&transaction, &tenant, &schedule) {
            tracing::info!(
                schedule_id = schedule.id,
                "previous scheduled run still in progress; skipping this fire"
            );
        } else if let Some((job_id, job)) = create_job(&transaction, &tenant, &schedule, now) {
            schedule.last_job_id = Some(job_id);
            fired.push(job);
        }
        schedules::write_blocking(&transaction, &tenant, &schedule)?;
        transaction.commit()?;
    }
    Ok(fired)
}
