//! Tests of the state store: records, names, prefixes, filters,
//! persistence, and a writer killed in the middle of its writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

fn store(dir: &Path) -> Store {
    Store::open(open_database(dir).expect("database")).expect("store")
}

fn sandbox(id: &str, name: &str, attempt: u32) -> SandboxRecord {
    SandboxRecord {
        id: id.to_string(),
        metadata: SandboxMetadata {
            name: name.to_string(),
            namespace: "default".to_string(),
            uid: format!("uid-{name}"),
            attempt,
        },
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        annotations: BTreeMap::new(),
        runtime_handler: "vessel".to_string(),
        created_at: 1,
        state: SandboxState::Ready,
        netns_path: format!("/var/run/netns/vessel-{name}"),
        ips: vec!["10.88.0.2".to_string()],
        vm: Some(VmRecord {
            vmm: ProcessRecord {
                pid: 42,
                start_time: 1234,
            },
            vsock_socket: "/run/vessel/pods/x/vsock.sock".into(),
            vcpus: 1,
            memory_mib: 256,
            ..VmRecord::default()
        }),
        cgroup_path: String::new(),
        log_directory: "/var/log/pods/x".to_string(),
        config: vec![0, 1, 2, 255],
    }
}

fn container(id: &str, sandbox_id: &str, name: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.to_string(),
        sandbox_id: sandbox_id.to_string(),
        metadata: ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        },
        image_ref: "registry.local/app:1".to_string(),
        image_id: "sha256:abc".to_string(),
        labels: BTreeMap::from([("tier".to_string(), "web".to_string())]),
        annotations: BTreeMap::new(),
        state: ContainerState::Created,
        created_at: 1,
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        log_path: "/var/log/pods/x/app/0.log".to_string(),
        mounts: vec![k8s_cri::v1::Mount {
            container_path: "/data".to_string(),
            host_path: "/srv/data".to_string(),
            readonly: true,
            ..k8s_cri::v1::Mount::default()
        }],
        resources: Some(k8s_cri::v1::LinuxContainerResources {
            memory_limit_in_bytes: 1 << 26,
            ..Default::default()
        }),
        config: vec![9; 16],
        process_json: String::new(),
        stop_signal: String::new(),
    }
}

fn id(c: char) -> String {
    std::iter::repeat_n(c, ID_LEN).collect()
}

#[test]
fn ids_are_64_random_hex_characters() {
    let a = new_id().expect("id");
    let b = new_id().expect("id");
    assert_eq!(a.len(), ID_LEN);
    assert!(a
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(a, b);
    assert_eq!(unhex(&hex(&[0, 0xab, 0xff])), Some(vec![0, 0xab, 0xff]));
    assert_eq!(unhex("abc"), None);
    assert_eq!(unhex("zz"), None);
}

#[test]
fn sandboxes_are_stored_read_updated_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let rec = sandbox(&id('a'), "web", 0);
    s.insert_sandbox(&rec).expect("insert");
    assert_eq!(s.sandbox(&rec.id).expect("get"), rec);
    let updated = s
        .update_sandbox(&rec.id, |r| {
            r.state = SandboxState::NotReady;
            r.ips.clear();
        })
        .expect("update");
    assert_eq!(updated.state, SandboxState::NotReady);
    assert_eq!(s.sandbox(&rec.id).expect("get"), updated);
    assert_eq!(
        s.sandbox_by_name(&rec.metadata).expect("by name"),
        Some(rec.id.clone())
    );
    assert_eq!(s.delete_sandbox(&rec.id).expect("delete"), Some(updated));
    assert!(matches!(
        s.sandbox(&rec.id),
        Err(StoreError::NotFound { .. })
    ));
    // Idempotent, and the name is free again.
    assert_eq!(s.delete_sandbox(&rec.id).expect("delete again"), None);
    assert_eq!(s.sandbox_by_name(&rec.metadata).expect("by name"), None);
    s.insert_sandbox(&sandbox(&id('b'), "web", 0))
        .expect("the name is free");
}

