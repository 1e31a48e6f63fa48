//! Catalog batches (`ingest-api.md` §3.4–3.5, §4): the unit in which files enter a dataset.
//!
//! State machine (the recommended reading of §3.5): `loading` (files being uploaded) → `COMPLETE` →
//! `staging` (being validated and applied) → `success` or `failed`; `loading` → `ABORT` → `aborted`.
//! `success` is what Catalog also calls `active`. The batch document is rewritten whole on each
//! transition, in one SQLite transaction, so readers never see a half-updated batch.

use std::collections::BTreeMap;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::metadata::{MetadataStore, StoreError};
use crate::tenant::Tenant;

/// The lifecycle state of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// Created; files are being uploaded.
    Loading,
    /// Completed by the client; rows are being validated and applied.
    Staging,
    /// Applied; visible downstream (Catalog's `active`).
    Success,
    /// Terminal failure; no row of the batch is visible.
    Failed,
    /// Cancelled by the client before completion.
    Aborted,
    /// Was `success`, then superseded (a newer export of the same segments replaced it).
    Inactive,
}

/// The input format of a batch's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// JSON: JSON Lines, or one JSON array when `isMultiLineJson` is true.
    Json,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// Parses a format name case-insensitively (`JSON`, `json`, `Parquet`...), as `ingest-api.md`
    /// §4.1 recommends; CSV is legacy and not supported.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// How the batch's files are encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputFormat {
    /// The file format.
    pub format: FileFormat,
    /// For JSON: one array per file (true) or JSON Lines (false, the default).
    #[serde(default)]
    pub is_multi_line_json: bool,
}

/// A Catalog object this batch relates to (its dataset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RelatedObject {
    /// The object type, `dataSet`.
    #[serde(rename = "type")]
    pub object_type: String,
    /// The object id.
    pub id: String,
}

/// Counters of a batch, filled when it is processed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchMetrics {
    /// Bytes uploaded.
    pub input_byte_size: u64,
    /// Files uploaded.
    pub input_file_count: u64,
    /// Rows read.
    pub input_record_count: u64,
    /// Rows applied to the store.
    pub output_record_count: u64,
    /// Rows rejected.
    pub failed_record_count: u64,
}

/// One error entry of a batch (`ingest-api.md` §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchError {
    /// E.g. `INGEST-1401-400`.
    pub code: String,
    /// What went wrong.
    pub description: String,
    /// The file the rows came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based row numbers (within the file) the error applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<u64>,
    /// How many rows the error applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_count: Option<u64>,
}

/// A batch, in Catalog's response shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// The batch id.
    pub id: String,
    /// Owning organization.
    pub ims_org: String,
    /// Owning sandbox.
    pub sandbox_name: String,
    /// Lifecycle state.
    pub status: BatchStatus,
    /// Client-side id; defaults to the batch id.
    pub external_id: String,
    /// The dataset, as `[{type: "dataSet", id}]`.
    pub related_objects: Vec<RelatedObject>,
    /// Encoding of the files.
    pub input_format: InputFormat,
    /// Tags.
    pub tags: BTreeMap<String, Vec<String>>,
    /// Creation time, Unix ms.
    pub created: i64,
    /// Last update, Unix ms.
    pub updated: i64,
    /// When processing started, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    /// When processing ended, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<i64>,
    /// The API key that created it.
    pub created_client: String,
    /// Catalog object version.
    pub version: String,
    /// Counters.
    pub metrics: BatchMetrics,
    /// Errors found while processing.
    pub errors: Vec<BatchError>,
}

impl Batch {
    /// Returns the id of the dataset the batch writes to.
    pub fn dataset_id(&self) -> &str {
        &self.related_objects[0].id
    }
}

/// Creates a new batch id: 26 lowercase base-32 characters, time-ordered like Adobe's ULID-style ids.
fn new_batch_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut value = uuid::Uuid::now_v7().as_u128();
    let mut id = [0u8; 26];
    for slot in id.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8(id.to_vec()).expect("alphabet is ASCII")
}

/// Describes a new batch before it is stored.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Target dataset.
    pub dataset_id: String,
    /// File encoding.
    pub input_format: InputFormat,
    /// Client id, if given.
    pub external_id: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, Vec<String>>,
    /// The API key creating it.
    pub created_client: String,
}

