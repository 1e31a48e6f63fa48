//! Preview jobs (`api.md` §3): evaluate a compiled predicate over a sample in rank order, in growing
//! chunks on the blocking pool, publishing after each chunk the counts, the estimate and its
//! anytime-valid interval, and the matching profiles so far.
//!
//! Jobs live in a concurrent map with a time to live; at most `workers` evaluate at once and at most
//! `queue_limit` wait (beyond that, creating one is refused so the caller can answer 429). A job
//! keeps the `Arc` of the sample it started on, so a sample swap never disturbs it. Cancelling sets a
//! flag the evaluation loop checks between chunks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::estimate::{Estimate, RunningEstimate};
use crate::pql::CompiledQuery;
use crate::sample::store::Sample;
use crate::tenant::Tenant;

/// Profiles evaluated before the first publication: small, so the first estimate comes at once.
const FIRST_CHUNK: usize = 64;
/// Largest chunk between publications.
const MAX_CHUNK: usize = 16_384;

/// The lifecycle of a preview job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PreviewState {
    /// Accepted, waiting for a worker.
    New,
    /// Evaluating.
    Running,
    /// Finished (the whole sample read, or stopped early at the requested precision).
    ResultReady,
    /// Evaluation failed.
    Failed,
}

/// What a job has published so far.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The state.
    pub state: PreviewState,
    /// Counts, estimate and interval.
    pub estimate: Estimate,
    /// Matched profiles per identity namespace.
    pub namespace_matches: BTreeMap<String, u64>,
    /// Why the job failed.
    pub error: Option<String>,
}

/// One preview job.
pub struct PreviewJob {
    /// The owning tenant.
    pub tenant: Tenant,
    /// The debugging id (`previewQueryId`).
    pub query_id: String,
    /// The expression text, echoed in links.
    pub expression: String,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// The sample it evaluates.
    pub sample: Arc<Sample>,
    /// Stop once the interval's relative half-width is at most this.
    pub target_relative_half_width: Option<f64>,
    progress: Mutex<Progress>,
    /// Indexes into the sample of the matches so far, in rank order.
    matches: Mutex<Vec<u32>>,
    cancelled: AtomicBool,
}

impl PreviewJob {
    /// Returns a snapshot of the published progress.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Returns the matches in `offset..offset+limit` (sample indexes) and the number matched so far.
    pub fn matches_page(&self, offset: usize, limit: usize) -> (Vec<u32>, usize) {
        let matches = self
            .matches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let page = matches.iter().skip(offset).take(limit).copied().collect();
        (page, matches.len())
    }

    /// Asks the evaluation to stop at its next chunk boundary.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn publish(&self, update: impl FnOnce(&mut Progress)) {
        update(
            &mut self
                .progress
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }

    /// Evaluates the job to the end (or cancellation, or the precision target). Blocking.
    fn run(&self, query: &CompiledQuery) {
        let sample = &self.sample;
        let mut running = match RunningEstimate::new(sample.store_size, sample.len() as u64) {
            Ok(running) => running,
            Err(error) => return self.fail(error.to_string()),
        };
        self.publish(|progress| progress.state = PreviewState::Running);
        let now_ms = sample.built_at.timestamp_millis();
        let (mut read, mut matched, mut chunk) = (0usize, 0u64, FIRST_CHUNK);
        let mut namespace_matches: BTreeMap<String, u64> = BTreeMap::new();
        let prepared = sample.tables.prepare(query, now_ms);
        while read < sample.len() {
            if self.cancelled.load(Ordering::Relaxed) {
                return;
            }
            let end = (read + chunk).min(sample.len());
            let found = sample.tables.matching_on_every_core(&prepared, read..end);
            for index in &found {
                for namespace in sample.namespaces(*index as usize) {
                    *namespace_matches.entry(namespace.clone()).or_default() += 1;
                }
            }
            matched += found.len() as u64;
            read = end;
            let estimate = match running.observe(read as u64, matched) {
                Ok(estimate) => estimate,
                Err(error) => return self.fail(error.to_string()),
            };
            self.matches
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(found);
            let done = read == sample.len()
                || self
                    .target_relative_half_width
                    .is_some_and(|target| estimate.relative_half_width() <= target);
            self.publish(|progress| {
                progress.estimate = estimate;
                progress.namespace_matches = namespace_matches.clone();
                if done {
                    progress.state = PreviewState::ResultReady;
                }
            });
            if done {
                return;
            }
            chunk = (chunk * 2).min(MAX_CHUNK);
        }
        // An empty sample: nothing to read, the (trivial) result is ready.
        self.publish(|progress| progress.state = PreviewState::ResultReady);
    }

