//! The segment job runner: one loop that takes the oldest queued job, evaluates it on the blocking
//! pool, and records the outcome; it wakes on a signal (a job was queued or cancelled) or every
//! second.
//!
//! When no job is waiting, the loop refreshes the columnar snapshot ([`ColumnarSnapshots`]) of
//! every tenant whose profiles changed and then stayed quiet for [`REFRESH_QUIET`], for the merge
//! policies its definitions use, so the next job reads current partitions instead of rebuilding
//! them. A refresh gives way (between partitions) as soon as a job is queued or the service stops;
//! the job rebuilds whatever is still stale, so a refresh is only ever an optimisation.
//!
//! Crash and shutdown rules: a job found `PROCESSING` at start-up is queued again and re-run (its
//! memberships are only written when it succeeds, so a re-run is safe); a job cancelled while queued
//! or running ends `CANCELLED` with memberships unchanged; at shutdown the running job is interrupted
//! and queued again for the next start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashSet;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::jobs::segment::{self, EvaluationInput, JobError, JobStatus};
use crate::snapshot::ColumnarSnapshots;
use crate::store::membership::MembershipStore;
use crate::store::metadata::MetadataStore;
use crate::store::profiles::ProfileStore;
use crate::tenant::Tenant;

/// The runner's shared handles; cheap to clone.
#[derive(Clone)]
pub struct SegmentJobRunner {
    metadata: MetadataStore,
    profiles: Arc<ProfileStore>,
    snapshots: ColumnarSnapshots,
    memberships: Arc<MembershipStore>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// Set when a job is queued or cancelled: a snapshot refresh in progress gives way.
    job_waiting: Arc<AtomicBool>,
    cancel_requests: Arc<DashSet<String>>,
    shutting_down: CancellationToken,
}

/// How long a tenant's profiles must stay unchanged before its snapshot is refreshed, so a burst
/// of batches or streamed records is followed by one refresh, not one per write.
pub const REFRESH_QUIET: Duration = Duration::from_secs(2);

impl SegmentJobRunner {
    /// Creates the runner.
    pub fn new(
        metadata: MetadataStore,
        profiles: Arc<ProfileStore>,
        snapshots: ColumnarSnapshots,
        memberships: Arc<MembershipStore>,
        clock: Arc<dyn Clock>,
        shutting_down: CancellationToken,
    ) -> Self {
        Self {
            metadata,
            profiles,
            snapshots,
            memberships,
            clock,
            wake: Arc::new(Notify::new()),
            job_waiting: Arc::new(AtomicBool::new(false)),
            cancel_requests: Arc::new(DashSet::new()),
            shutting_down,
        }
    }

    /// Returns the membership store (profile access reads it).
    pub fn memberships(&self) -> &Arc<MembershipStore> {
        &self.memberships
    }

