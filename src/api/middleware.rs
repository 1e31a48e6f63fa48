//! Cross-cutting HTTP behaviour: request ids, the error envelope for responses produced outside our
//! handlers (unknown routes, wrong methods, timeouts, panics), and logging of internal errors.

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::error::{ApiError, ErrorCode, InternalErrorCause, REQUEST_ID};

/// Header carrying the request id, echoed when the client sends one.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied request id we echo; longer ones are replaced by a fresh id.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Outermost middleware: assigns the request id (the client's, or a new one), makes it available to
/// error rendering, echoes it on the response, and turns any non-JSON error response into the envelope.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let header_value = HeaderValue::from_str(&request_id).expect("request ids are visible ASCII");
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value.clone());

    let mut response = REQUEST_ID
        .scope(request_id.clone(), next.run(request))
        .await;
    if is_plain_error(&response) {
        response = envelope_for_status(response.status()).into_response_with_id(&request_id);
    }
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value);
    response
}

/// Returns true for an error response whose body is not our JSON (produced by axum or tower layers).
fn is_plain_error(response: &Response) -> bool {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    (response.status().is_client_error() || response.status().is_server_error()) && !is_json
}

/// Maps a bare status from the framework to the matching envelope.
fn envelope_for_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::new(
            ErrorCode::RouteNotFound,
            "No such route. Check the path and try again.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::MethodNotAllowed,
            "This route does not accept that HTTP method.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            "The request body is larger than the configured limit.",
        ),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            ErrorCode::RequestTimeout,
            "The request took longer than the configured deadline.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedContentType,
            "A valid content-type must be specified.",
        ),
        status if status.is_client_error() => {
            ApiError::new(ErrorCode::MalformedBody, "The request is invalid.")
        }
        status => ApiError::internal(format!("framework answered {status}")),
    }
}

/// Logs the cause of internal errors inside the request span, then strips it from the response.
pub async fn log_internal_errors(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(InternalErrorCause(cause)) =
        response.extensions_mut().remove::<InternalErrorCause>()
    {
        tracing::error!(error.cause = %cause, status = response.status().as_u16(), "internal error");
    }
    response
}

/// Builds the span of one request: method, matched path and request id.
pub fn request_span(request: &Request<Body>) -> tracing::Span {
    let matched_path = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("<unmatched>");
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %request.method(), matched_path, request_id)
}
