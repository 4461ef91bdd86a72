//! Integration tests against a real registry (Debian's docker-registry on
//! 127.0.0.1, plain HTTP): images the tests build from busybox-static and
//! push with oci-client, pulled, listed, inspected, removed and mounted.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use oci_client::secrets::RegistryAuth;
use vessel_image::{Credentials, ImageError};

fn no_creds() -> Credentials {
    Credentials::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_status_remove_and_gc() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let img = image(
        vec![busybox_layer(false), top_layer(false)],
        false,
        "amd64",
        |cfg| {
            cfg["config"]["User"] = serde_json::json!("1000:1000");
        },
    );
    push(&c, &reg, "tools/busybox", "1.0", &img).await;
    push(&c, &reg, "tools/busybox", "latest", &img).await;
    let named = image(vec![busybox_layer(false)], false, "amd64", |cfg| {
        cfg["config"]["User"] = serde_json::json!("nobody:nogroup");
    });
    push(&c, &reg, "tools/named", "v1", &named).await;

    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = store_for(dir.path(), &plain_http(&reg.host()));
    let h = reg.host();

    let pulled = store
        .pull(&format!("{h}/tools/busybox:1.0"), &no_creds())
        .await
        .unwrap();
    assert_eq!(pulled.id, img.id(), "the image id is the config digest");
    let again = store
        .pull(&format!("{h}/tools/busybox"), &no_creds())
        .await
        .unwrap();
    assert_eq!(again.id, img.id());

    let st = store
        .status(&format!("{h}/tools/busybox:latest"))
        .unwrap()
        .unwrap();
    assert_eq!(
        st.repo_tags,
        vec![
            format!("{h}/tools/busybox:1.0"),
            format!("{h}/tools/busybox:latest")
        ]
    );
    assert_eq!(
        st.repo_digests,
        vec![format!("{h}/tools/busybox@{}", img.digest())]
    );
    assert_eq!(st.uid, Some(1000));
    let want_size = img.manifest.len()
        + img.config.len()
        + img.layers.iter().map(|l| l.blob.len()).sum::<usize>();
    assert_eq!(st.size, want_size as u64);
    // By id, by bare hex id and by digest reference.
    assert_eq!(store.status(&img.id()).unwrap().unwrap().id, img.id());
    assert_eq!(
        store
            .status(img.id().trim_start_matches("sha256:"))
            .unwrap()
            .unwrap()
            .id,
        img.id()
    );
    assert_eq!(
        store
            .status(&format!("{h}/tools/busybox@{}", img.digest()))
            .unwrap()
            .unwrap()
            .id,
        img.id()
    );
    assert!(store
        .status(&format!("{h}/tools/busybox:nope"))
        .unwrap()
        .is_none());

    let n = store
        .pull(&format!("{h}/tools/named:v1"), &no_creds())
        .await
        .unwrap();
    let ns = store.status(&n.id).unwrap().unwrap();
    assert_eq!((ns.uid, ns.username.as_str()), (None, "nobody"));
    assert_eq!(store.list(None).unwrap().len(), 2);
    let only = store.list(Some(&format!("{h}/tools/named:v1"))).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, n.id);
    assert!(store
        .list(Some(&format!("{h}/nothing:here")))
        .unwrap()
        .is_empty());

    // The unpacked layers: whiteout, opaque dir, setuid, hard link, symlink.
    let dirs = store.layer_dirs(&img.id()).unwrap();
    assert_eq!(dirs.len(), 2);
    let base = &dirs[0];
    let bb = std::fs::metadata(base.join("bin/busybox")).unwrap();
    assert_eq!(
        bb.ino(),
        std::fs::metadata(base.join("bin/ls")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(base.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    let top = &dirs[1];
    let wh = std::fs::symlink_metadata(top.join("etc/old")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        std::fs::metadata(top.join("bin/su"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    // The base layer is shared with tools/named: one directory for both.
    assert_eq!(store.layer_dirs(&n.id).unwrap()[0], *base);

    // Removing one of two tags removes only that tag.
    assert!(store
        .remove(&format!("{h}/tools/busybox:1.0"))
        .await
        .unwrap());
    let st = store.status(&img.id()).unwrap().unwrap();
    assert_eq!(st.repo_tags, vec![format!("{h}/tools/busybox:latest")]);
    assert!(store
        .status(&format!("{h}/tools/busybox:1.0"))
        .unwrap()
        .is_none());
    // Removing by id removes the image; the shared base layer stays for named.
    assert!(store.remove(&img.id()).await.unwrap());
    assert!(store.status(&img.id()).unwrap().is_none());
    assert!(!top.exists(), "unused layer freed");
    assert!(base.exists(), "shared layer kept");
    assert!(
        !store.remove(&img.id()).await.unwrap(),
        "second remove finds nothing"
    );
    // The last image by its tag: everything is freed.
    assert!(store.remove(&format!("{h}/tools/named:v1")).await.unwrap());
    assert!(store.list(None).unwrap().is_empty());
    assert!(tree(&cfg.root.join("blobs"))
        .iter()
        .all(|p| p.as_os_str() == "sha256"));
    assert!(tree(&cfg.root.join("layers")).is_empty());

    let (images, _) = store.fs_info().unwrap();
    assert!(images.used_bytes > 0 && images.inodes_used > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_platforms_docker_schema2_digests_and_concurrent_pulls() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let h = reg.host();
    // An OCI index with arm64 first, then amd64.
    let amd = image(vec![busybox_layer(false)], false, "amd64", |_| {});
    let arm = image(vec![top_layer(false)], false, "arm64", |_| {});
    push(&c, &reg, "multi", "amd64-only", &amd).await;
    push(&c, &reg, "multi", "arm64-only", &arm).await;
    let (idx, idx_type) = index(&[(&arm, "arm64", Some("v8")), (&amd, "amd64", None)], false);
    push_raw(&c, &reg, "multi", "latest", &idx, &idx_type).await;
    // The Docker schema 2 flavour: manifest list, docker media types.
    let damd = image(
        vec![busybox_layer(true), top_layer(true)],
        true,
        "amd64",
        |_| {},
    );
    let darm = image(vec![top_layer(true)], true, "arm", |_| {});
    push(&c, &reg, "dock", "amd64", &damd).await;
    push(&c, &reg, "dock", "arm", &darm).await;
    let (list, list_type) = index(&[(&darm, "arm", Some("v7")), (&damd, "amd64", None)], true);
    push_raw(&c, &reg, "dock", "latest", &list, &list_type).await;

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_for(dir.path(), &plain_http(&h));

    let p = store
        .pull(&format!("{h}/multi"), &no_creds())
        .await
        .unwrap();
    assert_eq!(p.id, amd.id(), "linux/amd64 picked from the index");
    let st = store.status(&p.id).unwrap().unwrap();
    assert_eq!(
        st.repo_digests,
        vec![format!("{h}/multi@{}", vessel_image::digest::sha256(&idx))],
        "the repo digest is the index's, as containerd records it"
    );
    let d = store
        .pull(&format!("{h}/dock:latest"), &no_creds())
        .await
        .unwrap();
    assert_eq!(d.id, damd.id());
    assert_eq!(store.layer_dirs(&d.id).unwrap().len(), 2);

    // By digest: a name of its own, no tag.
    let by_digest = format!("{h}/dock@{}", damd.digest());
    let bd = store.pull(&by_digest, &no_creds()).await.unwrap();
    assert_eq!(bd.id, damd.id());
    assert!(store.status(&by_digest).unwrap().is_some());

    // Two pulls of the same reference at once run once.
    let before = store.pulls_started();
    let r = format!("{h}/multi:arm64-only");
    let anon = no_creds();
    let (a, b) = tokio::join!(store.pull(&r, &anon), store.pull(&r, &anon));
    assert_eq!(a.unwrap().id, arm.id());
    assert_eq!(b.unwrap().id, arm.id());
    assert_eq!(store.pulls_started() - before, 1, "concurrent pulls shared");

    // A caller that goes away does not cancel the pull, and a finished pull
    // is never joined later (the next pull is a new one).
    let r2 = format!("{h}/multi:amd64-only");
    let cancelled =
        tokio::time::timeout(std::time::Duration::from_millis(1), store.pull(&r2, &anon)).await;
    assert!(cancelled.is_err(), "the pull should outlive a 1 ms caller");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.status(&r2).unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "orphaned pull never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(store.remove(&r2).await.unwrap());
    let before = store.pulls_started();
    assert_eq!(store.pull(&r2, &anon).await.unwrap().id, amd.id());
    assert_eq!(
        store.pulls_started() - before,
        1,
        "a fresh pull, not a stale result"
    );
    assert!(store.status(&r2).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_in_order_and_names_stay() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let img = image(vec![busybox_layer(false)], false, "amd64", |_| {});
    // The mirror holds registry.k8s.io's pause under its usual path.
    push(&c, &reg, "pause", "3.9", &img).await;
    let dead = free_port();
    let toml = format!(
        "[registries.\"registry.k8s.io\"]\nskip_upstream = true\nmirrors = [\n  {{ host = \"127.0.0.1:{dead}\", plain_http = true }},\n  {{ host = \"{}\", plain_http = true }},\n]\n",
        reg.host()
    );
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_for(dir.path(), &toml);
    let p = store
        .pull("registry.k8s.io/pause:3.9", &no_creds())
        .await
        .unwrap();
    assert_eq!(p.id, img.id());
    let st = store.status("registry.k8s.io/pause:3.9").unwrap().unwrap();
    assert_eq!(st.repo_tags, vec!["registry.k8s.io/pause:3.9".to_string()]);
    assert_eq!(
        st.repo_digests,
        vec![format!("registry.k8s.io/pause@{}", img.digest())]
    );
    // Not on any mirror: a not-found error, not a hang or a fake success.
    let e = store
        .pull("registry.k8s.io/pause:0.0", &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::RegistryNotFound { .. }), "{e:?}");
}

/// Pushes a busybox image as `private/app:v1` with user vessel, password
/// s3cret; a store in `dir` that pulls from the registry, and the reference.
async fn private_app(
    reg: &Registry,
    dir: &std::path::Path,
) -> (Image, vessel_image::ImageStore, String) {
    let good = RegistryAuth::Basic("vessel".into(), "s3cret".into());
    let c = pusher(reg, &good).await;
    let img = image(vec![busybox_layer(false)], false, "amd64", |_| {});
    push(&c, reg, "private/app", "v1", &img).await;
    let (store, _) = store_for(dir, &plain_http(&reg.host()));
    (img, store, format!("{}/private/app:v1", reg.host()))
}

/// Without credentials, or with a wrong password, the pull of `r` is
/// refused naming the registry `host`, and leaves nothing.
async fn refused_without_the_password(store: &vessel_image::ImageStore, r: &str, host: &str) {
    let e = store.pull(r, &no_creds()).await.unwrap_err();
    assert!(
        matches!(e, ImageError::Unauthorized { .. }),
        "anonymous: {e:?}"
    );
    let wrong = Credentials {
        username: "vessel".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = store.pull(r, &wrong).await.unwrap_err();
    assert!(
        matches!(e, ImageError::Unauthorized { .. }),
        "wrong password: {e:?}"
    );
    assert!(e.to_string().contains(host), "{e}");
    assert!(store.list(None).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_right_and_wrong() {
    let reg = Registry::start(Some(("vessel", "s3cret")));
    let dir = tempfile::tempdir().unwrap();
    let (img, store, r) = private_app(&reg, dir.path()).await;
    let h = reg.host();
    refused_without_the_password(&store, &r, &h).await;

    // CRI's `auth` field: base64 of user:password.
    use base64::Engine as _;
    let creds = Credentials {
        auth: base64::engine::general_purpose::STANDARD.encode("vessel:s3cret"),
        ..Default::default()
    };
    assert_eq!(store.pull(&r, &creds).await.unwrap().id, img.id());
    let creds = Credentials {
        username: "vessel".into(),
        password: "s3cret".into(),
        server_address: h.clone(),
        ..Default::default()
    };
    assert_eq!(store.pull(&r, &creds).await.unwrap().id, img.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_right_and_wrong() {
    let tokens = TokenServer::start("vessel", "s3cret", &["private/app"], Some("refresh-42"));
    let reg = Registry::start_with_tokens(&tokens);
    let dir = tempfile::tempdir().unwrap();
    let (img, store, r) = private_app(&reg, dir.path()).await;
    let h = reg.host();
    // The token server refuses, and so the pull.
    refused_without_the_password(&store, &r, &h).await;

    // The right ones buy a token that pulls manifest, config and layers.
    let right = Credentials {
        username: "vessel".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(store.pull(&r, &right).await.unwrap().id, img.id());
    assert!(store.remove(&r).await.unwrap());
    assert!(store.list(None).unwrap().is_empty());

    // CRI's `identity_token`: exchanged with an OAuth2 refresh-token grant
    // (the server refuses a wrong one, and so the pull).
    let identity = |t: &str| Credentials {
        identity_token: t.into(),
        ..Default::default()
    };
    assert_eq!(
        store.pull(&r, &identity("refresh-42")).await.unwrap().id,
        img.id()
    );
    assert!(store.remove(&r).await.unwrap());
    let e = store.pull(&r, &identity("refresh-41")).await.unwrap_err();
    assert!(
        matches!(&e, ImageError::Unauthorized { detail, .. } if detail.contains("invalid_grant")),
        "a wrong identity token: {e:?}"
    );

    // CRI's `registry_token`: the token itself, no token server involved.
    let token = Credentials {
        registry_token: tokens.token.clone(),
        ..Default::default()
    };
    assert_eq!(store.pull(&r, &token).await.unwrap().id, img.id());
    let forged = Credentials {
        registry_token: format!("{}x", tokens.token),
        ..Default::default()
    };
    let dir2 = tempfile::tempdir().unwrap();
    let (store2, _) = store_for(dir2.path(), &plain_http(&h));
    let e = store2.pull(&r, &forged).await.unwrap_err();
    assert!(
        matches!(e, ImageError::Unauthorized { .. }),
        "a token whose signature is wrong: {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_goes_as_basic_where_the_token_server_has_no_oauth2() {
    // The server answers OAuth2 POSTs with 405; containerd then sends the
    // identity token as the password of user `<token>`, and so do we.
    let tokens = TokenServer::start("<token>", "id-7", &["private/app"], None);
    let reg = Registry::start_with_tokens(&tokens);
    let dir = tempfile::tempdir().unwrap();
    let c = pusher(&reg, &RegistryAuth::Basic("<token>".into(), "id-7".into())).await;
    let img = image(vec![busybox_layer(false)], false, "amd64", |_| {});
    push(&c, &reg, "private/app", "v1", &img).await;
    let (store, _) = store_for(dir.path(), &plain_http(&reg.host()));
    let r = format!("{}/private/app:v1", reg.host());
    let identity = Credentials {
        identity_token: "id-7".into(),
        ..Default::default()
    };
    assert_eq!(store.pull(&r, &identity).await.unwrap().id, img.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_token_answer_is_cut_off() {
    // A registry whose token server answers the OAuth2 grant with 1 MiB:
    // the exchange stops at its 64 KiB cap with an error naming it.
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    let realm = format!("http://{host}/token");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let reply = if buf[..n].starts_with(b"POST") {
                let body = "a".repeat(1 << 20);
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}")
            } else {
                format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            };
            let _ = s.write_all(reply.as_bytes());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_for(dir.path(), &plain_http(&host));
    let identity = Credentials {
        identity_token: "id".into(),
        ..Default::default()
    };
    let e = store
        .pull(&format!("{host}/a:b"), &identity)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("longer than 65536 bytes"), "{e}");
    assert!(store.list(None).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_and_bad_content_is_refused() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let h = reg.host();
    // A config whose diff_id lies about the layer.
    let liar = image(vec![busybox_layer(false)], false, "amd64", |cfg| {
        cfg["rootfs"]["diff_ids"][0] = serde_json::json!(vessel_image::digest::sha256(b"not it"));
    });
    push(&c, &reg, "liar", "diffid", &liar).await;
    // A manifest whose layer size lies (the registry stores it as given).
    let good = image(vec![top_layer(false)], false, "amd64", |_| {});
    push(&c, &reg, "liar", "good", &good).await;
    let mut m: serde_json::Value = serde_json::from_slice(&good.manifest).unwrap();
    let real = m["layers"][0]["size"].as_i64().unwrap();
    m["layers"][0]["size"] = serde_json::json!(real - 10);
    let sized = serde_json::to_vec(&m).unwrap();
    push_raw(&c, &reg, "liar", "size", &sized, &good.manifest_type).await;
    // A layer that is not a tar.
    let junk = Layer {
        tar: b"this is not a tar stream, not even close".to_vec(),
        blob: b"this is not a tar stream, not even close".to_vec(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    };
    let notar = image(vec![junk], false, "amd64", |_| {});
    push(&c, &reg, "liar", "notar", &notar).await;

    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = store_for(dir.path(), &plain_http(&h));
    let e = store
        .pull(&format!("{h}/liar:diffid"), &no_creds())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ImageError::Verification { .. }),
        "diff id lie: {e:?}"
    );
    let e = store
        .pull(&format!("{h}/liar:size"), &no_creds())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ImageError::Verification { .. }),
        "size lie: {e:?}"
    );
    let e = store
        .pull(&format!("{h}/liar:notar"), &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::Unpack { .. }), "not a tar: {e:?}");
    // A digest reference whose manifest is something else.
    let wrong = format!("{h}/liar@{}", vessel_image::digest::sha256(b"x"));
    let e = store.pull(&wrong, &no_creds()).await.unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::RegistryNotFound { .. } | ImageError::Verification { .. }
        ),
        "{e:?}"
    );
    let e = store
        .pull("Not A Reference", &no_creds())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ImageError::InvalidReference { ref reference, .. } if reference == "Not A Reference")
    );
    // Nothing half-made: no image, no layer directory, no temp file.
    assert!(store.list(None).unwrap().is_empty());
    assert!(
        tree(&cfg.root.join("layers")).is_empty(),
        "{:?}",
        tree(&cfg.root.join("layers"))
    );
    assert!(tree(&cfg.root.join("ingest")).is_empty());
    // Other images are unaffected, and GC clears the verified leftovers.
    store
        .pull(&format!("{h}/liar:good"), &no_creds())
        .await
        .unwrap();
    assert_eq!(store.list(None).unwrap().len(), 1);
    store.gc().await.unwrap();
    assert_eq!(
        tree(&cfg.root.join("blobs/sha256")).len(),
        3,
        "manifest, config, layer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_stalled_registries() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let h = reg.host();
    let img = image(vec![busybox_layer(false)], false, "amd64", |_| {});
    push(&c, &reg, "big", "v1", &img).await;

    // A manifest over the cap.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = vessel_image::StoreConfig::new(dir.path().join("store"));
    cfg.registry =
        vessel_image::RegistryConfig::from_toml(&plain_http(&h), std::path::Path::new("t"))
            .unwrap();
    cfg.limits.max_manifest_bytes = 100;
    let db = std::sync::Arc::new(redb::Database::create(dir.path().join("s.redb")).unwrap());
    let store = vessel_image::ImageStore::open(cfg.clone(), db.clone()).unwrap();
    let e = store
        .pull(&format!("{h}/big:v1"), &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");
    drop(store);
    // A layer over the cap.
    cfg.limits.max_manifest_bytes = 1 << 20;
    cfg.limits.max_layer_bytes = 1000;
    let store = vessel_image::ImageStore::open(cfg.clone(), db.clone()).unwrap();
    let e = store
        .pull(&format!("{h}/big:v1"), &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");
    drop(store);

    // A registry that accepts connections and never answers.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sh = format!("127.0.0.1:{}", stall.local_addr().unwrap().port());
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = vessel_image::StoreConfig::new(dir2.path().join("store"));
    cfg2.registry =
        vessel_image::RegistryConfig::from_toml(&plain_http(&sh), std::path::Path::new("t"))
            .unwrap();
    cfg2.progress_timeout = std::time::Duration::from_secs(1);
    let db2 = std::sync::Arc::new(redb::Database::create(dir2.path().join("s.redb")).unwrap());
    let store = vessel_image::ImageStore::open(cfg2, db2).unwrap();
    let t = std::time::Instant::now();
    let e = store
        .pull(&format!("{sh}/x:y"), &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::NoProgress { .. }), "{e:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    drop(stall);
}

/// A registry whose manifests never end: every answer is a 200 with
/// `declared` as its Content-Length (or none), followed by bytes for as long
/// as the client reads; `sent` counts them.
fn endless_registry(declared: Option<u64>, sent: Arc<AtomicU64>) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                // Only manifest GETs count (not the client's /v2/ check).
                let counted = String::from_utf8_lossy(&buf[..n]).contains("/manifests/");
                let length = declared
                    .map(|n| format!("Content-Length: {n}\r\n"))
                    .unwrap_or_default();
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{length}Connection: close\r\n\r\n");
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = [b' '; 64 << 10];
                while s.write_all(&chunk).is_ok() {
                    if counted {
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_manifest_is_cut_off_at_the_cap() {
    let sent = Arc::new(AtomicU64::new(0));
    let endless = endless_registry(None, sent.clone());
    let huge = endless_registry(Some(1 << 40), Arc::new(AtomicU64::new(0)));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = vessel_image::StoreConfig::new(dir.path().join("store"));
    cfg.registry = vessel_image::RegistryConfig::from_toml(
        &format!("{}{}", plain_http(&endless), plain_http(&huge)),
        std::path::Path::new("t"),
    )
    .unwrap();
    cfg.limits.max_manifest_bytes = 1 << 20;
    let db = Arc::new(redb::Database::create(dir.path().join("s.redb")).unwrap());
    let store = vessel_image::ImageStore::open(cfg, db).unwrap();

    // Streamed: cut off once past the cap, having read about that much.
    let e = store
        .pull(&format!("{endless}/a:b"), &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");
    assert!(e.to_string().contains("1048576"), "{e}");
    // What the registry got out: the cap, plus what the sockets buffer.
    let out = sent.load(Ordering::Relaxed);
    assert!(out < 32 << 20, "{out} bytes were taken from the registry");

    // Declared too large up front: refused before reading the body.
    let e = store
        .pull(&format!("{huge}/a:b"), &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");
    assert!(
        e.to_string().contains("1099511627776 bytes declared"),
        "{e}"
    );
    assert!(store.list(None).unwrap().is_empty());
}

/// Serves every connection the same fixed HTTP answer (a broken registry).
fn fake_registry(answer: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        }
    });
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_registries_give_clear_errors() {
    let e500 = fake_registry(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
    );
    let garbage = fake_registry(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{garbage!",
    );
    let schema1 = fake_registry(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 63\r\nConnection: close\r\n\r\n{\"schemaVersion\": 1, \"name\": \"old\", \"tag\": \"x\", \"fsLayers\": []}",
    );
    let e403 = fake_registry(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 69\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"DENIED\",\"message\":\"requested access is denied\"}]}",
    );
    // A well-formed manifest served whatever digest is asked for.
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    let mut liar_reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        manifest.len()
    )
    .into_bytes();
    liar_reply.extend_from_slice(manifest);
    let liar = fake_registry(Box::leak(liar_reply.into_boxed_slice()));
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}{}{}{}{}",
        plain_http(&e500),
        plain_http(&garbage),
        plain_http(&schema1),
        plain_http(&e403),
        plain_http(&liar)
    );
    let (store, _) = store_for(dir.path(), &toml);
    let e = store
        .pull(&format!("{e500}/a:b"), &no_creds())
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::Registry { .. }), "5xx: {e:?}");
    assert!(e.to_string().contains(&e500), "{e}");
    let e = store
        .pull(&format!("{garbage}/a:b"), &no_creds())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ImageError::BadManifest { .. }),
        "garbage: {e:?}"
    );
    let e = store
        .pull(&format!("{schema1}/a:b"), &no_creds())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("schemaVersion 1"), "schema 1: {e}");
    let e = store
        .pull(&format!("{e403}/a:b"), &no_creds())
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&e403), "403: {e}");
    assert!(e.to_string().contains("denied"), "403: {e}");
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let e = store
        .pull(&format!("{liar}/a@{wrong}"), &no_creds())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ImageError::Verification { .. }),
        "a manifest that is not the digest asked for: {e:?}"
    );
    assert!(e.to_string().contains(&wrong), "{e}");
    assert!(store.list(None).unwrap().is_empty());
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_cleanly_and_spares_other_images() {
    let reg = Registry::start(None);
    let c = pusher(&reg, &RegistryAuth::Anonymous).await;
    let h = reg.host();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let noise: Vec<u8> = (0..6 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let big = image(
        vec![layer(false, |b| {
            entry(b, "noise", tar::EntryType::Regular, &noise, "", 0o644)
        })],
        false,
        "amd64",
        |_| {},
    );
    push(&c, &reg, "big", "v1", &big).await;
    let small = image(vec![top_layer(false)], false, "amd64", |_| {});
    push(&c, &reg, "small", "v1", &small).await;

    // A 4 MiB filesystem for the whole store.
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &disk,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .expect("mount a small tmpfs (tests run as root)");
    let _u = Unmount(disk.clone());
    let (store, cfg) = store_for(&disk, &plain_http(&h));
    store
        .pull(&format!("{h}/small:v1"), &no_creds())
        .await
        .unwrap();
    let e = store
        .pull(&format!("{h}/big:v1"), &no_creds())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e:?}");
    assert!(
        tree(&cfg.root.join("ingest")).is_empty(),
        "partial download left"
    );
    assert_eq!(store.list(None).unwrap().len(), 1);
    // The other image is whole and usable.
    let dirs = store.layer_dirs(&format!("{h}/small:v1")).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("var/cache/b")).unwrap(), b"b");
    drop(store);
}
