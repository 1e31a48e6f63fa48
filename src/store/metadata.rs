//! The durable metadata store: SQLite (bundled) in WAL mode with `synchronous = FULL`, so a commit that
//! returned survives `kill -9` and power loss, and versioned migrations applied at open.
//!
//! Resources are stored as JSON documents beside the key columns they are queried by; every table's
//! primary key starts with `(org_id, sandbox)`, so each query is tenant-scoped by construction.
//! SQLite calls are synchronous: [`MetadataStore::call`] runs them on the blocking pool, never on the
//! async runtime's workers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// Schema migrations, applied in order; the database's `user_version` is the number applied so far.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: catalog datasets.
    "CREATE TABLE datasets (
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (org_id, sandbox, id)
    ) WITHOUT ROWID;",
    // 2: catalog batches; `status` is a column so start-up recovery can find unfinished ones.
    "CREATE TABLE batches (
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        id TEXT NOT NULL,
        dataset_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (org_id, sandbox, id)
    ) WITHOUT ROWID;
    CREATE INDEX batches_by_status ON batches (status);",
    // 3: merge policies.
    "CREATE TABLE merge_policies (
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (org_id, sandbox, id)
    ) WITHOUT ROWID;",
    // 4: segment definitions; names are unique per sandbox.
    "CREATE TABLE segment_definitions (
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        merge_policy_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (org_id, sandbox, id),
        UNIQUE (org_id, sandbox, name)
    ) WITHOUT ROWID;",
    // 5: segment jobs; `status` is a column so the runner finds queued and interrupted jobs.
    "CREATE TABLE segment_jobs (
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (org_id, sandbox, id)
    ) WITHOUT ROWID;
    CREATE INDEX segment_jobs_by_status ON segment_jobs (status, created_ms);",
    // 6: schedules.
    "CREATE TABLE schedules (
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        id TEXT NOT NULL,
        created_s INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (org_id, sandbox, id)
    ) WITHOUT ROWID;",
    // 7: export jobs (numeric ids, as Adobe's) and the batches each export target currently shows.
    "CREATE TABLE export_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX export_jobs_by_tenant ON export_jobs (org_id, sandbox, created_ms);
    CREATE TABLE export_batches (
        org_id TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        id TEXT NOT NULL,
        dataset_id TEXT NOT NULL,
        segments TEXT NOT NULL,
        PRIMARY KEY (org_id, sandbox, id)
    ) WITHOUT ROWID;",
];

/// Why a metadata store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON document could not be (de)serialised.
    #[error("stored document is invalid: {0}")]
    Document(#[from] serde_json::Error),
    /// The blocking task running the call panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
    /// A file beside the database could not be read or written.
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    /// The database was written by a newer segmentd.
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    TooNew {
        /// Version in the file.
        found: usize,
        /// Highest version this binary knows.
        supported: usize,
    },
}

/// A cheap-to-clone handle on the metadata database.
#[derive(Clone)]
pub struct MetadataStore {
    connection: Arc<Mutex<Connection>>,
}

impl MetadataStore {
    /// Opens (creating if needed) `metadata.sqlite3` in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let mut connection = Connection::open(data_dir.join("metadata.sqlite3"))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut connection)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `operation` with the connection on the blocking pool and returns its result.
    pub async fn call<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.call_blocking(operation))
            .await
            .map_err(|error| StoreError::Task(error.to_string()))?
    }

    /// Runs `operation` on the current thread; for code already on a blocking thread.
    pub fn call_blocking<T>(
        &self,
        operation: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll back on
        // drop), so a poisoned lock is safe to keep using.
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        operation(&mut connection)
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|connection| Ok(connection.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

/// Reads the JSON document of one resource from `table` (every resource table has `org_id`, `sandbox`,
/// `id` and `body` columns; `table` is always one of ours, never client text).
pub fn get_document<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    table: &str,
    tenant: &crate::tenant::Tenant,
    id: impl rusqlite::ToSql,
) -> Result<Option<T>, StoreError> {
    use rusqlite::OptionalExtension;
    let body: Option<String> = connection
        .query_row(
            &format!("SELECT body FROM {table} WHERE org_id = ?1 AND sandbox = ?2 AND id = ?3"),
            rusqlite::params![tenant.org_id, tenant.sandbox, id],
            |row| row.get(0),
        )
        .optional()?;
    Ok(body.map(|body| serde_json::from_str(&body)).transpose()?)
}

/// Reads every resource document of a tenant from `table`, in `order` (an SQL `ORDER BY` list).
pub fn list_documents<T: serde::de::DeserializeOwned>(
    connection: &Connection,
    table: &str,
    tenant: &crate::tenant::Tenant,
    order: &str,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT body FROM {table} WHERE org_id = ?1 AND sandbox = ?2 ORDER BY {order}"
    ))?;
    let rows = statement.query_map(rusqlite::params![tenant.org_id, tenant.sandbox], |row| {
        row.get::<_, String>(0)
    })?;
    let mut documents = Vec::new();
    for body in rows {
        documents.push(serde_json::from_str(&body?)?);
    }
    Ok(documents)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: applied,
            supported: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        transaction.pragma_update(None, "user_version", (index + 1) as i64)?;
        transaction.commit()?;
        tracing::info!(version = index + 1, "applied metadata migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_reopen_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        store
            .call_blocking(|c| {
                c.execute("INSERT INTO datasets VALUES ('o', 's', 'id', 1, '{}')", [])?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let reopened = MetadataStore::open(dir.path()).unwrap();
        let count: i64 = reopened
            .call_blocking(|c| {
                Ok(c.query_row("SELECT count(*) FROM datasets", [], |row| row.get(0))?)
            })
            .unwrap();
        assert_eq!(count, 1);
        let version: i64 = reopened
            .call_blocking(|c| Ok(c.pragma_query_value(None, "user_version", |row| row.get(0))?))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }
}
