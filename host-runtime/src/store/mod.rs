//! The crash-safe state store: pod sandboxes and containers in `redb`
//! (docs/architecture.md, "State store").
//!
//! One database file, `<state dir>/vessel.redb`, shared with the image
//! store (which keeps its own tables). Every operation is one redb
//! transaction: a record and its name index change together or not at all,
//! and a commit is durable when it returns (redb's default
//! `Durability::Immediate`: fsync, copy-on-write pages, a checksummed
//! commit slot), so a crash at any point leaves the last committed state.
//!
//! Calls block (a commit waits for fsync, and redb runs one write
//! transaction at a time): async callers use `spawn_blocking`.
//!
//! Records are JSON in an envelope with a schema version; a record of
//! another version is an error naming it rather than a silent misread.

mod filter;
mod process;
mod records;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use filter::{ContainerFilter, SandboxFilter};
pub use records::{
    ContainerMetadata, ContainerRecord, ContainerState, ProcessRecord, SandboxMetadata,
    SandboxRecord, SandboxState, VmRecord,
};

/// The database's file name in vesseld's state directory.
pub const DATABASE_FILE: &str = "vessel.redb";

/// The version of the records' layout; bump it with a migration.
pub const SCHEMA_VERSION: u32 = 1;

/// Length of a generated id in hex characters (32 random bytes, as containerd's).
pub const ID_LEN: usize = 64;

type RecordTable = TableDefinition<'static, &'static str, &'static [u8]>;
type NameTable = TableDefinition<'static, &'static str, &'static str>;

const SANDBOXES: RecordTable = TableDefinition::new("pod_sandboxes");
const SANDBOX_NAMES: NameTable = TableDefinition::new("pod_sandbox_names");
const CONTAINERS: RecordTable = TableDefinition::new("containers");
const CONTAINER_NAMES: NameTable = TableDefinition::new("container_names");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption redb detected, ...).
    #[error("state database: {0}")]
    Database(#[source] Box<redb::Error>),
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process (another vesseld) holds the database.
    #[error("state database {path} is in use: another vesseld is running with this state dir (stop it first)")]
    InUse {
        /// The database file.
        path: String,
    },
    /// No random bytes for an id.
    #[error("cannot generate an id: {0}")]
    Random(String),
    /// No record with that id or id prefix.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `pod sandbox` or `container`.
        kind: &'static str,
        /// The id or prefix asked for.
        id: String,
    },
    /// An empty id, where the request needs one.
    #[error("{field} is empty: a {kind} id (or a unique prefix of one) is required")]
    EmptyId {
        /// `pod sandbox` or `container`.
        kind: &'static str,
        /// The request's field (`pod_sandbox_id`, `container_id`).
        field: &'static str,
    },
    /// An id prefix that more than one record has.
    #[error("{kind} id prefix {prefix:?} is ambiguous: it matches more than one {kind}")]
    Ambiguous {
        /// `pod sandbox` or `container`.
        kind: &'static str,
        /// The prefix.
        prefix: String,
    },
    /// The name (CRI metadata) is taken.
    #[error("{kind} name {name} is already in use by {id}")]
    AlreadyExists {
        /// `pod sandbox` or `container`.
        kind: &'static str,
        /// The name, as the store keys it.
        name: String,
        /// The id of the record that has it.
        id: String,
    },
    /// An update tried to change what identifies a record.
    #[error("{kind} {id}: an update may not change its id, name or sandbox")]
    Immutable {
        /// `pod sandbox` or `container`.
        kind: &'static str,
        /// The record's id.
        id: String,
    },
    /// A stored record cannot be read.
    #[error("{kind} {id}: stored record is unreadable: {message}")]
    Corrupt {
        /// `pod sandbox` or `container`.
        kind: &'static str,
        /// The record's key.
        id: String,
        /// What is wrong.
        message: String,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<StoreError> for tonic::Status {
    fn from(err: StoreError) -> Self {
        let msg = err.to_string();
        match err {
            StoreError::NotFound { .. } => tonic::Status::not_found(msg),
            StoreError::Ambiguous { .. } | StoreError::EmptyId { .. } => {
                tonic::Status::invalid_argument(msg)
            }
            StoreError::AlreadyExists { .. } => tonic::Status::already_exists(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}

/// Opens (or creates) `<state_dir>/vessel.redb`, creating the directory
/// (0700) if needed; the image store and [`Store`] share the handle.
pub fn open_database(state_dir: &Path) -> Result<Arc<Database>, StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| StoreError::StateDir {
            path: state_dir.display().to_string(),
            source,
        })?;
    let path = state_dir.join(DATABASE_FILE);
    match Database::create(&path) {
        Ok(db) => Ok(Arc::new(db)),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::InUse {
            path: path.display().to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// A new id: 32 random bytes as 64 lowercase hex characters.
pub fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; ID_LEN / 2];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(hex(&bytes))
}

/// Lowercase hex of bytes.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Bytes of a hex string (either case); `None` if it is not one.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            Some((digit(pair[0])? << 4 | digit(pair[1])?) as u8)
        })
        .collect()
}