#[test]
fn a_taken_name_returns_the_existing_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    s.insert_sandbox(&sandbox(&id('a'), "web", 0))
        .expect("insert");
    match s.insert_sandbox(&sandbox(&id('b'), "web", 0)) {
        Err(StoreError::AlreadyExists { id: existing, .. }) => assert_eq!(existing, id('a')),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let err = s
        .insert_sandbox(&sandbox(&id('b'), "web", 0))
        .expect_err("taken");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::AlreadyExists);
    // Another attempt is another name; the same id is refused.
    s.insert_sandbox(&sandbox(&id('b'), "web", 1))
        .expect("attempt 1");
    assert!(matches!(
        s.insert_sandbox(&sandbox(&id('b'), "db", 0)),
        Err(StoreError::AlreadyExists { .. })
    ));
    // Nothing half-written: "db" did not get its name.
    assert_eq!(
        s.sandbox_by_name(&sandbox("", "db", 0).metadata)
            .expect("by name"),
        None
    );
}

#[test]
fn updates_may_not_change_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let rec = sandbox(&id('a'), "web", 0);
    s.insert_sandbox(&rec).expect("insert");
    let err = s
        .update_sandbox(&rec.id, |r| r.metadata.attempt = 7)
        .expect_err("rename");
    assert!(matches!(err, StoreError::Immutable { .. }));
    assert!(matches!(
        s.update_sandbox(&rec.id, |r| r.id = id('c')),
        Err(StoreError::Immutable { .. })
    ));
    assert_eq!(s.sandbox(&rec.id).expect("unchanged"), rec);
    assert!(matches!(
        s.update_sandbox(&id('f'), |_| {}),
        Err(StoreError::NotFound { .. })
    ));
    s.insert_container(&container(&id('1'), &rec.id, "app"))
        .expect("container");
    assert!(matches!(
        s.update_container(&id('1'), |c| c.sandbox_id = id('f')),
        Err(StoreError::Immutable { .. })
    ));
}

#[test]
fn containers_need_their_sandbox_and_a_free_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let err = s
        .insert_container(&container(&id('1'), &id('a'), "app"))
        .expect_err("no sandbox");
    assert!(matches!(
        err,
        StoreError::NotFound {
            kind: "pod sandbox",
            ..
        }
    ));
    s.insert_sandbox(&sandbox(&id('a'), "web", 0)).expect("a");
    s.insert_sandbox(&sandbox(&id('b'), "db", 0)).expect("b");
    let c = container(&id('1'), &id('a'), "app");
    s.insert_container(&c).expect("insert");
    assert_eq!(s.container(&c.id).expect("get"), c);
    match s.insert_container(&container(&id('2'), &id('a'), "app")) {
        Err(StoreError::AlreadyExists { id: existing, .. }) => assert_eq!(existing, id('1')),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // The same name in another sandbox, or another attempt, is free.
    s.insert_container(&container(&id('2'), &id('b'), "app"))
        .expect("other sandbox");
    let mut retry = container(&id('3'), &id('a'), "app");
    retry.metadata.attempt = 1;
    s.insert_container(&retry).expect("attempt 1");
    let done = s
        .update_container(&c.id, |c| {
            c.state = ContainerState::Exited;
            c.exit_code = 137;
            c.reason = "OOMKilled".to_string();
            c.finished_at = 99;
        })
        .expect("update");
    assert_eq!(s.container(&c.id).expect("get"), done);
    assert_eq!(s.delete_container(&c.id).expect("delete"), Some(done));
    assert_eq!(s.delete_container(&c.id).expect("again"), None);
    s.insert_container(&container(&id('4'), &id('a'), "app"))
        .expect("name free again");
}

