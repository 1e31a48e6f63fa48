//! Extractors that reject with our JSON envelope instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;

use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ErrorCode};

/// `axum::Json`, but malformed bodies answer with the envelope.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

/// `axum::extract::Query`, but malformed query strings answer with the envelope.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// `axum::extract::Path`, but malformed path parameters answer with the envelope.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedContentType,
                "A valid content-type must be specified: expected `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(inner)
                if inner.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "The request body is larger than the configured limit",
                )
            }
            other => ApiError::new(
                ErrorCode::MalformedBody,
                format!("The request body is invalid: {}", other.body_text()),
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("Invalid query parameters: {}", rejection.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("Invalid path parameters: {}", rejection.body_text()),
        )
    }
}

/// Extracts the authenticated caller's scope, placed in the request by [`crate::api::auth::authenticate`].
impl<S: Send + Sync> FromRequestParts<S> for RequestScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestScope>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route is missing the authentication layer"))
    }
}

/// Returns a list's page size: `requested` or `default`, refused (400) outside `1..=max`.
pub fn page_limit(requested: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {max}"),
        ))
    }
}

/// Most ids one bulk-get may name (`api.md` §1.2, `UPAPI-113015-400`).
pub const MAX_BULK_IDS: usize = 100;

/// Refuses (400) a bulk-get naming no id or more than [`MAX_BULK_IDS`].
pub fn check_bulk_size(count: usize) -> Result<(), ApiError> {
    if count == 0 || count > MAX_BULK_IDS {
        return Err(ApiError::validation(
            "The number of requested IDs is invalid. Cannot be 0 or exceed 100.",
        ));
    }
    Ok(())
}
