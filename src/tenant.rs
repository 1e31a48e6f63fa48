//! The tenant every stored resource belongs to: an IMS organization and a sandbox.

use serde::{Deserialize, Serialize};

/// Identifies the (organization, sandbox) pair that scopes every resource.
///
/// Every store call takes a `Tenant`, so no query can read another tenant's rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tenant {
    /// The IMS organization id, e.g. `1BD6382559DF0C130A49422D@AdobeOrg`.
    pub org_id: String,
    /// The all-lowercase sandbox name, e.g. `prod`.
    pub sandbox: String,
}

impl Tenant {
    /// Builds a tenant from an org id and a sandbox name.
    pub fn new(org_id: impl Into<String>, sandbox: impl Into<String>) -> Self {
        Self {
            org_id: org_id.into(),
            sandbox: sandbox.into(),
        }
    }
}