#[test]
fn deleting_a_sandbox_deletes_its_containers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    s.insert_sandbox(&sandbox(&id('a'), "web", 0)).expect("a");
    s.insert_sandbox(&sandbox(&id('b'), "db", 0)).expect("b");
    s.insert_container(&container(&id('1'), &id('a'), "app"))
        .expect("1");
    s.insert_container(&container(&id('2'), &id('a'), "sidecar"))
        .expect("2");
    s.insert_container(&container(&id('3'), &id('b'), "app"))
        .expect("3");
    s.delete_sandbox(&id('a')).expect("delete");
    let left: Vec<String> = s
        .list_containers(&ContainerFilter::default())
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [id('3')]);
    // Their names are free with a new sandbox of the same id.
    s.insert_sandbox(&sandbox(&id('a'), "web", 0))
        .expect("a again");
    s.insert_container(&container(&id('5'), &id('a'), "app"))
        .expect("name free");
}

#[test]
fn ids_resolve_from_unique_prefixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let a = format!("abc1{}", &id('0')[4..]);
    let b = format!("abc2{}", &id('0')[4..]);
    let c = format!("f{}", &id('0')[1..]);
    for (i, sid) in [&a, &b, &c].into_iter().enumerate() {
        s.insert_sandbox(&sandbox(sid, &format!("p{i}"), 0))
            .expect("insert");
    }
    assert_eq!(s.find_sandbox("abc1").expect("unique").id, a);
    assert_eq!(s.find_sandbox("f").expect("unique").id, c);
    assert_eq!(s.find_sandbox(&b).expect("full id").id, b);
    let err = s.find_sandbox("abc").expect_err("ambiguous");
    assert!(matches!(err, StoreError::Ambiguous { .. }), "{err}");
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::InvalidArgument
    );
    for unknown in ["abd", "0"] {
        let err = s.find_sandbox(unknown).expect_err("unknown");
        assert!(
            matches!(err, StoreError::NotFound { .. }),
            "{unknown}: {err}"
        );
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
    }
    // An empty id is a bad request naming its field, not an unknown id.
    let err = tonic::Status::from(s.find_sandbox("").expect_err("empty"));
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("pod_sandbox_id is empty"),
        "{err}"
    );
    let err = tonic::Status::from(s.find_container("").expect_err("empty"));
    assert!(err.message().starts_with("container_id is empty"), "{err}");
    s.insert_container(&container(&a.replace("abc1", "0001"), &a, "x"))
        .expect("container");
    assert_eq!(s.find_container("00").expect("prefix").sandbox_id, a);
    assert!(matches!(
        s.find_container("abc1"),
        Err(StoreError::NotFound {
            kind: "container",
            ..
        })
    ));
}

