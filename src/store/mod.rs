//! Durable state. `metadata` holds resources (datasets, batches, definitions, jobs, schedules) in SQLite;
//! `profiles` holds profile fragments, experience events and the identity graph in redb; `membership`
//! holds segment memberships in redb.

/// Implements `From` for every redb error type into `$error::Storage` (via `redb::Error`), so redb
/// calls in a store can use `?`.
macro_rules! redb_errors_into {
    ($error:ty) => {
        $crate::store::redb_errors_into!(@each $error; redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
    };
    (@each $error:ty; $($source:ty),*) => {$(
        impl From<$source> for $error {
            fn from(error: $source) -> Self {
                Self::Storage(error.into())
            }
        }
    )*};
}
pub(crate) use redb_errors_into;

pub mod membership;
pub mod metadata;
pub mod profiles;