    fn fail(&self, message: String) {
        self.publish(|progress| {
            progress.state = PreviewState::Failed;
            progress.error = Some(message);
        });
    }
}

/// Why a preview could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// Too many previews are waiting for a worker.
    #[error("{0} preview jobs are already waiting; retry shortly")]
    QueueFull(usize),
    /// The sample cannot be estimated over (inconsistent sizes).
    #[error("the sample cannot be estimated: {0}")]
    Sample(String),
}

/// The registry of preview jobs and the pool that runs them.
pub struct PreviewJobs {
    jobs: DashMap<String, Arc<PreviewJob>>,
    workers: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue_limit: usize,
    ttl: chrono::Duration,
}

/// What a new preview job is made of.
pub struct NewPreview {
    /// The owning tenant.
    pub tenant: Tenant,
    /// The expression text.
    pub expression: String,
    /// The compiled predicate.
    pub query: CompiledQuery,
    /// The sample to evaluate.
    pub sample: Arc<Sample>,
    /// Early-stop target, if any.
    pub target_relative_half_width: Option<f64>,
    /// Creation time.
    pub now: DateTime<Utc>,
}

impl PreviewJobs {
    /// Creates the registry: `workers` evaluate at once, `queue_limit` may wait, jobs live `ttl`.
    pub fn new(workers: usize, queue_limit: usize, ttl: chrono::Duration) -> Self {
        Self {
            jobs: DashMap::new(),
            workers: Arc::new(Semaphore::new(workers.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue_limit,
            ttl,
        }
    }

    /// Registers a job and starts it in the background; returns its preview id.
    pub fn start(&self, new: NewPreview) -> Result<(String, Arc<PreviewJob>), PreviewError> {
        self.expire(new.now);
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.queue_limit {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(PreviewError::QueueFull(waiting));
        }
        let initial = match RunningEstimate::new(new.sample.store_size, new.sample.len() as u64) {
            Ok(running) => running.estimate(),
            Err(error) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Err(PreviewError::Sample(error.to_string()));
            }
        };
        let query_id = uuid::Uuid::new_v4().to_string();
        let preview_id = crate::profile::xid::base64url(
            format!("0:app-{}:{query_id}:0", uuid::Uuid::new_v4()).as_bytes(),
        );
        let job = Arc::new(PreviewJob {
            tenant: new.tenant,
            query_id,
            expression: new.expression,
            created_at: new.now,
            sample: new.sample,
            target_relative_half_width: new.target_relative_half_width,
            progress: Mutex::new(Progress {
                state: PreviewState::New,
                estimate: initial,
                namespace_matches: BTreeMap::new(),
                error: None,
            }),
            matches: Mutex::new(Vec::new()),
            cancelled: AtomicBool::new(false),
        });
        self.jobs.insert(preview_id.clone(), job.clone());
        let (workers, waiting, running_job, query) = (
            self.workers.clone(),
            self.waiting.clone(),
            job.clone(),
            new.query,
        );
        tokio::spawn(async move {
            let permit = workers.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::SeqCst);
            let Ok(_permit) = permit else { return };
            let evaluation = tokio::task::spawn_blocking(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    running_job.run(&query)
                }));
                if outcome.is_err() {
                    running_job.fail("evaluation panicked".into());
                }
            });
            if let Err(error) = evaluation.await {
                tracing::error!(%error, "preview evaluation task failed");
            }
        });
        Ok((preview_id, job))
    }

    /// Returns a live job of this tenant; another tenant's job is reported as absent.
    pub fn get(
        &self,
        tenant: &Tenant,
        preview_id: &str,
        now: DateTime<Utc>,
    ) -> Option<Arc<PreviewJob>> {
        let job = self
            .jobs
            .get(preview_id)
            .map(|entry| entry.value().clone())?;
        (job.tenant == *tenant && now - job.created_at <= self.ttl).then_some(job)
    }

    /// Cancels and forgets a job of this tenant; returns whether it existed.
    pub fn remove(&self, tenant: &Tenant, preview_id: &str) -> bool {
        match self
            .jobs
            .remove_if(preview_id, |_, job| job.tenant == *tenant)
        {
            Some((_, job)) => {
                job.cancel();
                true
            }
            None => false,
        }
    }

    /// Drops jobs older than the time to live.
    fn expire(&self, now: DateTime<Utc>) {
        self.jobs.retain(|_, job| {
            let keep = now - job.created_at <= self.ttl;
            if !keep {
                job.cancel();
            }
            keep
        });
    }
}
