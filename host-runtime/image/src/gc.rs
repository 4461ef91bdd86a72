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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::digest::sha256;
    use crate::metadata::{ImageRecord, LayerRecord, Lease};

    fn layer(n: &str) -> LayerRecord {
        LayerRecord {
            digest: sha256(format!("blob-{n}").as_bytes()),
            size: 6,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            diff_id: sha256(format!("diff-{n}").as_bytes()),
            chain_id: sha256(format!("chain-{n}").as_bytes()),
        }
    }

    fn image(n: &str, layers: Vec<LayerRecord>) -> ImageRecord {
        ImageRecord {
            id: sha256(format!("config-{n}").as_bytes()),
            manifest_digest: sha256(format!("manifest-{n}").as_bytes()),
            target_digest: sha256(format!("manifest-{n}").as_bytes()),
            extra_blobs: vec![],
            config_size: 8,
            layers,
            size: 1,
            user: String::new(),
            pinned: false,
        }
    }

    #[test]
    fn shared_content_lives_while_any_image_or_lease_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("state.redb")).unwrap());
        let meta = Metadata::new(db).unwrap();
        let content = ContentStore::open(&dir.path().join("c")).unwrap();
        let layers = LayerStore::open(&dir.path().join("layers")).unwrap();
        let base = layer("base");
        let a = image("a", vec![base.clone(), layer("a")]);
        let b = image("b", vec![base.clone(), layer("b")]);
        let fake_blob = |d: &str| {
            std::fs::write(content.path(d).unwrap(), b"x").unwrap();
        };
        for rec in [&a, &b] {
            for d in rec.blobs() {
                fake_blob(&d);
            }
            for l in &rec.layers {
                std::fs::create_dir_all(layers.path(&l.chain_id).unwrap()).unwrap();
            }
        }
        let stray = sha256(b"stray");
        fake_blob(&stray);
        meta.put_image(&a, &["r/a:1".into(), "r/a:2".into()])
            .unwrap();
        meta.put_image(&b, &["r/b:1".into()]).unwrap();

        // Nothing referenced is collected; the stray blob is.
        let r = collect(&meta, &content, &layers).unwrap();
        assert_eq!((r.images, r.blobs, r.layers), (0, 1, 0));

        // One of a's two names: a stays.
        meta.remove_names(&["r/a:1".into()]).unwrap();
        assert_eq!(
            collect(&meta, &content, &layers).unwrap(),
            GcReport::default()
        );
        // a's last name: its own blobs and layer go, the shared base stays.
        meta.remove_names(&["r/a:2".into()]).unwrap();
        let r = collect(&meta, &content, &layers).unwrap();
        assert_eq!((r.images, r.blobs, r.layers), (1, 3, 1));
        assert!(layers.exists(&base.chain_id));
        assert!(content.has(&base.digest, 1));
        // b held by a container lease: unnamed but kept.
        meta.add_lease(
            "c1",
            &Lease {
                image_id: b.id.clone(),
                target: "/x".into(),
            },
        )
        .unwrap();
        meta.remove_names(&["r/b:1".into()]).unwrap();
        assert_eq!(
            collect(&meta, &content, &layers).unwrap(),
            GcReport::default()
        );
        assert!(meta.image(&b.id).unwrap().is_some());
        // Lease released: everything goes.
        meta.remove_lease("c1").unwrap();
        let r = collect(&meta, &content, &layers).unwrap();
        assert_eq!((r.images, r.layers), (1, 2));
        assert!(content.list().unwrap().is_empty());
        assert!(layers.list().unwrap().is_empty());
    }
}
