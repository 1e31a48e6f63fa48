//! Authentication and tenancy (`api.md` §0): every API call presents `x-api-key`,
//! `Authorization: Bearer <token>` and `x-gw-ims-org-id`; `x-sandbox-name` defaults to `prod`.
//!
//! Clients come from configuration (`[[auth.clients]]`). A token is an opaque shared secret compared
//! in constant time; the org must be one the client may act for. The resulting [`RequestScope`]
//! carries the [`Tenant`] every handler passes to the store, so no query can cross tenants.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorCode};
use crate::config::ClientConfig;
use crate::tenant::Tenant;

/// The sandbox used when a request names none.
pub const DEFAULT_SANDBOX: &str = "prod";

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct RequestScope {
    /// The organization and sandbox the request acts in.
    pub tenant: Tenant,
    /// The API key the caller presented (for audit fields such as `createdClient`).
    pub api_key: String,
}

/// Checks credentials against the configured clients.
#[derive(Debug, Default)]
pub struct Authenticator {
    clients: HashMap<String, ClientConfig>,
}

impl Authenticator {
    /// Builds an authenticator from the configured clients; a later client with the same API key wins.
    pub fn new(clients: &[ClientConfig]) -> Self {
        Self {
            clients: clients
                .iter()
                .map(|client| (client.api_key.clone(), client.clone()))
                .collect(),
        }
    }

    /// Returns the scope of a request with these headers, or the error to answer.
    ///
    /// The checks run in the gateway's order: API key, token, organization, sandbox.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<RequestScope, ApiError> {
        let api_key = header_text(headers, "x-api-key")?
            .ok_or_else(|| ApiError::new(ErrorCode::MissingApiKey, "Api Key is required"))?;
        let token = header_text(headers, "authorization")?
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::new(ErrorCode::MissingToken, "Oauth token is missing."))?;
        let client = self
            .clients
            .get(api_key)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidApiKey, "Api Key is invalid"))?;
        if !constant_time_eq(client.token.as_bytes(), token.as_bytes()) {
            return Err(ApiError::new(
                ErrorCode::InvalidToken,
                "Oauth token is not valid",
            ));
        }
        let org_id = header_text(headers, "x-gw-ims-org-id")?
            .filter(|org| !org.is_empty())
            .ok_or_else(|| {
                ApiError::new(ErrorCode::MissingOrg, "Missing header x-gw-ims-org-id")
            })?;
        if !client.orgs.iter().any(|allowed| allowed == org_id) {
            return Err(ApiError::new(
                ErrorCode::OrgForbidden,
                format!("Profile is not valid: this client may not act for organization {org_id}"),
            ));
        }
        let sandbox = header_text(headers, "x-sandbox-name")?.unwrap_or(DEFAULT_SANDBOX);
        validate_sandbox_name(sandbox)?;
        Ok(RequestScope {
            tenant: Tenant::new(org_id, sandbox),
            api_key: api_key.to_owned(),
        })
    }
}

/// Rejects sandbox names that are not Adobe-style: lowercase letters, digits and hyphens, 1 to 256 long.
fn validate_sandbox_name(sandbox: &str) -> Result<(), ApiError> {
    let valid = !sandbox.is_empty()
        && sandbox.len() <= 256
        && sandbox
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidHeader,
            format!(
                "x-sandbox-name `{sandbox}` is invalid: use lowercase letters, digits and hyphens"
            ),
        ))
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map(str::trim).map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidHeader,
                    format!("header {name} is not valid text"),
                )
            })
        })
        .transpose()
}

/// Compares secrets without an early exit, so response time does not reveal a matching prefix.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Middleware that authenticates every API request and stores its [`RequestScope`] in the extensions.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let scope = state.auth.authenticate(request.headers())?;
    request.extensions_mut().insert(scope);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(&[ClientConfig::demo()])
    }

    #[test]
    fn each_missing_or_bad_credential_has_its_own_code() {
        let cases: &[(&[(&str, &str)], ErrorCode)] = &[
            (&[], ErrorCode::MissingApiKey),
            (&[("x-api-key", "demo")], ErrorCode::MissingToken),
            (
                &[("x-api-key", "nope"), ("authorization", "Bearer demo")],
                ErrorCode::InvalidApiKey,
            ),
            (
                &[("x-api-key", "demo"), ("authorization", "Bearer dem0")],
                ErrorCode::InvalidToken,
            ),
            (
                &[("x-api-key", "demo"), ("authorization", "Bearer demo")],
                ErrorCode::MissingOrg,
            ),
            (
                &[
                    ("x-api-key", "demo"),
                    ("authorization", "Bearer demo"),
                    ("x-gw-ims-org-id", "other@AdobeOrg"),
                ],
                ErrorCode::OrgForbidden,
            ),
            (
                &[
                    ("x-api-key", "demo"),
                    ("authorization", "Bearer demo"),
                    ("x-gw-ims-org-id", "demo@AdobeOrg"),
                    ("x-sandbox-name", "Prod"),
                ],
                ErrorCode::InvalidHeader,
            ),
        ];
        for (pairs, expected) in cases {
            let error = authenticator().authenticate(&headers(pairs)).unwrap_err();
            assert_eq!(error.code(), *expected, "{pairs:?}");
        }
    }

    #[test]
    fn sandbox_defaults_to_prod() {
        let scope = authenticator()
            .authenticate(&headers(&[
                ("x-api-key", "demo"),
                ("authorization", "Bearer demo"),
                ("x-gw-ims-org-id", "demo@AdobeOrg"),
            ]))
            .unwrap();
        assert_eq!(scope.tenant, Tenant::new("demo@AdobeOrg", "prod"));
    }
}
