use super::*;

fn sample() -> Vec<CheckResult> {
    vec![
        CheckResult::ok("root", "running as root (uid 0)"),
        CheckResult::warn("shmem huge pages", "mode never", "echo advise > x"),
        CheckResult::fail("kvm guests", "PVM host", "use VMX/SVM"),
    ]
}

#[test]
fn text_shows_one_line_per_check_and_the_fixes() {
    let text = render_text("config /etc/vessel/config.toml", &sample());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "vesseld check: config /etc/vessel/config.toml");
    assert_eq!(lines[1], "OK    root: running as root (uid 0)");
    assert_eq!(lines[2], "WARN  shmem huge pages: mode never");
    assert_eq!(lines[3], "      fix: echo advise > x");
    assert_eq!(lines[4], "FAIL  kvm guests: PVM host");
    assert_eq!(lines[5], "      fix: use VMX/SVM");
    assert_eq!(
        lines[6],
        "1 OK, 0 INFO, 1 WARN, 1 FAIL: this host cannot run vessel pods yet"
    );
    assert!(any_failed(&sample()));
    assert!(!any_failed(&sample()[..2]));
}

#[test]
fn json_is_machine_readable() {
    let json = render_json(Path::new("/etc/vessel/config.toml"), &sample());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["config"], "/etc/vessel/config.toml");
    assert_eq!(v["ok"], false);
    assert_eq!(v["results"][0]["status"], "ok");
    assert!(v["results"][0].get("fix").is_none());
    assert_eq!(v["results"][2]["name"], "kvm guests");
    assert_eq!(v["results"][2]["status"], "fail");
    assert_eq!(v["results"][2]["fix"], "use VMX/SVM");
}

/// A fake host: a PVM KVM without device, THP advise, cgroup v2 with every
/// controller enabled, no CNI configuration.
#[test]
fn every_check_runs_against_a_fake_host() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let write = |file: &str, text: &str| {
        let path = r.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("proc/cpuinfo", "flags\t\t: fpu svm\n");
    write(
        "proc/meminfo",
        "HugePages_Total: 0\nHugePages_Free: 0\nHugepagesize: 2048 kB\n",
    );
    write("sys/module/kvm_pvm/refcnt", "0\n");
    write(
        "sys/kernel/mm/transparent_hugepage/shmem_enabled",
        "always within_size [advise] never deny force\n",
    );
    write("cgroup/cgroup.controllers", "cpu memory pids\n");
    write("cgroup/cgroup.subtree_control", "cpu memory pids\n");
    write("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    std::fs::create_dir_all(r.join("dev")).unwrap();
    let host = Host {
        proc_dir: r.join("proc"),
        sys_dir: r.join("sys"),
        dev_dir: r.join("dev"),
        etc_dir: r.join("etc"),
        cgroup_root: r.join("cgroup"),
    };
    let config = Config {
        state_dir: r.join("state"),
        run_dir: r.join("run"),
        socket: r.join("run/vessel.sock"),
        cni: crate::config::CniConfig {
            conf_dir: r.join("net.d"),
            bin_dirs: vec![r.join("bin")],
            conf_template: None,
        },
        ..Config::default()
    };
    let results = run_all(&config, &host);
    let status = |name: &str| {
        results
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {results:?}"))
            .status
    };
    assert_eq!(status("kvm device"), Status::Fail);
    assert_eq!(status("kvm guests"), Status::Fail);
    assert_eq!(status("cpu virtualization"), Status::Ok);
    assert_eq!(status("tun"), Status::Fail);
    assert_eq!(status("cni network"), Status::Warn);
    assert!(!results.iter().any(|c| c.name == "cni plugins"));
    assert_eq!(status("handler vessel: kernel"), Status::Fail);
    assert_eq!(status("cgroups"), Status::Ok);
    assert_eq!(status("shmem huge pages"), Status::Ok);
    assert_eq!(status("hugetlb pool"), Status::Info);
    assert_eq!(status("state dir"), Status::Ok);
    assert_eq!(status("run dir"), Status::Ok);
    assert_eq!(status("pod ids"), Status::Ok);
    assert_eq!(status("cri socket"), Status::Ok);
    assert!(any_failed(&results));
    // Every result that is not OK or INFO says how to fix it.
    for c in &results {
        if matches!(c.status, Status::Warn | Status::Fail) {
            assert!(!c.fix.is_empty(), "{c:?}");
        }
    }
    // Nothing was made: the run dir's socket probe and the overlay probe
    // cleaned up after themselves, and no dir was created.
    assert!(!r.join("state").exists() && !r.join("run").exists());
    let left: Vec<_> = std::fs::read_dir(r)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_configuration_is_loaded_like_the_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "run_dir = \"/run/other\"\n").unwrap();
    let args = CheckArgs {
        config: file.clone(),
        json: false,
        flags: FlagOverrides {
            state_dir: Some("/srv/vessel".into()),
            ..FlagOverrides::default()
        },
    };
    let (config, line) = load_config(&args).unwrap();
    assert_eq!(config.run_dir, Path::new("/run/other"));
    assert_eq!(config.state_dir, Path::new("/srv/vessel"));
    assert_eq!(line, format!("config {}", file.display()));
    std::fs::write(&file, "no_such_key = 1\n").unwrap();
    let err = load_config(&args).unwrap_err().to_string();
    assert!(err.contains("no_such_key"), "{err}");
    let absent = CheckArgs {
        config: dir.path().join("none.toml"),
        ..args
    };
    assert!(load_config(&absent).unwrap().1.contains("the defaults"));
}
