//! Runs export jobs on the blocking pool, one task per job, and re-runs jobs a crash interrupted.

use std::path::PathBuf;
use std::sync::Arc;

use dashmap::DashSet;

use crate::clock::Clock;
use crate::export::jobs::{self, ExportJobError};
use crate::store::membership::MembershipStore;
use crate::store::metadata::{MetadataStore, StoreError};
use crate::store::profiles::ProfileStore;
use crate::tenant::Tenant;

/// The export runner's handles; cheap to clone.
#[derive(Clone)]
pub struct ExportRunner {
    metadata: MetadataStore,
    profiles: Arc<ProfileStore>,
    memberships: Arc<MembershipStore>,
    data_dir: PathBuf,
    clock: Arc<dyn Clock>,
    cancel_requests: Arc<DashSet<i64>>,
}

impl ExportRunner {
    /// Creates the runner.
    pub fn new(
        metadata: MetadataStore,
        profiles: Arc<ProfileStore>,
        memberships: Arc<MembershipStore>,
        data_dir: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            metadata,
            profiles,
            memberships,
            data_dir,
            clock,
            cancel_requests: Arc::new(DashSet::new()),
        }
    }

    /// Returns the data directory (Data Access reads the files there).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Starts a job in the background.
    pub fn start(&self, tenant: Tenant, id: i64) {
        let runner = self.clone();
        tokio::spawn(async move {
            let work = runner.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let cancelled = || work.cancel_requests.contains(&id);
                jobs::run_blocking(
                    &work.metadata,
                    &work.profiles,
                    &work.memberships,
                    &work.data_dir,
                    &tenant,
                    id,
                    || work.clock.now().timestamp_millis(),
                    &cancelled,
                )
            })
            .await;
            runner.cancel_requests.remove(&id);
            match outcome {
                Ok(Ok(job)) => tracing::info!(
                    job_id = id,
                    status = job.status.as_str(),
                    "export job finished"
                ),
                Ok(Err(error)) => tracing::error!(job_id = id, %error, "export job could not run"),
                Err(error) => tracing::error!(job_id = id, %error, "export task failed"),
            }
        });
    }

    /// Asks a running job to stop; it ends `CANCELLED` with nothing published.
    pub fn request_cancel(&self, id: i64) {
        self.cancel_requests.insert(id);
    }

    /// Starts again every job a previous process left unfinished; returns how many.
    pub async fn recover(&self) -> Result<usize, ExportJobError> {
        let pending = self
            .metadata
            .call(|connection| {
                jobs::unfinished_blocking(connection)
                    .map_err(|error| StoreError::Task(error.to_string()))
            })
            .await?;
        for (tenant, id) in &pending {
            self.start(tenant.clone(), *id);
        }
        Ok(pending.len())
    }
}
