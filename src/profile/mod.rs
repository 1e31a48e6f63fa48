//! The merged-profile view as clients see it: merge policies as a resource, XIDs, and field projection.

pub mod policies;
pub mod projection;
pub mod xid;