/// What the generic operations need to know of a record type.
trait Record: Serialize + DeserializeOwned {
    const KIND: &'static str;
    /// The CRI request field that carries this kind's id.
    const ID_FIELD: &'static str;
    const TABLE: RecordTable;
    const NAMES: NameTable;
    fn id(&self) -> &str;
    /// The CRI name, as the name index keys it.
    fn name_key(&self) -> String;
    /// What else an update must not change.
    fn owner(&self) -> &str {
        ""
    }
}

impl Record for SandboxRecord {
    const KIND: &'static str = "pod sandbox";
    const ID_FIELD: &'static str = "pod_sandbox_id";
    const TABLE: RecordTable = SANDBOXES;
    const NAMES: NameTable = SANDBOX_NAMES;
    fn id(&self) -> &str {
        &self.id
    }
    fn name_key(&self) -> String {
        let m = &self.metadata;
        sandbox_name_key(&m.name, &m.namespace, &m.uid, m.attempt)
    }
}

impl Record for ContainerRecord {
    const KIND: &'static str = "container";
    const ID_FIELD: &'static str = "container_id";
    const TABLE: RecordTable = CONTAINERS;
    const NAMES: NameTable = CONTAINER_NAMES;
    fn id(&self) -> &str {
        &self.id
    }
    fn name_key(&self) -> String {
        container_name_key(&self.sandbox_id, &self.metadata.name, self.metadata.attempt)
    }
    fn owner(&self) -> &str {
        &self.sandbox_id
    }
}

/// The kubelet's sandbox name (metadata name, namespace, uid, attempt) as
/// an unambiguous key (a JSON array: no separator can be forged).
fn sandbox_name_key(name: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    serde_json::json!([name, namespace, uid, attempt]).to_string()
}

/// A container's name within its sandbox (metadata name and attempt).
fn container_name_key(sandbox_id: &str, name: &str, attempt: u32) -> String {
    serde_json::json!([sandbox_id, name, attempt]).to_string()
}

/// The stored form of a record: its schema version, then the record.
#[derive(Serialize)]
struct Envelope<'a, T> {
    schema: u32,
    record: &'a T,
}

#[derive(Deserialize)]
struct StoredEnvelope {
    schema: u32,
    record: serde_json::Value,
}

fn encode<R: Record>(record: &R) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Envelope {
        schema: SCHEMA_VERSION,
        record,
    })
    .map_err(|e| StoreError::Corrupt {
        kind: R::KIND,
        id: record.id().to_string(),
        message: format!("cannot encode: {e}"),
    })
}

fn decode<R: Record>(id: &str, bytes: &[u8]) -> Result<R, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        kind: R::KIND,
        id: id.to_string(),
        message,
    };
    let envelope: StoredEnvelope =
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if envelope.schema != SCHEMA_VERSION {
        return Err(corrupt(format!(
            "schema version {} (this vesseld reads {SCHEMA_VERSION})",
            envelope.schema
        )));
    }
    serde_json::from_value(envelope.record).map_err(|e| corrupt(e.to_string()))
}

