//! The files of `host-runtime/deploy/` say what the code and the design
//! say: the systemd unit keeps the pods' VMs alive across a restart
//! (`KillMode=process`) and passes `systemd-analyze verify`, and the
//! RuntimeClass declares exactly the overhead `sandbox::sizing` computes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vessel_host_runtime::sandbox::sizing::pod_fixed_overhead;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// `key -> values` of one section of a unit file (a key may repeat).
fn section(unit: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut inside = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE in [{name}]: {line:?}"));
        keys.entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    keys
}

#[test]
fn the_unit_keeps_pods_alive_and_starts_vesseld_serve() {
    let unit = std::fs::read_to_string(deploy("vesseld.service")).unwrap();
    let service = section(&unit, "Service");
    let one = |key: &str| -> &str {
        match service.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("[Service] {key}: expected one value, found {other:?}"),
        }
    };
    // The pods' VMMs and virtiofsds must outlive a restart of the unit.
    assert_eq!(one("KillMode"), "process");
    // No sd_notify in vesseld: notify would hang the start.
    assert!(matches!(one("Type"), "exec" | "simple"), "{}", one("Type"));
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/vesseld serve --config /etc/vessel/config.toml"
    );
    assert_eq!(one("Restart"), "always");
    let nofile: u64 = one("LimitNOFILE").parse().unwrap();
    assert!(nofile >= 65_536, "LimitNOFILE {nofile}");
    // The doctor's report is logged, but cannot keep vesseld down.
    assert_eq!(
        one("ExecStartPre"),
        "-/usr/local/bin/vesseld check --config /etc/vessel/config.toml"
    );
    // These would delete every pod's sockets at each stop, or hide
    // vesseld's mounts in a namespace of its own.
    for key in [
        "RuntimeDirectory",
        "ProtectSystem",
        "PrivateTmp",
        "PrivateMounts",
        "ProtectHome",
        "OOMScoreAdjust",
    ] {
        assert!(!service.contains_key(key), "[Service] must not set {key}");
    }
    let unit_section = section(&unit, "Unit");
    assert!(unit_section["After"]
        .iter()
        .any(|v| v.split_whitespace().any(|u| u == "network-online.target")));
    assert_eq!(section(&unit, "Install")["WantedBy"], ["multi-user.target"]);
}

/// `systemd-analyze verify` on the unit, with the binary it names replaced
/// by the vesseld this test was built with (verify checks that it exists).
#[test]
fn systemd_accepts_the_unit() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "no systemd-analyze in CI (tests/deps.sh installs systemd)"
        );
        eprintln!("skipped: no systemd-analyze (apt-get install systemd)");
        return;
    }
    let unit = std::fs::read_to_string(deploy("vesseld.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("vesseld.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/vesseld", env!("CARGO_BIN_EXE_vesseld")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // verify only warns (exit 0) about unknown keys and bad values.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("vesseld.service"))
        .collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn the_runtime_class_declares_the_computed_overhead() {
    let path = deploy("runtimeclass.yaml");
    let expected = pod_fixed_overhead().runtime_class_yaml("vessel");
    if std::env::var_os("VESSEL_REGENERATE_DEPLOY").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        checked_in,
        expected,
        "{} differs from sandbox::sizing::pod_fixed_overhead().runtime_class_yaml(\"vessel\"); \
         regenerate it with `VESSEL_REGENERATE_DEPLOY=1 cargo test -p vessel-host-runtime \
         --test deploy_files` and commit it (and update docs/kubernetes.md and \
         docs/configuration.md's overhead if the numbers changed)",
        path.display()
    );
    assert!(checked_in.contains("handler: vessel\n"));
}
