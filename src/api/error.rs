//! The API error: one type, one table of stable codes, one JSON envelope (`api.md` §1.2).
//!
//! Every error response, including extractor rejections, unknown routes, wrong methods, oversized
//! bodies, timeouts and panics, is rendered as
//! `{"type", "title", "status", "requestId", "errors": {"<status>": [{"code", "message", ...}]}}`.
//! Internal details of 5xx errors are logged (by [`crate::api::middleware`]) and never returned.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Prefix of the `type` URI, as Adobe's gateway uses.
const TYPE_PREFIX: &str = "https://ns.adobe.com/aep/errors/";

/// Declares the error-code table: each code has exactly one service prefix, number and HTTP status.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident => ($service:literal, $number:literal, $status:ident);)*) => {
        /// A stable, machine-readable error condition.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($(#[$doc])* $name,)* }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// Returns the HTTP status this code is answered with.
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$name => StatusCode::$status,)* }
            }

            /// Returns the code as it appears in the envelope, e.g. `UPAPI-113430-404`.
            pub fn code(self) -> String {
                match self {
                    $(ErrorCode::$name => format!("{}-{}-{}", $service, $number, StatusCode::$status.as_u16()),)*
                }
            }
        }
    };
}

error_codes! {
    /// `Authorization` header missing or not a bearer token.
    MissingToken => ("GW", 401010, UNAUTHORIZED);
    /// Bearer token not known or not valid for the API key.
    InvalidToken => ("GW", 401013, UNAUTHORIZED);
    /// `x-api-key` header missing.
    MissingApiKey => ("GW", 401000, UNAUTHORIZED);
    /// `x-api-key` not known.
    InvalidApiKey => ("GW", 401003, UNAUTHORIZED);
    /// `x-gw-ims-org-id` header missing.
    MissingOrg => ("GW", 400003, BAD_REQUEST);
    /// The client may not act for the organization it named.
    OrgForbidden => ("GW", 403025, FORBIDDEN);
    /// A header value is malformed (e.g. a sandbox name that is not lowercase).
    InvalidHeader => ("UPAPI", 113001, BAD_REQUEST);
    /// The body is not valid JSON or does not match the expected shape.
    MalformedBody => ("UPLIB", 101206, BAD_REQUEST);
    /// `Content-Type` missing or not JSON on a request with a JSON body.
    UnsupportedContentType => ("UPAPI", 113002, BAD_REQUEST);
    /// A query parameter is malformed.
    InvalidQuery => ("UPAPI", 113003, BAD_REQUEST);
    /// A path parameter is malformed.
    InvalidPath => ("UPAPI", 113004, BAD_REQUEST);
    /// The request is well-formed but its content is invalid.
    Validation => ("UPAPI", 113434, BAD_REQUEST);
    /// A PQL expression does not parse or type-check.
    InvalidExpression => ("UPAPI", 113005, BAD_REQUEST);
    /// The named resource does not exist in this organization and sandbox.
    NotFound => ("UPAPI", 113430, NOT_FOUND);
    /// No route matches the path.
    RouteNotFound => ("UPAPI", 113000, NOT_FOUND);
    /// The route exists but not for this method.
    MethodNotAllowed => ("UPAPI", 113006, METHOD_NOT_ALLOWED);
    /// The request took longer than the configured deadline.
    RequestTimeout => ("UPAPI", 113007, REQUEST_TIMEOUT);
    /// The resource's state forbids the operation (e.g. deleting something in use).
    Conflict => ("UPAPI", 113631, CONFLICT);
    /// The requested byte range lies outside the file.
    RangeNotSatisfiable => ("UPAPI", 113014, RANGE_NOT_SATISFIABLE);
    /// The request body is larger than the configured limit.
    PayloadTooLarge => ("UPAPI", 113008, PAYLOAD_TOO_LARGE);
    /// A resource with the same unique name exists.
    DuplicateName => ("UPAPI", 113009, UNPROCESSABLE_ENTITY);
    /// The request is well-formed but cannot be processed (e.g. an identity graph over 50 identities).
    Unprocessable => ("UPAPI", 113013, UNPROCESSABLE_ENTITY);
    /// Too many jobs are queued; retry later.
    TooManyRequests => ("UPAPI", 113010, TOO_MANY_REQUESTS);
    /// An unexpected failure inside the service.
    Internal => ("UPAPI", 113751, INTERNAL_SERVER_ERROR);
    /// The feature is not implemented by segmentd yet.
    NotImplemented => ("UPAPI", 113011, NOT_IMPLEMENTED);
    /// The service is starting or stopping.
    Unavailable => ("UPAPI", 113012, SERVICE_UNAVAILABLE);
}

