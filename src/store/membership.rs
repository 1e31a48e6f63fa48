//! Durable segment membership (`api.md` §9): per tenant and profile XID, the `ups` namespace map of
//! segment id → `{status, lastQualificationTime, version}`.
//!
//! Stored in its own redb file beside the profile store, so a segment job's results are written in
//! **one** transaction, committed when it succeeds (atomically visible); a failed or cancelled job
//! drops it and changes nothing. Memberships are keyed by the XID of the profile's primary identity: when a later identity
//! merge changes a profile's primary identity, its memberships are found again at the next job, which
//! recomputes them (the previous key's entries are superseded, not migrated).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::tenant::Tenant;

/// `tenant-prefix ‖ xid` → JSON of [`Memberships`].
const MEMBERSHIPS: TableDefinition<&str, &[u8]> = TableDefinition::new("memberships");

/// redb's cache for memberships. A job's write keeps at most half the cache of dirty pages in
/// memory and spills the rest to the file, so this bounds what a job's changes cost in memory (with
/// redb's default of 1 GiB, a job changing most memberships of a 1M store grew the service by
/// ~1 GB); lookups miss to the operating system's page cache.
const CACHE_BYTES: usize = 128 << 20;

/// The file name inside the data directory.
pub const DB_FILE: &str = "membership.redb";

/// The membership status of a profile in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipStatus {
    /// Qualifies (newly or still).
    Realized,
    /// Qualified at the previous evaluation, not now.
    Exited,
}

/// One membership entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// Realized or exited.
    pub status: MembershipStatus,
    /// When the status last changed (RFC 3339, UTC).
    pub last_qualification_time: String,
    /// The definition version evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A profile's memberships in Platform segments (namespace `ups`), by segment id.
pub type Memberships = BTreeMap<String, Membership>;

/// Errors of the membership store.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The database failed.
    #[error("membership database error: {0}")]
    Storage(#[from] redb::Error),
    /// A stored value is not valid JSON.
    #[error("membership value is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

crate::store::redb_errors_into!(MembershipError);

/// The membership store; `Send + Sync`, shared through an `Arc`; every call is blocking.
pub struct MembershipStore {
    db: Database,
}

fn prefix(tenant: &Tenant) -> String {
    // Newlines cannot occur in org ids or sandbox names (headers), so the prefix is unambiguous.
    format!("{}\n{}\n", tenant.org_id, tenant.sandbox)
}

impl MembershipStore {
    /// Opens (creating) `membership.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, MembershipError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(DB_FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(MEMBERSHIPS)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// Returns one profile's memberships.
    pub fn get(&self, tenant: &Tenant, xid: &str) -> Result<Memberships, MembershipError> {
        self.snapshot(tenant)?.get(xid)
    }

    /// Opens a read snapshot of a tenant's memberships: passes over the whole store (segment and
    /// export jobs) look profiles up one by one as they reach them, so their memory does not grow
    /// with the number of stored memberships. `Send + Sync`: one snapshot serves every thread.
    pub fn snapshot(&self, tenant: &Tenant) -> Result<MembershipSnapshot, MembershipError> {
        let txn = self.db.begin_read()?;
        Ok(MembershipSnapshot {
            table: txn.open_table(MEMBERSHIPS)?,
            prefix: prefix(tenant),
        })
    }

    /// Starts a tenant's changes: written as they come, visible to others only once
    /// [`MembershipWrite::commit`] returns, discarded if the write is dropped uncommitted. One
    /// write runs at a time; a second waits for the first to end.
    pub fn begin_write(&self, tenant: &Tenant) -> Result<MembershipWrite, MembershipError> {
        Ok(MembershipWrite {
            txn: self.db.begin_write()?,
            prefix: prefix(tenant),
        })
    }
}

/// A segment job's membership changes in one open transaction; see
/// [`MembershipStore::begin_write`]. Written partition by partition, so a job's memory does not
/// grow with the number of profiles whose memberships change.
pub struct MembershipWrite {
    txn: redb::WriteTransaction,
    prefix: String,
}

impl MembershipWrite {
    /// Replaces the memberships of the given profiles (an empty map removes them).
    pub fn replace(&mut self, updates: &[(String, Memberships)]) -> Result<(), MembershipError> {
        let mut table = self.txn.open_table(MEMBERSHIPS)?;
        for (xid, memberships) in updates {
            let key = format!("{}{xid}", self.prefix);
            if memberships.is_empty() {
                table.remove(key.as_str())?;
            } else {
                table.insert(key.as_str(), serde_json::to_vec(memberships)?.as_slice())?;
            }
        }
        Ok(())
    }

    /// Returns one profile's memberships as this write leaves them.
    pub fn get(&self, xid: &str) -> Result<Memberships, MembershipError> {
        let table = self.txn.open_table(MEMBERSHIPS)?;
        match table.get(format!("{}{xid}", self.prefix).as_str())? {
            Some(value) => Ok(serde_json::from_slice(value.value())?),
            None => Ok(Memberships::new()),
        }
    }

    /// Makes every change durable and visible at once.
    pub fn commit(self) -> Result<(), MembershipError> {
        self.txn.commit()?;
        Ok(())
    }
}

/// The memberships of one tenant as of one moment; see [`MembershipStore::snapshot`].
pub struct MembershipSnapshot {
    table: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    prefix: String,
}

impl MembershipSnapshot {
    /// Returns one profile's memberships (empty when it has none).
    pub fn get(&self, xid: &str) -> Result<Memberships, MembershipError> {
        match self.table.get(format!("{}{xid}", self.prefix).as_str())? {
            Some(value) => Ok(serde_json::from_slice(value.value())?),
            None => Ok(Memberships::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_are_per_tenant_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = MembershipStore::open(dir.path()).unwrap();
        let (a, b) = (Tenant::new("o", "prod"), Tenant::new("o", "prod2"));
        let entry = Membership {
            status: MembershipStatus::Realized,
            last_qualification_time: "2026-01-01T00:00:00Z".into(),
            version: None,
        };
        let memberships = Memberships::from([("s1".to_owned(), entry)]);
        let mut write = store.begin_write(&a).unwrap();
        write
            .replace(&[("x1".into(), memberships.clone())])
            .unwrap();
        assert_eq!(
            write.get("x1").unwrap(),
            memberships,
            "the write sees itself"
        );
        assert!(
            store.get(&a, "x1").unwrap().is_empty(),
            "others see it once committed"
        );
        write.commit().unwrap();
        let before = store.snapshot(&a).unwrap();
        assert_eq!(store.get(&a, "x1").unwrap(), memberships);
        assert!(store.get(&b, "x1").unwrap().is_empty());
        let mut write = store.begin_write(&a).unwrap();
        write.replace(&[("x1".into(), Memberships::new())]).unwrap();
        drop(write);
        assert_eq!(
            store.get(&a, "x1").unwrap(),
            memberships,
            "dropped uncommitted"
        );
        let mut write = store.begin_write(&a).unwrap();
        write.replace(&[("x1".into(), Memberships::new())]).unwrap();
        write.commit().unwrap();
        assert!(store.get(&a, "x1").unwrap().is_empty());
        // A snapshot keeps what it saw.
        assert_eq!(before.get("x1").unwrap(), memberships);
    }
}