/// The state store (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens the store's tables in `db`, creating them if needed.
    pub fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        for table in [SANDBOXES, CONTAINERS] {
            txn.open_table(table)?;
        }
        for table in [SANDBOX_NAMES, CONTAINER_NAMES] {
            txn.open_table(table)?;
        }
        txn.commit()?;
        Ok(Store { db })
    }

    // --- sandboxes ------------------------------------------------------------

    /// Adds a sandbox if its name is free; a taken name is
    /// [`StoreError::AlreadyExists`] with the id that has it.
    pub fn insert_sandbox(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        self.insert(record, |_| Ok(()))
    }

    /// The sandbox with exactly this id.
    pub fn sandbox(&self, id: &str) -> Result<SandboxRecord, StoreError> {
        self.get(id)
    }

    /// The sandbox with this id or unique id prefix.
    pub fn find_sandbox(&self, id_or_prefix: &str) -> Result<SandboxRecord, StoreError> {
        let id = self.resolve::<SandboxRecord>(id_or_prefix)?;
        self.get(&id)
    }

    /// The id of the sandbox with this CRI name, if any.
    pub fn sandbox_by_name(
        &self,
        metadata: &SandboxMetadata,
    ) -> Result<Option<String>, StoreError> {
        let key = sandbox_name_key(
            &metadata.name,
            &metadata.namespace,
            &metadata.uid,
            metadata.attempt,
        );
        let txn = self.db.begin_read()?;
        let names = txn.open_table(SANDBOX_NAMES)?;
        Ok(names.get(key.as_str())?.map(|v| v.value().to_string()))
    }

    /// Changes a sandbox in one transaction and returns it as stored.
    pub fn update_sandbox(
        &self,
        id: &str,
        change: impl FnOnce(&mut SandboxRecord),
    ) -> Result<SandboxRecord, StoreError> {
        self.update(id, change)
    }

    /// Removes a sandbox and every container of it, in one transaction;
    /// returns the sandbox, or `None` if it was not there (idempotent).
    pub fn delete_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut containers = txn.open_table(CONTAINERS)?;
            let mut container_names = txn.open_table(CONTAINER_NAMES)?;
            let mut doomed = Vec::new();
            for entry in containers.iter()? {
                let (key, value) = entry?;
                let c: ContainerRecord = decode(key.value(), value.value())?;
                if c.sandbox_id == id {
                    doomed.push(c);
                }
            }
            for c in doomed {
                containers.remove(c.id.as_str())?;
                remove_name(&mut container_names, &c.name_key(), &c.id)?;
            }
            let mut sandboxes = txn.open_table(SANDBOXES)?;
            let mut names = txn.open_table(SANDBOX_NAMES)?;
            let removed = sandboxes.remove(id)?;
            match removed {
                Some(bytes) => {
                    let s: SandboxRecord = decode(id, bytes.value())?;
                    drop(bytes);
                    remove_name(&mut names, &s.name_key(), id)?;
                    Some(s)
                }
                None => None,
            }
        };
        txn.commit()?;
        Ok(removed)
    }

    /// The sandboxes the filter matches, sorted by id.
    pub fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>, StoreError> {
        self.list(&filter.id, |s: &SandboxRecord| filter.matches(s))
    }

    // --- containers -----------------------------------------------------------

    /// Adds a container if its sandbox exists and its name (metadata name
    /// and attempt, within the sandbox) is free; a taken name is
    /// [`StoreError::AlreadyExists`] with the id that has it.
    pub fn insert_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        let sandbox_id = record.sandbox_id.clone();
        self.insert(record, move |txn| {
            let sandboxes = txn.open_table(SANDBOXES)?;
            if sandboxes.get(sandbox_id.as_str())?.is_none() {
                return Err(StoreError::NotFound {
                    kind: SandboxRecord::KIND,
                    id: sandbox_id.clone(),
                });
            }
            Ok(())
        })
    }

    /// The container with exactly this id.
    pub fn container(&self, id: &str) -> Result<ContainerRecord, StoreError> {
        self.get(id)
    }

    /// The container with this id or unique id prefix.
    pub fn find_container(&self, id_or_prefix: &str) -> Result<ContainerRecord, StoreError> {
        let id = self.resolve::<ContainerRecord>(id_or_prefix)?;
        self.get(&id)
    }

    /// Changes a container in one transaction and returns it as stored.
    pub fn update_container(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, StoreError> {
        self.update(id, change)
    }

    /// Removes a container; returns it, or `None` if it was not there (idempotent).
    pub fn delete_container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut table = txn.open_table(CONTAINERS)?;
            let mut names = txn.open_table(CONTAINER_NAMES)?;
            let removed = table.remove(id)?;
            match removed {
                Some(bytes) => {
                    let c: ContainerRecord = decode(id, bytes.value())?;
                    drop(bytes);
                    remove_name(&mut names, &c.name_key(), id)?;
                    Some(c)
                }
                None => None,
            }
        };
        txn.commit()?;
        Ok(removed)
    }

    /// The containers the filter matches, sorted by id.
    pub fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerRecord>, StoreError> {
        self.list(&filter.id, |c: &ContainerRecord| filter.matches(c))
    }

    // --- generic ----------------------------------------------------------------

    fn insert<R: Record>(
        &self,
        record: &R,
        check: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let name = record.name_key();
        let txn = self.db.begin_write()?;
        check(&txn)?;
        {
            let mut names = txn.open_table(R::NAMES)?;
            if let Some(existing) = names.get(name.as_str())? {
                return Err(StoreError::AlreadyExists {
                    kind: R::KIND,
                    name,
                    id: existing.value().to_string(),
                });
            }
            let mut table = txn.open_table(R::TABLE)?;
            if table.get(record.id())?.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: R::KIND,
                    name: format!("id {}", record.id()),
                    id: record.id().to_string(),
                });
            }
            table.insert(record.id(), bytes.as_slice())?;
            names.insert(name.as_str(), record.id())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn get<R: Record>(&self, id: &str) -> Result<R, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let bytes = table.get(id)?.ok_or_else(|| StoreError::NotFound {
            kind: R::KIND,
            id: id.to_string(),
        })?;
        decode(id, bytes.value())
    }

    /// The full id of the one record whose id starts with `prefix`.
    fn resolve<R: Record>(&self, prefix: &str) -> Result<String, StoreError> {
        let not_found = || StoreError::NotFound {
            kind: R::KIND,
            id: prefix.to_string(),
        };
        if prefix.is_empty() {
            return Err(StoreError::EmptyId {
                kind: R::KIND,
                field: R::ID_FIELD,
            });
        }
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let mut found: Option<String> = None;
        for entry in table.range(prefix..)? {
            let (key, _) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            if key == prefix {
                return Ok(key.to_string());
            }
            if found.is_some() {
                return Err(StoreError::Ambiguous {
                    kind: R::KIND,
                    prefix: prefix.to_string(),
                });
            }
            found = Some(key.to_string());
        }
        found.ok_or_else(not_found)
    }

    fn update<R: Record>(&self, id: &str, change: impl FnOnce(&mut R)) -> Result<R, StoreError> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut table = txn.open_table(R::TABLE)?;
            let mut record: R = {
                let bytes = table.get(id)?.ok_or_else(|| StoreError::NotFound {
                    kind: R::KIND,
                    id: id.to_string(),
                })?;
                decode(id, bytes.value())?
            };
            let (name, owner) = (record.name_key(), record.owner().to_string());
            change(&mut record);
            if record.id() != id || record.name_key() != name || record.owner() != owner {
                return Err(StoreError::Immutable {
                    kind: R::KIND,
                    id: id.to_string(),
                });
            }
            table.insert(id, encode(&record)?.as_slice())?;
            record
        };
        txn.commit()?;
        Ok(record)
    }

    fn list<R: Record>(
        &self,
        prefix: &str,
        keep: impl Fn(&R) -> bool,
    ) -> Result<Vec<R>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..)? {
            let (key, value) = entry?;
            if !key.value().starts_with(prefix) {
                break;
            }
            let record: R = decode(key.value(), value.value())?;
            if keep(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }
}

/// Removes a name entry if it still points at `id`.
fn remove_name(
    names: &mut redb::Table<'_, &'static str, &'static str>,
    name: &str,
    id: &str,
) -> Result<(), StoreError> {
    let owned = names.get(name)?.is_some_and(|v| v.value() == id);
    if owned {
        names.remove(name)?;
    }
    Ok(())
}