/// One entry of the envelope's `errors` lists, with optional details (e.g. PQL positions).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    /// The error code string.
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// Extra structured fields (line, column, span, suggestion...), flattened into the entry.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    details: Vec<ErrorDetail>,
    retry_after_secs: Option<u64>,
    /// The cause of an internal error: logged, never sent.
    internal: Option<String>,
}

/// The serialised envelope.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    request_id: &'a str,
    errors: BTreeMap<String, &'a [ErrorDetail]>,
}

/// The internal cause of a 5xx, put in the response extensions for the logging middleware.
#[derive(Debug, Clone)]
pub struct InternalErrorCause(pub String);

tokio::task_local! {
    /// The id of the request being served, set by [`crate::api::middleware::request_context`] so that
    /// errors rendered anywhere in the handler carry it as `requestId`.
    pub static REQUEST_ID: String;
}

/// Returns the id of the request being served, or an empty string outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

impl ApiError {
    /// Creates an error with a code and a message; the message is also the envelope's `title`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_secs: None,
            internal: None,
        }
    }

    /// Creates a 404 for a resource that does not exist in the caller's organization and sandbox.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            ErrorCode::NotFound,
            format!("The {kind} entity {id} is not found. Use a valid entity and try again."),
        )
    }

    /// Creates a 400 validation error.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, message)
    }

    /// Creates a 501 for a feature segmentd does not implement yet.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            ErrorCode::NotImplemented,
            format!("{what} is not implemented by segmentd yet"),
        )
    }

    /// Creates a 500 whose cause is logged but never returned to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut error = Self::new(
            ErrorCode::Internal,
            "An internal error occurred. Retry later or contact the operator.",
        );
        error.internal = Some(cause.to_string());
        error
    }

    /// Adds a detail entry (the first message is always the main one).
    pub fn with_detail(
        mut self,
        message: impl Into<String>,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        self.details.push(ErrorDetail {
            code: self.code.code(),
            message: message.into(),
            extra,
        });
        self
    }

    /// Asks the client to retry after the given number of seconds (sent as `Retry-After`).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    /// Returns the error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Renders the envelope with the given request id.
    pub fn into_response_with_id(self, request_id: &str) -> Response {
        let status = self.code.status();
        let code = self.code.code();
        let main = ErrorDetail {
            code: code.clone(),
            message: self.message.clone(),
            extra: Default::default(),
        };
        let details = if self.details.is_empty() {
            vec![main]
        } else {
            self.details
        };
        let envelope = Envelope {
            type_uri: format!("{TYPE_PREFIX}{code}"),
            title: &self.message,
            status: status.as_u16(),
            request_id,
            errors: BTreeMap::from([(status.as_u16().to_string(), details.as_slice())]),
        };
        let body = serde_json::to_vec(&envelope).expect("the envelope always serialises");
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(cause) = self.internal {
            response.extensions_mut().insert(InternalErrorCause(cause));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_with_id(&current_request_id())
    }
}

/// A result whose error is an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_carry_their_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.code();
            assert!(seen.insert(text.clone()), "duplicate code {text}");
            assert!(
                text.ends_with(&code.status().as_u16().to_string()),
                "{text}"
            );
        }
    }
}

impl From<crate::store::metadata::StoreError> for ApiError {
    fn from(error: crate::store::metadata::StoreError) -> Self {
        ApiError::internal(error)
    }
}
