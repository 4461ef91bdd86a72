//! Garbage collection, mark and sweep: image records with no name and no
//! container lease are dropped, then every blob and layer directory that no
//! remaining image needs is removed. Runs after `remove` and at start-up,
//! under the store's GC lock so it never races a pull's new content.

use std::collections::BTreeSet;

use crate::content::ContentStore;
use crate::error::Result;
use crate::layers::LayerStore;
use crate::metadata::Metadata;

/// What a collection freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Image records dropped.
    pub images: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Blob bytes freed.
    pub blob_bytes: u64,
    /// Layer directories removed.
    pub layers: usize,
}

/// Runs one collection (blocking).
pub fn collect(meta: &Metadata, content: &ContentStore, layers: &LayerStore) -> Result<GcReport> {
    let mut report = GcReport {
        images: meta.drop_unreferenced()?.len(),
        ..Default::default()
    };
    let mut blobs = BTreeSet::new();
    let mut chains = BTreeSet::new();
    for (rec, _) in meta.images()? {
        blobs.extend(rec.blobs());
        chains.extend(rec.layers.iter().map(|l| l.chain_id.clone()));
    }
    for d in content.list()? {
        if !blobs.contains(&d) {
            report.blob_bytes += content.delete(&d)?;
            report.blobs += 1;
        }
    }
    for c in layers.list()? {
        if !chains.contains(&c) {
            layers.remove(&c)?;
            report.layers += 1;
        }
    }
    if report != GcReport::default() {
        tracing::info!(
            images = report.images,
            blobs = report.blobs,
            bytes = report.blob_bytes,
            layers = report.layers,
            "image gc"
        );
    }
    Ok(report)
}
