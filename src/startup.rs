//! Building and running the service: open the stores, bind the listener (keeping the real port so
//! `127.0.0.1:0` works in tests), serve until a shutdown signal, then drain within the deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, auth::Authenticator};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::estimate::preview::PreviewJobs;
use crate::export::runner::ExportRunner;
use crate::ingest::batch::{IngestJobError, Ingestor};
use crate::jobs::runner::SegmentJobRunner;
use crate::sample::rank::RankKey;
use crate::sample::service::Samples;
use crate::schedule::runner::ScheduleRunner;
use crate::snapshot::ColumnarSnapshots;
use crate::store::membership::MembershipStore;
use crate::store::metadata::{MetadataStore, StoreError};
use crate::store::profiles::{ProfileStore, ProfileStoreError};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A store could not be opened.
    #[error("cannot open store: {0}")]
    Store(#[from] StoreError),
    /// The profile store could not be opened.
    #[error("cannot open profile store: {0}")]
    Profiles(#[from] ProfileStoreError),
    /// The membership store could not be opened.
    #[error("cannot open membership store: {0}")]
    Memberships(#[from] crate::store::membership::MembershipError),
    /// Interrupted segment jobs could not be queued again.
    #[error("cannot recover segment jobs: {0}")]
    Jobs(#[from] crate::jobs::segment::JobErrorKind),
    /// Interrupted export jobs could not be restarted.
    #[error("cannot restart export jobs: {0}")]
    Exports(#[from] crate::export::jobs::ExportJobError),
    /// Unfinished batches could not be resumed.
    #[error("cannot resume unfinished batches: {0}")]
    Recovery(#[from] IngestJobError),
    /// The listen address could not be bound, or serving failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// A built service, bound to its address, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Cancelled at shutdown; background workers watch it.
    shutting_down: CancellationToken,
}

impl Application {
    /// Opens the stores in `settings.data_dir` and binds `settings.listen`.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build`], with an injected clock (tests).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StartupError::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
        let data_dir = settings.data_dir.clone();
        let metadata = tokio::task::spawn_blocking(move || MetadataStore::open(&data_dir))
            .await
            .map_err(|error| StoreError::Task(error.to_string()))??;
        let data_dir = settings.data_dir.clone();
        let store_clock = clock.clone();
        let profiles = tokio::task::spawn_blocking(move || {
            ProfileStore::open(&data_dir).map(|store| store.with_clock(store_clock))
        })
        .await
        .map_err(|error| StoreError::Task(error.to_string()))??;
        let ingestor = Ingestor::new(
            metadata.clone(),
            Arc::new(profiles),
            &settings.data_dir,
            clock.clone(),
        );
        // Batches a crash left in staging are finished before the first request is served.
        let resumed = ingestor.recover().await?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed unfinished batches");
        }
        let data_dir = settings.data_dir.clone();
        let memberships = tokio::task::spawn_blocking(move || MembershipStore::open(&data_dir))
            .await
            .map_err(|error| StoreError::Task(error.to_string()))??;
        let shutting_down = CancellationToken::new();
        let memberships = Arc::new(memberships);
        let exports = ExportRunner::new(
            metadata.clone(),
            ingestor.profiles().clone(),
            memberships.clone(),
            settings.data_dir.clone(),
            clock.clone(),
        );
        let snapshots = ColumnarSnapshots::open(&settings.data_dir).map_err(StoreError::Io)?;
        let segment_jobs = SegmentJobRunner::new(
            metadata.clone(),
            ingestor.profiles().clone(),
            snapshots.clone(),
            memberships,
            clock.clone(),
            shutting_down.clone(),
        );
        // Jobs a crash left processing run again: their memberships are written only on success.
        let requeued = segment_jobs.recover().await?;
        if requeued > 0 {
            tracing::info!(requeued, "queued interrupted segment jobs again");
        }
        let listener = TcpListener::bind(settings.listen).await?;
        let rank_key = load_rank_key(&settings.data_dir).map_err(StoreError::Io)?;
        let previews = PreviewJobs::new(
            settings.workers.preview_workers,
            settings.preview.queue_limit,
            chrono::Duration::seconds(
                i64::try_from(settings.preview.ttl_secs).unwrap_or(i64::MAX / 1000),
            ),
        );
        let samples = Arc::new(Samples::new(
            metadata.clone(),
            ingestor.profiles().clone(),
            snapshots,
            rank_key,
            clock.clone(),
        ));
        // Exports a crash interrupted run again (their batches were never published).
        let restarted = exports.recover().await?;
        if restarted > 0 {
            tracing::info!(restarted, "restarted interrupted export jobs");
        }
        let state = AppState {
            exports,
            ingestor,
            segment_jobs,
            samples,
            previews: Arc::new(previews),
            auth: Arc::new(Authenticator::new(&settings.auth.clients)),
            settings: Arc::new(settings),
            metadata,
            clock,
        };
        Ok(Self {
            listener,
            state,
            shutting_down,
        })
    }

    /// Returns the address actually bound (the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and drains in-flight requests within
    /// the configured deadline.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let deadline = Duration::from_secs(self.state.settings.http.shutdown_timeout_secs);
        let token = self.shutting_down;
        let workers = tokio::spawn(self.state.segment_jobs.clone().run());
        let schedule_loop = tokio::spawn(
            ScheduleRunner::new(
                self.state.metadata.clone(),
                self.state.segment_jobs.clone(),
                self.state.exports.clone(),
                self.state.clock.clone(),
                token.clone(),
            )
            .run(),
        );
        let mut sample_jobs = self
            .state
            .samples
            .schedule(&self.state.settings.sample.daily_at)
            .await
            .map_err(|error| {
                std::io::Error::other(format!("cannot start the sample job: {error}"))
            })?;
        let router = api::router(self.state);
        let server = axum::serve(self.listener, router)
            .with_graceful_shutdown(token.clone().cancelled_owned());
        let mut server = tokio::spawn(async move { server.await });
        tokio::select! {
            result = &mut server => return flatten(result),
            () = shutdown => {}
        }
        tracing::info!(
            deadline_secs = deadline.as_secs(),
            "shutting down: draining requests"
        );
        token.cancel();
        if let Err(error) = sample_jobs.shutdown().await {
            tracing::warn!(%error, "sample job scheduler did not stop cleanly");
        }
        let drained = tokio::time::timeout(deadline, async {
            let served = (&mut server).await;
            // The runner stops between chunks once the token is cancelled.
            if let Err(error) = workers.await {
                tracing::warn!(%error, "segment job runner ended abnormally");
            }
            if let Err(error) = schedule_loop.await {
                tracing::warn!(%error, "schedule loop ended abnormally");
            }
            served
        });
        match drained.await {
            Ok(result) => flatten(result),
            Err(_) => {
                tracing::warn!("drain deadline passed; closing remaining connections");
                server.abort();
                Ok(())
            }
        }
    }
}

fn flatten(
    result: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), StartupError> {
    result.map_err(|error| std::io::Error::other(error.to_string()))??;
    Ok(())
}

/// Reads the sample rank key of a data directory, creating a random one on first start.
///
/// The key is secret and stable: stable so a rebuilt sample keeps the same profiles when the store has
/// not changed, secret so no client can craft ids that land in (or out of) the sample.
fn load_rank_key(data_dir: &std::path::Path) -> std::io::Result<RankKey> {
    let path = data_dir.join("sample-rank.key");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 16 => {
            let mut key = [0u8; 16];
            key.copy_from_slice(&bytes);
            Ok(RankKey::from_bytes(key))
        }
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a 16-byte key",
            path.display()
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = uuid::Uuid::new_v4().into_bytes();
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, key)?;
            std::fs::File::open(&temporary)?.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            Ok(RankKey::from_bytes(key))
        }
        Err(error) => Err(error),
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, only SIGTERM stops the service.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
