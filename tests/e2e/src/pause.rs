//! The sandbox ("pause") image a containerd pod needs, pushed to the local
//! registry: one static binary that holds the pod's namespaces (the test
//! host has no internet to fetch `registry.k8s.io/pause`).

use std::io::Write;
use std::path::Path;

use crate::registry::push_one_layer;

/// Pushes `pause:latest`, whose one file is `binary` as `/pause` (its
/// entrypoint); returns its reference.
pub async fn push_pause(host: &str, binary: &Path) -> String {
    let data = std::fs::read(binary)
        .unwrap_or_else(|e| panic!("the pause binary {}: {e}", binary.display()));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append_data(&mut h, "pause", data.as_slice())
        .expect("tar entry");
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let blob = gz.finish().expect("gzip");
    push_one_layer(
        host,
        "pause",
        serde_json::json!({ "Entrypoint": ["/pause"], "StopSignal": "SIGTERM" }),
        &tar,
        blob,
    )
    .await
}
