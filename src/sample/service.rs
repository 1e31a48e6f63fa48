//! The sample service: finds, builds and refreshes samples, and runs the sample job on a schedule.
//!
//! Refresh rules (`api.md` §3.5): a sample is built on first use; rebuilt on demand; rebuilt after a
//! batch lands when the profile count moved more than 3% ([`crate::sample::store::is_stale`]); checked
//! hourly for the same rule (streaming ingestion adds profiles without batches); rebuilt daily at the
//! configured time (default 07:30 UTC) through tokio-cron-scheduler; and rebuilt at its next use when
//! older than three days.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dashmap::DashMap;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::clock::Clock;
use crate::profile::policies::{self, PolicyError};
use crate::sample::rank::RankKey;
use crate::sample::store::{Sample, SampleBuildError, SampleRegistry, build_sample, is_stale};
use crate::snapshot::ColumnarSnapshots;
use crate::store::metadata::{MetadataStore, StoreError};
use crate::store::profiles::{IdentityGraph, ProfileStore, ProfileStoreError};
use crate::tenant::Tenant;

/// Why a sample could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The named merge policy does not exist.
    #[error("mergePolicyId {0} does not exist in this sandbox")]
    UnknownPolicy(String),
    /// `graphType` is neither `none` nor `pdg`.
    #[error("graphType `{0}` is not supported: use none or pdg")]
    BadGraph(String),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] StoreError),
    /// The profile store failed.
    #[error(transparent)]
    Profiles(#[from] ProfileStoreError),
    /// Building the sample failed.
    #[error(transparent)]
    Build(#[from] SampleBuildError),
}

/// Serializes the builds of one sample and counts the builds started.
#[derive(Default)]
struct BuildGate {
    started: std::sync::atomic::AtomicU64,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// Samples of every tenant; a cheap-to-share handle (`Arc`).
pub struct Samples {
    registry: Arc<SampleRegistry>,
    /// One gate per (tenant, policy, graph): a sample is built once however many requests want
    /// it meanwhile, and the build runs to its end (and is published) even when they give up.
    builds: DashMap<(Tenant, String, IdentityGraph), Arc<BuildGate>>,
    metadata: MetadataStore,
    profiles: Arc<ProfileStore>,
    snapshots: ColumnarSnapshots,
    key: RankKey,
    clock: Arc<dyn Clock>,
}

impl Samples {
    /// Creates the service.
    pub fn new(
        metadata: MetadataStore,
        profiles: Arc<ProfileStore>,
        snapshots: ColumnarSnapshots,
        key: RankKey,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            registry: Arc::default(),
            builds: DashMap::new(),
            metadata,
            profiles,
            snapshots,
            key,
            clock,
        }
    }

    /// Returns the published samples of a tenant.
    pub fn of_tenant(&self, tenant: &Tenant) -> Vec<Arc<Sample>> {
        self.registry.of_tenant(tenant)
    }

    /// Returns the current profile count of a tenant's store.
    pub async fn store_size(&self, tenant: &Tenant) -> Result<u64, SampleError> {
        let (profiles, tenant) = (self.profiles.clone(), tenant.clone());
        Ok(
            tokio::task::spawn_blocking(move || profiles.profile_count(&tenant))
                .await
                .map_err(|error| StoreError::Task(error.to_string()))??,
        )
    }

    /// Returns the tenant's sample for a merge policy (default: the sandbox's default) and graph type
    /// (default: the policy's), building it when missing, stale, or when `force` is set.
    pub async fn current(
        &self,
        tenant: &Tenant,
        merge_policy_id: Option<String>,
        graph_type: Option<&str>,
        force: bool,
    ) -> Result<Arc<Sample>, SampleError> {
        let lookup_tenant = tenant.clone();
        let resolved = self
            .metadata
            .call(move |connection| {
                Ok(policies::resolve_blocking(
                    connection,
                    &lookup_tenant,
                    merge_policy_id.as_deref(),
                ))
            })
            .await?;
        let (policy_id, mut policy) = match resolved {
            Ok(resolved) => resolved,
            Err(PolicyError::NotFound(id)) => return Err(SampleError::UnknownPolicy(id)),
            Err(PolicyError::Store(error)) => return Err(error.into()),
            Err(other) => return Err(StoreError::Task(other.to_string()).into()),
        };
        match graph_type {
            None => {}
            Some("none") => policy.identity_graph = IdentityGraph::None,
            Some("pdg") => policy.identity_graph = IdentityGraph::Pdg,
            Some(other) => return Err(SampleError::BadGraph(other.to_owned())),
        }
        let graph = policy.identity_graph;
        let gate = self
            .builds
            .entry((tenant.clone(), policy_id.clone(), graph))
            .or_default()
            .clone();
        let started_before = gate.started.load(Ordering::SeqCst);
        let building = gate.lock.clone().lock_owned().await;
        let now = self.clock.now();
        if let Some(sample) = self.registry.get(tenant, &policy_id, graph) {
            // A build that started after this request (while it waited) serves it, forced or not.
            let fresh = gate.started.load(Ordering::SeqCst) > started_before;
            if fresh || (!force && !is_stale(&sample, self.store_size(tenant).await?, now)) {
                return Ok(sample);
            }
        }
        gate.started.fetch_add(1, Ordering::SeqCst);
        let (profiles, snapshots, registry, build_tenant, key) = (
            self.profiles.clone(),
            self.snapshots.clone(),
            self.registry.clone(),
            tenant.clone(),
            self.key,
        );
        tokio::task::spawn_blocking(move || {
            let sample = build_sample(
                &profiles,
                &snapshots,
                &build_tenant,
                &policy_id,
                &policy,
                &key,
                now,
                None,
            )?;
            tracing::info!(
                profiles = sample.len(),
                store = sample.store_size,
                heap_bytes = sample.heap_bytes(),
                "sample built"
            );
            let published = registry.publish(&build_tenant, sample);
            drop(building);
            Ok::<_, SampleError>(published)
        })
        .await
        .map_err(|error| StoreError::Task(error.to_string()))?
    }

    /// Rebuilds a tenant's samples (all of them with `force`, else only the stale ones).
    pub async fn refresh_tenant(&self, tenant: &Tenant, force: bool) {
        for sample in self.registry.of_tenant(tenant) {
            let graph = graph_name(sample.graph);
            if let Err(error) = self
                .current(
                    tenant,
                    Some(sample.merge_policy_id.clone()),
                    Some(graph),
                    force,
                )
                .await
            {
                tracing::warn!(%error, "cannot refresh sample");
            }
        }
    }

    /// Rebuilds every tenant's samples (the daily sample job), or only stale ones (the hourly check).
    pub async fn refresh_all(&self, force: bool) {
        for tenant in self.registry.tenants() {
            self.refresh_tenant(&tenant, force).await;
        }
    }

    /// Starts the daily sample job at `daily_at` (`HH:MM`, UTC) and the hourly staleness check.
    pub async fn schedule(
        self: &Arc<Self>,
        daily_at: &str,
    ) -> Result<JobScheduler, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let (hour, minute) = parse_daily_at(daily_at).ok_or(JobSchedulerError::ParseSchedule)?;
        // The scheduler's tasks may outlive its shutdown; weak handles keep them from holding the
        // stores open (a restart in the same process must be able to reopen them).
        let daily = Arc::downgrade(self);
        scheduler
            .add(Job::new_async(
                format!("0 {minute} {hour} * * *").as_str(),
                move |_, _| {
                    let samples = daily.upgrade();
                    Box::pin(async move {
                        if let Some(samples) = samples {
                            samples.refresh_all(true).await;
                        }
                    })
                },
            )?)
            .await?;
        let hourly = Arc::downgrade(self);
        scheduler
            .add(Job::new_async("0 0 * * * *", move |_, _| {
                let samples = hourly.upgrade();
                Box::pin(async move {
                    if let Some(samples) = samples {
                        samples.refresh_all(false).await;
                    }
                })
            })?)
            .await?;
        scheduler.start().await?;
        Ok(scheduler)
    }
}