#[test]
fn filters_select_by_id_prefix_state_pod_and_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    s.insert_sandbox(&sandbox(&id('a'), "web", 0)).expect("a");
    let mut b = sandbox(&id('b'), "db", 0);
    b.state = SandboxState::NotReady;
    b.labels.insert("tier".to_string(), "data".to_string());
    s.insert_sandbox(&b).expect("b");
    let ids = |list: Vec<SandboxRecord>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_sandboxes(&SandboxFilter::default()).expect("all")),
        [id('a'), id('b')]
    );
    let by = |f: SandboxFilter| ids(s.list_sandboxes(&f).expect("list"));
    assert_eq!(
        by(SandboxFilter {
            id: "bb".to_string(),
            ..Default::default()
        }),
        [id('b')]
    );
    assert_eq!(
        by(SandboxFilter {
            state: Some(SandboxState::Ready),
            ..Default::default()
        }),
        [id('a')]
    );
    assert_eq!(
        by(SandboxFilter {
            labels: BTreeMap::from([
                ("app".to_string(), "db".to_string()),
                ("tier".to_string(), "data".to_string())
            ]),
            ..Default::default()
        }),
        [id('b')]
    );
    assert!(by(SandboxFilter {
        labels: BTreeMap::from([("app".to_string(), "nope".to_string())]),
        ..Default::default()
    })
    .is_empty());
    // From the CRI's filter.
    let cri = k8s_cri::v1::PodSandboxFilter {
        id: String::new(),
        state: Some(k8s_cri::v1::PodSandboxStateValue {
            state: k8s_cri::v1::PodSandboxState::SandboxNotready as i32,
        }),
        label_selector: [("tier".to_string(), "data".to_string())].into(),
    };
    assert_eq!(by(SandboxFilter::from_cri(Some(&cri))), [id('b')]);
    let bogus = k8s_cri::v1::PodSandboxFilter {
        state: Some(k8s_cri::v1::PodSandboxStateValue { state: 9 }),
        ..Default::default()
    };
    assert!(by(SandboxFilter::from_cri(Some(&bogus))).is_empty());
    assert_eq!(by(SandboxFilter::from_cri(None)).len(), 2);

    s.insert_container(&container(&id('1'), &id('a'), "app"))
        .expect("1");
    let mut c2 = container(&id('2'), &id('b'), "app");
    c2.state = ContainerState::Running;
    c2.labels.clear();
    s.insert_container(&c2).expect("2");
    let cids = |f: ContainerFilter| {
        s.list_containers(&f)
            .expect("list")
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    let cri = k8s_cri::v1::ContainerFilter {
        id: String::new(),
        state: Some(k8s_cri::v1::ContainerStateValue {
            state: k8s_cri::v1::ContainerState::ContainerRunning as i32,
        }),
        pod_sandbox_id: "bbbb".to_string(),
        label_selector: Default::default(),
    };
    assert_eq!(cids(ContainerFilter::from_cri(Some(&cri))), [id('2')]);
    assert_eq!(
        cids(ContainerFilter {
            sandbox_id: "a".to_string(),
            ..Default::default()
        }),
        [id('1')]
    );
    assert_eq!(
        cids(ContainerFilter {
            labels: BTreeMap::from([("tier".to_string(), "web".to_string())]),
            ..Default::default()
        }),
        [id('1')]
    );
    assert_eq!(
        cids(ContainerFilter {
            id: "2".to_string(),
            ..Default::default()
        }),
        [id('2')]
    );
    assert_eq!(cids(ContainerFilter::from_cri(None)).len(), 2);
}

#[test]
fn records_survive_reopening_beside_other_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = open_database(dir.path()).expect("database");
        // The image store's tables live in the same file.
        let other: TableDefinition<&str, &str> = TableDefinition::new("images");
        let txn = db.begin_write().expect("txn");
        txn.open_table(other)
            .expect("table")
            .insert("x", "y")
            .expect("insert");
        txn.commit().expect("commit");
        let s = Store::open(db).expect("store");
        s.insert_sandbox(&sandbox(&id('a'), "web", 0))
            .expect("insert");
        s.insert_container(&container(&id('1'), &id('a'), "app"))
            .expect("container");
    }
    assert!(dir.path().join(DATABASE_FILE).is_file());
    let s = store(dir.path());
    assert_eq!(
        s.sandbox(&id('a')).expect("get"),
        sandbox(&id('a'), "web", 0)
    );
    assert_eq!(
        s.container(&id('1')).expect("get"),
        container(&id('1'), &id('a'), "app")
    );
}

