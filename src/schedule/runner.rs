//! Fires active schedules: a loop that, on every tick, compares each active schedule's next fire time
//! with the injected clock and creates the scheduled segment job.
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
use crate::jobs::runner::SegmentJobRunner;
use crate::jobs::segment::{self, JobOrigin, JobSelection};
use crate::schedule::schedules::{self, Schedule, ScheduleError, check_timing};
use crate::store::metadata::{MetadataStore, StoreError};

/// How often the loop looks at the clock.
const TICK: Duration = Duration::from_millis(250);

/// The schedule loop's handles.
#[derive(Clone)]
pub struct ScheduleRunner {
    metadata: MetadataStore,
    segment_jobs: SegmentJobRunner,
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
        clock: Arc<dyn Clock>,
        shutting_down: CancellationToken,
    ) -> Self {
        Self {
            metadata,
            segment_jobs,
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
        if fired > 0 {
            self.segment_jobs.notify();
        }
        Ok(fired)
    }
}

fn fire_due(
    connection: &mut rusqlite::Connection,
    now: DateTime<Utc>,
) -> Result<usize, ScheduleError> {
    let mut fired = 0;
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
        let previous_running = match &schedule.last_job_id {
            Some(job_id) => match segment::get_blocking(&transaction, &tenant, job_id) {
                Ok(job) => !job.status.is_final(),
                Err(_) => false,
            },
            None => false,
        };
        schedule.last_fire_time = Some(now.to_rfc3339());
        if previous_running {
            tracing::info!(
                schedule_id = schedule.id,
                "previous scheduled run still in progress; skipping this fire"
            );
        } else {
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
            let run_id = uuid::Uuid::new_v4().to_string();
            let mut properties = serde_json::Map::new();
            properties.insert("scheduleId".into(), json!(schedule.id));
            properties.insert("runId".into(), json!(run_id));
            let origin = JobOrigin {
                source: "scheduler".into(),
                properties,
                request_id: format!("{}-{}", schedule.id, now.timestamp_millis()),
            };
            match segment::create_in(
                &transaction,
                &tenant,
                selection,
                origin,
                now.timestamp_millis(),
            ) {
                Ok(job) => {
                    schedule.last_job_id = Some(job.id);
                    fired += 1;
                }
                Err(error) => {
                    tracing::warn!(schedule_id = schedule.id, %error, "scheduled job could not be created")
                }
            }
        }
        schedules::write_blocking(&transaction, &tenant, &schedule)?;
        transaction.commit()?;
    }
    Ok(fired)
}