/// Returns the `graphType` word of an identity graph.
pub fn graph_name(graph: IdentityGraph) -> &'static str {
    match graph {
        IdentityGraph::None => "none",
        IdentityGraph::Pdg => "pdg",
    }
}

/// Parses `HH:MM` (24-hour clock).
pub fn parse_daily_at(text: &str) -> Option<(u32, u32)> {
    let (hour, minute) = text.split_once(':')?;
    let (hour, minute) = (hour.parse::<u32>().ok()?, minute.parse::<u32>().ok()?);
    (hour < 24 && minute < 60).then_some((hour, minute))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_times_parse_strictly() {
        assert_eq!(parse_daily_at("07:30"), Some((7, 30)));
        assert_eq!(parse_daily_at("23:59"), Some((23, 59)));
        for bad in ["24:00", "7", "07:60", "a:b", ""] {
            assert_eq!(parse_daily_at(bad), None, "{bad}");
        }
    }

    /// Requests that arrive while a sample is being built wait for that build instead of
    /// starting their own; a forced request afterwards builds again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_build() {
        let dir = tempfile::tempdir().unwrap();
        let metadata = MetadataStore::open(dir.path()).unwrap();
        let profiles = Arc::new(ProfileStore::open(dir.path()).unwrap());
        let tenant = Tenant::new("o", "prod");
        let rows: Vec<serde_json::Value> = (0..2000)
            .map(|index| serde_json::json!({"identityMap": {"CRMID": [{"id": format!("c{index}"), "primary": true}]}}))
            .collect();
        profiles
            .apply_batch(
                &tenant,
                "d",
                crate::store::profiles::RecordKind::Profile,
                rows,
            )
            .unwrap();
        let samples = Samples::new(
            metadata,
            profiles,
            ColumnarSnapshots::open(dir.path()).unwrap(),
            RankKey::new(1, 2),
            Arc::new(crate::clock::SystemClock),
        );
        let (first, second, third) = tokio::join!(
            samples.current(&tenant, None, None, false),
            samples.current(&tenant, None, None, false),
            samples.current(&tenant, None, None, false),
        );
        let (first, second, third) = (first.unwrap(), second.unwrap(), third.unwrap());
        assert!(Arc::ptr_eq(&first, &second) && Arc::ptr_eq(&first, &third));
        let builds = |samples: &Samples| -> u64 {
            samples
                .builds
                .iter()
                .map(|gate| gate.started.load(Ordering::SeqCst))
                .sum()
        };
        assert_eq!(builds(&samples), 1);
        let forced = samples.current(&tenant, None, None, true).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &forced));
        assert_eq!((builds(&samples), forced.len()), (2, 2000));
    }
}
