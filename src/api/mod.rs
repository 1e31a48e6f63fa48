//! The HTTP layer: routes mounted at Adobe's gateway paths, so a client changes only the host.
//!
//! `/healthz`, `/readyz`, `/openapi.json` and `/docs` are public; everything else passes the
//! [`auth::authenticate`] middleware first. Every error, ours or the framework's, leaves as the JSON
//! envelope of [`error::ApiError`].

pub mod access;
pub mod auth;
pub mod catalog;
pub mod collection;
pub mod error;
pub mod exports;
pub mod extract;
pub mod health;
pub mod import;
pub mod merge_policies;
pub mod middleware;
pub mod openapi;
pub mod preview;
pub mod schedules;
pub mod segment_jobs;
pub mod segments;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Router, middleware as axum_middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::metadata::MetadataStore;

/// Shared state of every handler: cheap-to-clone handles.
#[derive(Clone)]
pub struct AppState {
    /// The effective settings.
    pub settings: Arc<Settings>,
    /// Credential checks.
    pub auth: Arc<auth::Authenticator>,
    /// Resource metadata.
    pub metadata: MetadataStore,
    /// Batch and streaming ingestion into the profile store.
    pub ingestor: crate::ingest::batch::Ingestor,
    /// The samples behind previews, and their refresh.
    pub samples: Arc<crate::sample::service::Samples>,
    /// Running and finished preview jobs.
    pub previews: Arc<crate::estimate::preview::PreviewJobs>,
    /// The segment job runner (queue signal, cancellation, memberships).
    pub segment_jobs: crate::jobs::runner::SegmentJobRunner,
    /// Export jobs.
    pub exports: crate::export::runner::ExportRunner,
    /// The source of "now".
    pub clock: Arc<dyn Clock>,
}

/// Builds the whole application router.
pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let api = Router::new()
        .merge(catalog::router())
        .merge(collection::router())
        .merge(merge_policies::router())
        .merge(access::router())
        .merge(segments::router())
        .merge(preview::router())
        .merge(segment_jobs::router())
        .merge(schedules::router())
        .merge(exports::router())
        .merge(import::router(settings.http.upload_limit_bytes))
        .fallback(route_not_found)
        .layer(axum_middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let public = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(openapi::router());
    public
        .merge(api)
        .with_state(state)
        .layer(DefaultBodyLimit::max(settings.http.body_limit_bytes))
        .layer(axum_middleware::from_fn(middleware::log_internal_errors))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(settings.http.request_timeout_secs),
        ))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(middleware::request_span))
        .layer(axum_middleware::from_fn(middleware::request_context))
}

/// Answers an authenticated request for a path no route serves.
async fn route_not_found() -> error::ApiError {
    error::ApiError::new(
        error::ErrorCode::RouteNotFound,
        "No such route. Check the path and try again.",
    )
}