#[test]
fn another_schema_version_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_database(dir.path()).expect("database");
    let s = Store::open(db.clone()).expect("store");
    let txn = db.begin_write().expect("txn");
    {
        let mut t = txn.open_table(SANDBOXES).expect("table");
        t.insert(
            id('9').as_str(),
            br#"{"schema": 2, "record": {}}"#.as_slice(),
        )
        .expect("insert");
        t.insert(id('8').as_str(), b"not json".as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
    let err = s.sandbox(&id('9')).expect_err("schema 2");
    assert!(err.to_string().contains("schema version 2"), "{err}");
    assert!(matches!(
        s.sandbox(&id('8')),
        Err(StoreError::Corrupt { .. })
    ));
}

// --- a writer killed in the middle of its writes ------------------------------

const CRASH_DIR_ENV: &str = "VESSEL_STORE_CRASH_DIR";
const PAYLOAD: usize = 16 * 1024;

/// The child of `a_writer_killed_mid_write_leaves_whole_records`: writes in
/// a loop until it is killed. Does nothing when run on its own.
#[test]
#[ignore = "run by a_writer_killed_mid_write_leaves_whole_records in a child process"]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let s = store(Path::new(&dir));
    let mut seq: u64 = s
        .list_sandboxes(&SandboxFilter::default())
        .expect("list")
        .iter()
        .filter_map(|r| r.labels.get("seq").and_then(|v| v.parse().ok()))
        .max()
        .unwrap_or(0);
    loop {
        seq += 1;
        let byte = (seq % 251) as u8;
        let mut rec = sandbox(&new_id().expect("id"), &format!("pod-{seq}"), 0);
        rec.labels.insert("seq".to_string(), seq.to_string());
        rec.config = vec![byte; PAYLOAD];
        s.insert_sandbox(&rec).expect("insert");
        let mut c = container(&new_id().expect("id"), &rec.id, "app");
        c.config = vec![byte; PAYLOAD];
        s.insert_container(&c).expect("container");
        s.update_sandbox(&rec.id, |r| {
            r.state = SandboxState::NotReady;
            r.annotations
                .insert("updated".to_string(), "yes".to_string());
        })
        .expect("update");
        let all = s.list_sandboxes(&SandboxFilter::default()).expect("list");
        if all.len() > 8 {
            s.delete_sandbox(&all[0].id).expect("delete");
        }
        std::fs::write(Path::new(&dir).join("progress"), seq.to_string()).expect("progress");
    }
}

#[test]
fn a_writer_killed_mid_write_leaves_whole_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let progress = dir.path().join("progress");
    let mut total_seen = 0;
    for (round, delay_ms) in [37u64, 151, 263, 89].into_iter().enumerate() {
        let _ = std::fs::remove_file(&progress);
        let mut child = std::process::Command::new(&exe)
            .args([
                "store::tests::crash_writer_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the writer");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !progress.exists() {
            if Instant::now() > deadline || child.try_wait().expect("try_wait").is_some() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("round {round}: the writer made no progress");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("reap the writer");
        assert!(!status.success(), "round {round}: the writer was killed");

        // Reopens after the crash; every record and name is whole and consistent.
        let s = store(dir.path());
        let sandboxes = s.list_sandboxes(&SandboxFilter::default()).expect("list");
        assert!(!sandboxes.is_empty(), "round {round}");
        for r in &sandboxes {
            assert_eq!(r.config.len(), PAYLOAD, "round {round}: {}", r.id);
            assert!(r.config.iter().all(|b| *b == r.config[0]));
            let seq: u64 = r.labels["seq"].parse().expect("seq");
            assert_eq!(r.config[0], (seq % 251) as u8);
            assert_eq!(
                s.sandbox_by_name(&r.metadata).expect("by name").as_deref(),
                Some(r.id.as_str())
            );
        }
        let containers = s
            .list_containers(&ContainerFilter::default())
            .expect("list");
        for c in &containers {
            assert_eq!(c.config.len(), PAYLOAD);
            let owner = s.sandbox(&c.sandbox_id).expect("its sandbox exists");
            assert_eq!(c.config[0], owner.config[0]);
        }
        eprintln!(
            "round {round}: killed after {} iterations, {} sandboxes and {} containers whole",
            std::fs::read_to_string(&progress).unwrap_or_default(),
            sandboxes.len(),
            containers.len()
        );
        total_seen += sandboxes.len();
        drop(s);
    }
    assert!(total_seen > 0);
}
