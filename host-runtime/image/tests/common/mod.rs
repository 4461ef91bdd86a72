//! Test helpers: a real registry (Debian's `docker-registry`) on 127.0.0.1,
//! and images built from Debian's busybox-static and pushed with oci-client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use tar::{EntryType, Header};
use vessel_image::digest::sha256;
use vessel_image::{ImageStore, RegistryConfig, StoreConfig};

/// A running registry; killed and its storage removed on drop, even when the
/// test panics.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound, then released for the registry).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts `docker-registry`, plain HTTP, with basic auth when `htpasswd`
    /// is given (user, password).
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = String::new();
        if let Some((user, pass)) = htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: vessel-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        Registry::start_with(dir, &auth)
    }

    /// Starts `docker-registry` with token auth: a client must get a Bearer
    /// token from `tokens` (the distribution token flow) first.
    pub fn start_with_tokens(tokens: &TokenServer) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let auth = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            tokens.port,
            tokens.cert.display()
        );
        Registry::start_with(dir, &auth)
    }

    /// Starts `docker-registry` in `dir` with the `auth` section given.
    fn start_with(dir: tempfile::TempDir, auth: &str) -> Registry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.exists(),
            "Debian's docker-registry is needed (tests/deps.sh installs it)"
        );
        let port = free_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up: {}",
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// `127.0.0.1:port`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The `service` (token audience) the token-auth registry names itself.
pub const TOKEN_SERVICE: &str = "vessel-test-registry";
/// Who the registry trusts to issue tokens.
pub const TOKEN_ISSUER: &str = "vessel-test-issuer";

/// A token server for a registry's Bearer flow (the distribution token
/// spec): to whoever sends its user and password as basic auth it hands a
/// JWT granting pull and push on `repos`, signed RS256 with a throwaway key
/// whose self-signed certificate (the registry's `rootcertbundle`) rides in
/// the token's `x5c` header; anyone else gets 401. With a refresh token it
/// also takes OAuth2 POSTs (`grant_type=refresh_token`) carrying that token;
/// without one it answers POSTs with 405, as a server without OAuth2 does.
pub struct TokenServer {
    pub port: u16,
    /// The JWT it hands out (also usable as CRI's `registry_token`).
    pub token: String,
    pub cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start(user: &str, pass: &str, repos: &[&str], refresh: Option<&str>) -> TokenServer {
        use base64::Engine as _;
        let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=vessel-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (tests/deps.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A PEM body is the base64 of the DER that x5c carries.
        let der_b64: String = std::fs::read_to_string(&cert)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [der_b64]});
        let claims = json!({
            "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "vessel-test",
            "access": repos.iter().map(|r| json!({
                "type": "repository", "name": r, "actions": ["pull", "push"],
            })).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut sign = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        sign.stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let signed = sign.wait_with_output().unwrap();
        assert!(signed.status.success());
        let token = format!("{signing_input}.{}", b64url(&signed.stdout));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let want = format!(
            "authorization: basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .to_ascii_lowercase();
        let answer = json!({"token": token, "expires_in": 3600}).to_string();
        let oauth_answer = json!({"access_token": token, "expires_in": 3600}).to_string();
        let refresh = refresh.map(|r| format!("refresh_token={r}"));
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let head = text.to_ascii_lowercase();
                let ok = |body: &str| {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                if head.starts_with("post ") {
                    // The form follows the head (small: it arrives with it or just after).
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let start = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
                    let mut form = text.as_bytes()[start..].to_vec();
                    while form.len() < len {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => form.extend_from_slice(&buf[..n]),
                        }
                    }
                    let form = String::from_utf8_lossy(&form).to_string();
                    let fields: Vec<&str> = form.split('&').collect();
                    let reply = match &refresh {
                        None => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                        Some(r) if fields.contains(&"grant_type=refresh_token") && fields.contains(&r.as_str()) => ok(&oauth_answer),
                        Some(_) => "HTTP/1.1 400 Bad Request\r\nContent-Length: 13\r\nConnection: close\r\n\r\ninvalid_grant".to_string(),
                    };
                    let _ = s.write_all(reply.as_bytes());
                    continue;
                }
                let reply = if head.lines().any(|l| l.trim() == want) {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = s.write_all(reply.as_bytes());
            }
        });
        TokenServer {
            port,
            token,
            cert,
            _dir: dir,
        }
    }
}

/// A layer: its uncompressed tar and the blob pushed.
#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: String,
}

/// Adds an entry with the given metadata.
pub fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: EntryType,
    data: &[u8],
    link: &str,
    mode: u32,
) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    if link.is_empty() {
        b.append_data(&mut h, path, data).unwrap();
    } else {
        b.append_link(&mut h, path, link).unwrap();
    }
}

/// A layer from a tar builder callback, gzip-compressed unless `plain`.
pub fn layer(docker: bool, f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    let blob = e.finish().unwrap();
    let media_type = if docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    Layer {
        tar,
        blob,
        media_type: media_type.into(),
    }
}