    /// Wakes the loop: a job was queued.
    pub fn notify(&self) {
        self.job_waiting.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Marks a job for cancellation; the loop finishes it as `CANCELLED`.
    pub fn request_cancel(&self, job_id: &str) {
        self.cancel_requests.insert(job_id.to_owned());
        self.notify();
    }

    /// Queues again every job a previous process left `PROCESSING`; returns how many.
    pub async fn recover(&self) -> Result<usize, segment::JobErrorKind> {
        let now_ms = self.clock.now().timestamp_millis();
        self.metadata
            .call(move |connection| {
                let mut recovered = 0;
                while let Some((tenant, id)) =
                    segment::oldest_with_status_blocking(connection, &[JobStatus::Processing])
                        .map_err(|error| {
                            crate::store::metadata::StoreError::Task(error.to_string())
                        })?
                {
                    segment::update_blocking(connection, &tenant, &id, now_ms, |job| {
                        job.status = JobStatus::Queued;
                        job.metrics.profile_segmentation_time = Default::default();
                        job.metrics.profiles_processed_so_far = None;
                    })
                    .map_err(|error| crate::store::metadata::StoreError::Task(error.to_string()))?;
                    recovered += 1;
                }
                Ok(recovered)
            })
            .await
            .map_err(Into::into)
    }

    /// Runs until shutdown.
    pub async fn run(self) {
        loop {
            loop {
                self.job_waiting.store(false, Ordering::Relaxed);
                match self.run_next().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::error!(%error, "segment job runner error");
                        break;
                    }
                }
            }
            self.refresh_snapshots().await;
            self.reclaim_segments().await;
            tokio::select! {
                () = self.shutting_down.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Refreshes the snapshots of the tenants whose profiles changed and then stayed quiet.
    async fn refresh_snapshots(&self) {
        for tenant in self.profiles.take_quiet_tenants(REFRESH_QUIET) {
            if self.job_waiting.load(Ordering::Relaxed) || self.shutting_down.is_cancelled() {
                return;
            }
            let runner = self.clone();
            let refreshed = tokio::task::spawn_blocking(move || {
                let policies = runner
                    .metadata
                    .call_blocking(|connection| Ok(segment::policies_in_use(connection, &tenant)));
                match policies {
                    Ok(Ok(policies)) => runner.refresh_blocking(&tenant, &policies),
                    Ok(Err(error)) => Err(error),
                    Err(error) => Err(error.to_string()),
                }
            })
            .await;
            match refreshed {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "cannot refresh a columnar snapshot"),
                Err(error) => tracing::warn!(%error, "columnar snapshot refresh ended abnormally"),
            }
        }
    }

    /// Gives back the disk space of dead event chunks once half of a segment file is dead
    /// (`ProfileStore::reclaim_segments`); a check of a read snapshot when there is none.
    async fn reclaim_segments(&self) {
        let profiles = self.profiles.clone();
        match tokio::task::spawn_blocking(move || profiles.reclaim_segments()).await {
            Ok(Ok(report)) if report.segments_removed > 0 => tracing::info!(
                segments_removed = report.segments_removed,
                bytes_removed = report.bytes_removed,
                bytes_moved = report.bytes_moved,
                "reclaimed event segment space"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot reclaim event segment space"),
            Err(error) => tracing::warn!(%error, "event segment reclaim ended abnormally"),
        }
    }

    fn refresh_blocking(
        &self,
        tenant: &Tenant,
        policies: &[crate::store::profiles::MergePolicy],
    ) -> Result<(), String> {
        let workers = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let give_way =
            || self.job_waiting.load(Ordering::Relaxed) || self.shutting_down.is_cancelled();
        for policy in policies {
            let stats = self
                .snapshots
                .refresh(&self.profiles, tenant, policy, workers, &give_way)
                .map_err(|error| error.to_string())?;
            tracing::debug!(
                partitions_built = stats.partitions_built,
                partitions_read = stats.partitions_read,
                "refreshed a columnar snapshot"
            );
        }
        Ok(())
    }

    /// Runs the oldest pending job, if any; returns whether there was one.
    pub async fn run_next(&self) -> Result<bool, segment::JobErrorKind> {
        if self.shutting_down.is_cancelled() {
            return Ok(false);
        }
        let next = self
            .metadata
            .call(|connection| {
                segment::oldest_with_status_blocking(
                    connection,
                    &[JobStatus::New, JobStatus::Queued, JobStatus::Cancelling],
                )
                .map_err(|error| crate::store::metadata::StoreError::Task(error.to_string()))
            })
            .await?;
        let Some((tenant, id)) = next else {
            return Ok(false);
        };
        let runner = self.clone();
        tokio::task::spawn_blocking(move || runner.run_blocking(&tenant, &id))
            .await
            .map_err(|error| crate::store::metadata::StoreError::Task(error.to_string()))??;
        Ok(true)
    }

    fn run_blocking(&self, tenant: &Tenant, id: &str) -> Result<(), segment::JobErrorKind> {
        let now = self.clock.now();
        let now_ms = now.timestamp_millis();
        let job = self
            .metadata
            .call_blocking(|connection| Ok(segment::get_blocking(connection, tenant, id)))??;
        if job.status == JobStatus::Cancelling || self.cancel_requests.remove(id).is_some() {
            return self.finish(tenant, id, |job| job.status = JobStatus::Cancelled);
        }
        self.metadata.call_blocking(|connection| {
            Ok(segment::update_blocking(
                connection,
                tenant,
                id,
                now_ms,
                |job| {
                    job.status = JobStatus::Processing;
                    job.metrics.profile_segmentation_time.start_time_in_ms = Some(now_ms);
                    job.metrics.profile_segmentation_time.end_time_in_ms = None;
                    job.metrics.profile_segmentation_time.total_time_in_ms = None;
                },
            ))
        })??;
        let definitions = match self
            .metadata
            .call_blocking(|connection| Ok(segment::load_definitions(connection, tenant, &job)))?
        {
            Ok(definitions) => definitions,
            Err(message) => return self.fail(tenant, id, message),
        };
        let cancelled = || self.cancel_requests.contains(id) || self.shutting_down.is_cancelled();
        let progress = |processed: u64| {
            let clock_ms = self.clock.now().timestamp_millis();
            let result = self.metadata.call_blocking(|connection| {
                Ok(segment::update_blocking(
                    connection,
                    tenant,
                    id,
                    clock_ms,
                    |job| {
                        job.metrics.profiles_processed_so_far = Some(processed);
                    },
                ))
            });
            if let Err(error) = result {
                tracing::warn!(%error, job_id = id, "cannot record job progress");
            }
        };
        let input = EvaluationInput {
            profiles: &self.profiles,
            snapshots: &self.snapshots,
            memberships: &self.memberships,
            definitions,
            now,
            cancelled: &cancelled,
            progress: &progress,
        };
        match segment::evaluate(input, tenant) {
            Err(message) => self.fail(tenant, id, message),
            Ok(outcome) if outcome.cancelled && self.cancel_requests.remove(id).is_none() => {
                // Interrupted by shutdown, not by a client: run it again at the next start.
                self.finish(tenant, id, |job| job.status = JobStatus::Queued)
            }
            Ok(outcome) if outcome.cancelled => {
                self.finish(tenant, id, |job| job.status = JobStatus::Cancelled)
            }
            Ok(outcome) => {
                let end_ms = self.clock.now().timestamp_millis();
                self.finish(tenant, id, |job| {
                    let started = job.metrics.profile_segmentation_time.start_time_in_ms;
                    let total = job.metrics.total_time.clone();
                    job.metrics = outcome.metrics;
                    job.metrics.total_time = total;
                    job.metrics.profile_segmentation_time.start_time_in_ms = started;
                    job.metrics.profile_segmentation_time.end_time_in_ms = Some(end_ms);
                    job.metrics.profile_segmentation_time.total_time_in_ms =
                        started.map(|start| end_ms - start);
                    job.status = JobStatus::Succeeded;
                })
            }
        }
    }

    fn fail(
        &self,
        tenant: &Tenant,
        id: &str,
        message: String,
    ) -> Result<(), segment::JobErrorKind> {
        tracing::warn!(job_id = id, error = %message, "segment job failed");
        self.finish(tenant, id, |job| {
            job.status = JobStatus::Failed;
            job.errors.push(JobError {
                code: "0100000003".into(),
                msg: message,
            });
        })
    }

    fn finish(
        &self,
        tenant: &Tenant,
        id: &str,
        change: impl FnOnce(&mut segment::SegmentJob),
    ) -> Result<(), segment::JobErrorKind> {
        let now_ms = self.clock.now().timestamp_millis();
        self.metadata.call_blocking(|connection| {
            Ok(segment::update_blocking(
                connection,
                tenant,
                id,
                now_ms,
                |job| {
                    change(job);
                    if job.status.is_final() {
                        job.metrics.total_time.finish(now_ms);
                        job.metrics.profiles_processed_so_far = None;
                    }
                },
            ))
        })??;
        Ok(())
    }
}
