//! Pull + unpack time and disk use, vessel's image store against containerd
//! 1.6 (Debian's `containerd` package, driven with `ctr`), from the same local
//! docker-registry, interleaved, cold store each time. Run as root with
//! `cargo bench -p vessel-image --bench pull_vs_containerd` (docs/benchmarks.md).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use oci_client::secrets::RegistryAuth;

/// A containerd daemon with its own root, killed on drop.
struct Containerd {
    child: Child,
    sock: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let sock = p.join("c.sock");
        std::fs::write(
            p.join("config.toml"),
            format!(
                "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{s}\"\n",
                r = p.display(),
                s = sock.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(p.join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (apt-get install containerd)");
        let c = Containerd { child, sock, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.sock.exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        c
    }

    /// `ctr images pull` (fetch + unpack into the overlayfs snapshotter).
    fn pull(&self, image: &str) -> Duration {
        let t = Instant::now();
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.sock)
            .args(["-n", "bench", "images", "pull", "--plain-http", image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    }
}

/// Bytes allocated under `p` (`du -s --block-size=1`).
fn du(p: &Path) -> u64 {
    let out = Command::new("du")
        .arg("-s")
        .arg("--block-size=1")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap()
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn noise_layer(seed: u64, len: usize) -> Layer {
    let data = noise(seed, len);
    layer(false, |b| {
        entry(
            b,
            &format!("data{seed}"),
            tar::EntryType::Regular,
            &data,
            "",
            0o644,
        )
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let h = reg.host();
    // A four-layer image of 61 MiB (incompressible data, gzip).
    let mut layers = vec![busybox_layer(false)];
    for i in 0..3 {
        layers.push(noise_layer(i, 20 << 20));
    }
    let big = image(layers, false, "amd64", |_| {});
    let size: usize = big.layers.iter().map(|l| l.blob.len()).sum();
    push(&c, &reg, "big", "v1", &big).await;
    let r = format!("{h}/big:v1");

    // Warm-up (registry page cache), not counted.
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_for(dir.path(), &plain_http(&h));
        store
            .pull(&r, &vessel_image::Credentials::default())
            .await
            .unwrap();
        Containerd::start().pull(&r);
    }
    let (mut v, mut cd) = (vec![], vec![]);
    for run in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_for(dir.path(), &plain_http(&h));
        let t = Instant::now();
        store
            .pull(&r, &vessel_image::Credentials::default())
            .await
            .unwrap();
        v.push(t.elapsed());
        let d = Containerd::start();
        cd.push(d.pull(&r));
        println!("run {run}: vessel {:?}  containerd {:?}", v[run], cd[run]);
    }
    let (mv, mc) = (median(v), median(cd));
    println!(
        "pull+unpack of {} MiB, median of 5: vessel {mv:?}, containerd {mc:?}, ratio {:.2}",
        size >> 20,
        mv.as_secs_f64() / mc.as_secs_f64()
    );

    // Disk use after five images that share a base (busybox + 20 MiB).
    let shared = noise_layer(100, 20 << 20);
    let mut refs = vec![];
    for i in 0..5 {
        let img = image(
            vec![
                busybox_layer(false),
                shared.clone(),
                noise_layer(200 + i, 1 << 20),
            ],
            false,
            "amd64",
            |_| {},
        );
        push(&c, &reg, "family", &format!("v{i}"), &img).await;
        refs.push(format!("{h}/family:v{i}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = store_for(dir.path(), &plain_http(&h));
    let d = Containerd::start();
    for r in &refs {
        store
            .pull(r, &vessel_image::Credentials::default())
            .await
            .unwrap();
        d.pull(r);
    }
    println!(
        "disk after 5 images sharing a 22 MiB base: vessel {} MiB, containerd {} MiB",
        du(&cfg.root) >> 20,
        du(&d.dir.path().join("root")) >> 20
    );
}