/// The busybox base layer: /bin/busybox from busybox-static, /bin/sh, a hard
/// link, and files a later layer removes.
pub fn busybox_layer(docker: bool) -> Layer {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    layer(docker, |b| {
        entry(b, "bin/", EntryType::Directory, b"", "", 0o755);
        entry(b, "bin/busybox", EntryType::Regular, &bb, "", 0o755);
        entry(b, "bin/sh", EntryType::Symlink, b"", "busybox", 0o777);
        entry(b, "bin/ls", EntryType::Link, b"", "bin/busybox", 0o755);
        entry(b, "etc/", EntryType::Directory, b"", "", 0o755);
        entry(b, "etc/old", EntryType::Regular, b"old\n", "", 0o644);
        entry(b, "etc/keep", EntryType::Regular, b"keep\n", "", 0o644);
        entry(b, "var/cache/", EntryType::Directory, b"", "", 0o755);
        entry(b, "var/cache/a", EntryType::Regular, b"a", "", 0o644);
    })
}

/// A second layer: a whiteout, an opaque directory, a setuid file.
pub fn top_layer(docker: bool) -> Layer {
    layer(docker, |b| {
        entry(b, "etc/.wh.old", EntryType::Regular, b"", "", 0o644);
        entry(
            b,
            "var/cache/.wh..wh..opq",
            EntryType::Regular,
            b"",
            "",
            0o644,
        );
        entry(b, "var/cache/b", EntryType::Regular, b"b", "", 0o644);
        entry(b, "bin/su", EntryType::Regular, b"#!/bin/sh\n", "", 0o4755);
    })
}

/// An image to push.
pub struct Image {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_type: String,
    pub layers: Vec<Layer>,
}

impl Image {
    pub fn id(&self) -> String {
        sha256(&self.config)
    }
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }
}

/// Builds config and manifest; `tweak` may edit the config JSON (lies, users).
pub fn image(
    layers: Vec<Layer>,
    docker: bool,
    arch: &str,
    tweak: impl FnOnce(&mut serde_json::Value),
) -> Image {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&l.tar)).collect();
    let mut config = json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    tweak(&mut config);
    let config = serde_json::to_vec(&config).unwrap();
    let (mt, ct) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        )
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": { "mediaType": ct, "digest": sha256(&config), "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": sha256(&l.blob), "size": l.blob.len(),
        })).collect::<Vec<_>>(),
    });
    Image {
        config,
        manifest: serde_json::to_vec(&manifest).unwrap(),
        manifest_type: mt.into(),
        layers,
    }
}

/// A client for pushing to a plain-HTTP registry.
pub async fn pusher(reg: &Registry, auth: &RegistryAuth) -> Client {
    let c = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    c.store_auth_if_needed(&reg.host(), auth).await;
    c
}

/// Pushes an image's blobs and its manifest under `repo:tag_or_digest`.
pub async fn push(c: &Client, reg: &Registry, repo: &str, tag: &str, img: &Image) {
    let r = Reference::with_tag(reg.host(), repo.into(), tag.into());
    c.push_blob(&r, img.config.clone(), &img.id())
        .await
        .unwrap();
    for l in &img.layers {
        c.push_blob(&r, l.blob.clone(), &sha256(&l.blob))
            .await
            .unwrap();
    }
    push_raw(c, reg, repo, tag, &img.manifest, &img.manifest_type).await;
}

/// Pushes a manifest-like document as is.
pub async fn push_raw(
    c: &Client,
    reg: &Registry,
    repo: &str,
    tag: &str,
    body: &[u8],
    media_type: &str,
) {
    let r = Reference::with_tag(reg.host(), repo.into(), tag.into());
    c.push_manifest_raw(
        &r,
        body.to_vec(),
        http::HeaderValue::from_str(media_type).unwrap(),
    )
    .await
    .unwrap();
}

/// An index of `images` as (image, arch, variant).
pub fn index(entries: &[(&Image, &str, Option<&str>)], docker: bool) -> (Vec<u8>, String) {
    let mt = if docker {
        "application/vnd.docker.distribution.manifest.list.v2+json"
    } else {
        "application/vnd.oci.image.index.v1+json"
    };
    let body = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "manifests": entries.iter().map(|(img, arch, variant)| {
            let mut p = json!({ "architecture": arch, "os": "linux" });
            if let Some(v) = variant { p["variant"] = json!(v); }
            json!({ "mediaType": img.manifest_type, "digest": img.digest(), "size": img.manifest.len(), "platform": p })
        }).collect::<Vec<_>>(),
    });
    (serde_json::to_vec(&body).unwrap(), mt.into())
}

/// A store under `dir` that speaks plain HTTP to the given hosts.
pub fn store_for(dir: &Path, registry_toml: &str) -> (ImageStore, StoreConfig) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = StoreConfig::new(dir.join("store"));
    cfg.registry = RegistryConfig::from_toml(registry_toml, Path::new("test.toml")).unwrap();
    let db = Arc::new(redb::Database::create(dir.join("state.redb")).unwrap());
    (ImageStore::open(cfg.clone(), db).unwrap(), cfg)
}

/// `[registries."host"] plain_http = true`.
pub fn plain_http(host: &str) -> String {
    format!("[registries.\"{host}\"]\nplain_http = true\n")
}

/// Every file name under `dir` (relative), recursively.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
