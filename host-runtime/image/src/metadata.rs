//! Image metadata in redb: names -> image id, image id -> record (manifest,
//! config, layers with their chain ids), container leases. It lives in the
//! database vesseld keeps its runtime state in (the caller passes the
//! `Database`), in tables of its own, and every change is one transaction.
//!
//! What references a blob or layer is derived from these tables when GC runs
//! (mark and sweep, as containerd's GC does) instead of stored counters: a
//! counter can drift after a crash between a count and a file operation,
//! a derived count cannot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};

const NAMES: TableDefinition<&str, &str> = TableDefinition::new("image_names");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_leases");

/// One layer of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Compressed blob digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// Uncompressed digest (from the config).
    pub diff_id: String,
    /// Chain id: names the unpacked directory.
    pub chain_id: String,
}

/// A stored image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Image id: the config digest, as containerd reports it.
    pub id: String,
    /// The manifest that was unpacked (the platform's, under an index).
    pub manifest_digest: String,
    /// The digest names resolve to (the index, when pulled from one).
    pub target_digest: String,
    /// Other manifest-like blobs the image keeps (the index).
    pub extra_blobs: Vec<String>,
    /// Config blob size.
    pub config_size: u64,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// Manifest + config + compressed layers, as containerd sums it.
    pub size: u64,
    /// The config's `User`.
    pub user: String,
    /// Never garbage collected while named.
    pub pinned: bool,
}

impl ImageRecord {
    /// Every blob this image needs.
    pub fn blobs(&self) -> Vec<String> {
        let mut v = vec![self.manifest_digest.clone(), self.id.clone()];
        v.extend(self.extra_blobs.iter().cloned());
        v.extend(self.layers.iter().map(|l| l.digest.clone()));
        v
    }
}

/// A container's hold on an image (its rootfs is made from it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    /// The image id.
    pub image_id: String,
    /// Where the rootfs is mounted.
    pub target: String,
}

/// The metadata tables.
#[derive(Clone)]
pub struct Metadata {
    db: Arc<Database>,
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ImageError::Database(format!("encode: {e}")))
}

fn dec<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| ImageError::Database(format!("decode: {e}")))
}

impl Metadata {
    /// Uses `db`, creating the store's tables if they are missing.
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write()?;
        txn.open_table(NAMES)?;
        txn.open_table(IMAGES)?;
        txn.open_table(LEASES)?;
        txn.commit()?;
        Ok(Metadata { db })
    }

    /// Stores `rec` and points each of `names` at it, in one transaction. A
    /// name that pointed at another image moves (that image keeps its others).
    pub fn put_image(&self, rec: &ImageRecord, names: &[String]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut images = txn.open_table(IMAGES)?;
            let mut by_name = txn.open_table(NAMES)?;
            let bytes = enc(rec)?;
            images.insert(rec.id.as_str(), bytes.as_slice())?;
            for n in names {
                by_name.insert(n.as_str(), rec.id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The image a name points to.
    pub fn id_by_name(&self, name: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(NAMES)?;
        Ok(t.get(name)?.map(|v| v.value().to_string()))
    }

    /// The record of an image id.
    pub fn image(&self, id: &str) -> Result<Option<ImageRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(IMAGES)?;
        match t.get(id)? {
            Some(v) => Ok(Some(dec(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every image with its names (sorted), named or not.
    pub fn images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let txn = self.db.begin_read()?;
        let names = txn.open_table(NAMES)?;
        let images = txn.open_table(IMAGES)?;
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in names.iter()? {
            let (k, v) = kv?;
            by_id
                .entry(v.value().to_string())
                .or_default()
                .push(k.value().to_string());
        }
        let mut out = Vec::new();
        for kv in images.iter()? {
            let (_, v) = kv?;
            let rec: ImageRecord = dec(v.value())?;
            let names = by_id.remove(&rec.id).unwrap_or_default();
            out.push((rec, names));
        }
        Ok(out)
    }

    /// Names pointing at `id`.
    pub fn names_of(&self, id: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(NAMES)?;
        let mut out = Vec::new();
        for kv in t.iter()? {
            let (k, v) = kv?;
            if v.value() == id {
                out.push(k.value().to_string());
            }
        }
        Ok(out)
    }

    /// Removes names, in one transaction (records stay until GC).
    pub fn remove_names(&self, names: &[String]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(NAMES)?;
            for n in names {
                t.remove(n.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes the records of images that have no name and no lease, in one
    /// transaction. Returns the deleted records.
    pub fn drop_unreferenced(&self) -> Result<Vec<ImageRecord>> {
        let txn = self.db.begin_write()?;
        let mut dropped = Vec::new();
        {
            let names = txn.open_table(NAMES)?;
            let leases = txn.open_table(LEASES)?;
            let mut images = txn.open_table(IMAGES)?;
            let mut held: BTreeSet<String> = BTreeSet::new();
            for kv in names.iter()? {
                held.insert(kv?.1.value().to_string());
            }
            for kv in leases.iter()? {
                let l: Lease = dec(kv?.1.value())?;
                held.insert(l.image_id);
            }
            let mut gone = Vec::new();
            for kv in images.iter()? {
                let (k, v) = kv?;
                if !held.contains(k.value()) {
                    gone.push(k.value().to_string());
                    dropped.push(dec::<ImageRecord>(v.value())?);
                }
            }
            for id in gone {
                images.remove(id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(dropped)
    }

    /// Records that `container` uses image `lease.image_id`. Refuses a second
    /// lease for the same container.
    pub fn add_lease(&self, container: &str, lease: &Lease) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let images = txn.open_table(IMAGES)?;
            if images.get(lease.image_id.as_str())?.is_none() {
                return Err(ImageError::NotFound(lease.image_id.clone()));
            }
            let mut t = txn.open_table(LEASES)?;
            if t.get(container)?.is_some() {
                return Err(ImageError::InvalidArgument {
                    field: "container_id".into(),
                    reason: format!("container {container:?} already has a rootfs"),
                });
            }
            let bytes = enc(lease)?;
            t.insert(container, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The lease of a container.
    pub fn lease(&self, container: &str) -> Result<Option<Lease>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LEASES)?;
        match t.get(container)? {
            Some(v) => Ok(Some(dec(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every lease, by container id.
    pub fn leases(&self) -> Result<Vec<(String, Lease)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LEASES)?;
        let mut out = Vec::new();
        for kv in t.iter()? {
            let (k, v) = kv?;
            out.push((k.value().to_string(), dec(v.value())?));
        }
        Ok(out)
    }

    /// Drops a container's lease.
    pub fn remove_lease(&self, container: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(LEASES)?.remove(container)?;
        txn.commit()?;
        Ok(())
    }
}