/// Stores a new batch in `loading` state.
pub fn create_batch_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    new: NewBatch,
    now_ms: i64,
) -> Result<Batch, StoreError> {
    let id = new_batch_id();
    let batch = Batch {
        external_id: new.external_id.unwrap_or_else(|| id.clone()),
        id,
        ims_org: tenant.org_id.clone(),
        sandbox_name: tenant.sandbox.clone(),
        status: BatchStatus::Loading,
        related_objects: vec![RelatedObject {
            object_type: "dataSet".into(),
            id: new.dataset_id,
        }],
        input_format: new.input_format,
        tags: new.tags,
        created: now_ms,
        updated: now_ms,
        started: None,
        completed: None,
        created_client: new.created_client,
        version: "1.0.0".into(),
        metrics: BatchMetrics::default(),
        errors: Vec::new(),
    };
    connection.execute(
        "INSERT INTO batches (org_id, sandbox, id, dataset_id, status, created_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            tenant.org_id,
            tenant.sandbox,
            batch.id,
            batch.dataset_id(),
            status_name(batch.status),
            now_ms,
            serde_json::to_string(&batch)?
        ],
    )?;
    Ok(batch)
}

/// Stores a new batch in `loading` state, on the blocking pool.
pub async fn create_batch(
    store: &MetadataStore,
    tenant: &Tenant,
    new: NewBatch,
    now_ms: i64,
) -> Result<Batch, StoreError> {
    let tenant = tenant.clone();
    store
        .call(move |connection| create_batch_blocking(connection, &tenant, new, now_ms))
        .await
}

fn status_name(status: BatchStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Returns the batch with this id in this tenant, if any.
pub fn get_batch_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<Batch>, StoreError> {
    crate::store::metadata::get_document(connection, "batches", tenant, id)
}

/// Returns the batch with this id in this tenant, if any.
pub async fn get_batch(
    store: &MetadataStore,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<Batch>, StoreError> {
    let (tenant, id) = (tenant.clone(), id.to_owned());
    store
        .call(move |connection| get_batch_blocking(connection, &tenant, &id))
        .await
}

/// The outcome of a conditional state change.
#[derive(Debug)]
pub enum Transition {
    /// The batch moved; here is its new state.
    Done(Batch),
    /// No such batch in this tenant.
    NotFound,
    /// The batch was in a state the change does not apply to; here it is, unchanged.
    WrongState(Batch),
}

/// Atomically applies `change` to the batch if `allowed` accepts its current state.
pub fn transition_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
    allowed: impl FnOnce(BatchStatus) -> bool,
    change: impl FnOnce(&mut Batch),
) -> Result<Transition, StoreError> {
    let transaction = connection.transaction()?;
    let outcome = transition_in(&transaction, tenant, id, allowed, change)?;
    transaction.commit()?;
    Ok(outcome)
}

/// Applies `change` to the batch if `allowed` accepts its state, inside the caller's transaction.
pub fn transition_in(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
    allowed: impl FnOnce(BatchStatus) -> bool,
    change: impl FnOnce(&mut Batch),
) -> Result<Transition, StoreError> {
    let Some(mut batch) = get_batch_blocking(connection, tenant, id)? else {
        return Ok(Transition::NotFound);
    };
    if !allowed(batch.status) {
        return Ok(Transition::WrongState(batch));
    }
    change(&mut batch);
    connection.execute(
        "UPDATE batches SET status = ?4, body = ?5 WHERE org_id = ?1 AND sandbox = ?2 AND id = ?3",
        params![
            tenant.org_id,
            tenant.sandbox,
            id,
            status_name(batch.status),
            serde_json::to_string(&batch)?
        ],
    )?;
    Ok(Transition::Done(batch))
}

/// Returns every batch left in `staging` (e.g. by a crash), with its tenant, oldest first.
pub fn staging_batches_blocking(
    connection: &rusqlite::Connection,
) -> Result<Vec<(Tenant, String)>, StoreError> {
    let mut statement = connection.prepare(
        "SELECT org_id, sandbox, id FROM batches WHERE status = 'staging' ORDER BY created_ms, id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            Tenant::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?),
            row.get(2)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_ordered_and_url_safe() {
        let first = new_batch_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_batch_id();
        assert_eq!(first.len(), 26);
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert!(first < second);
    }

    #[test]
    fn formats_parse_case_insensitively() {
        assert_eq!(FileFormat::parse("JSON"), Some(FileFormat::Json));
        assert_eq!(FileFormat::parse("Parquet"), Some(FileFormat::Parquet));
        assert_eq!(FileFormat::parse("csv"), None);
    }
}
