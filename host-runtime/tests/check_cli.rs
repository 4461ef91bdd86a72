//! `vesseld check` as a user runs it: the configuration file, the
//! environment and the flags reach the checks, `--json` is one document
//! whose `ok` matches the exit status, and a configuration that does not
//! load is a FAIL naming the key. The host-dependent checks (KVM, cgroups)
//! are whatever this machine is; the rest points at files made here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn executable(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn vesseld_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vesseld"))
        .arg("check")
        .args(args)
        // The environment overrides the default handler's binaries: keep
        // the caller's (CI exports VESSEL_VIRTIOFSD) out of this run.
        .env_remove("VESSEL_KERNEL")
        .env_remove("VESSEL_INITRAMFS")
        .env_remove("VESSEL_VMM")
        .env_remove("VESSEL_VIRTIOFSD")
        .output()
        .unwrap()
}

#[test]
fn the_configuration_flags_and_environment_reach_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["net.d", "bin", "share"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::write(
        d.join("net.d/10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"check-test","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    executable(&d.join("bin/bridge"), "exit 0");
    executable(&d.join("bin/portmap"), "exit 0");
    executable(&d.join("share/vmm"), "echo vessel-vmm 9.9.9");
    executable(&d.join("share/virtiofsd"), "echo virtiofsd 9.9.9");
    std::fs::write(d.join("share/vmlinux"), b"\x7fELF\x02\x01\x01\x00").unwrap();
    std::fs::write(d.join("share/initramfs"), b"070701").unwrap();
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{0}/state\"\nrun_dir = \"{0}/run\"\nsocket = \"{0}/run/vessel.sock\"\n\
             [cni]\nconf_dir = \"{0}/net.d\"\nbin_dirs = [\"{0}/nowhere\"]\n\
             [runtime_handlers.vessel]\nkernel = \"{0}/share/vmlinux\"\n\
             initramfs = \"{0}/share/initramfs\"\nvmm = \"{0}/share/vmm\"\n\
             virtiofsd = \"{0}/share/virtiofsd\"\n",
            d.display()
        ),
    )
    .unwrap();
    let bin_dir = d.join("bin");
    let out = vesseld_check(&[
        "--json",
        "--config",
        config.to_str().unwrap(),
        // The flag replaces the file's bin_dirs.
        "--cni-bin-dir",
        bin_dir.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let ok = report["ok"].as_bool().unwrap();
    assert_eq!(
        out.status.code(),
        Some(if ok { 0 } else { 1 }),
        "{report:#}"
    );
    assert_eq!(report["config"], config.to_str().unwrap());
    let results = report["results"].as_array().unwrap();
    let find = |name: &str| {
        results
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {report:#}"))
    };
    for name in [
        "cni network",
        "cni plugins",
        "handler vessel: vmm",
        "handler vessel: virtiofsd",
        "handler vessel: kernel",
        "handler vessel: initramfs",
        "state dir",
        "run dir",
        "cri socket",
    ] {
        assert_eq!(find(name)["status"], "ok", "{name}: {report:#}");
    }
    assert!(find("cni network")["detail"]
        .as_str()
        .unwrap()
        .contains("\"check-test\""));
    assert_eq!(
        find("handler vessel: virtiofsd")["detail"],
        format!("{}: virtiofsd 9.9.9", d.join("share/virtiofsd").display())
    );
    for name in ["root", "kvm device", "kvm guests", "cgroups", "pod ids"] {
        find(name);
    }
    // A FAIL anywhere is what makes the exit status 1.
    assert_eq!(ok, !results.iter().any(|r| r["status"] == "fail"));
    // Nothing was created: no state or run dir, no probe leftovers.
    let mut left: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["bin", "config.toml", "net.d", "share"]);

    // The environment overrides the file for the default handler.
    let out = Command::new(env!("CARGO_BIN_EXE_vesseld"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env("VESSEL_VIRTIOFSD", d.join("share/missing"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "FAIL  handler vessel: virtiofsd: {} does not exist",
            d.join("share/missing").display()
        )),
        "{text}"
    );
}

#[test]
fn a_configuration_that_does_not_load_is_a_failure_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "# vessel\nsocket = \"relative.sock\"\n").unwrap();
    let out = vesseld_check(&["--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  config:") && text.contains("socket"),
        "{text}"
    );
    assert!(text.contains("vesseld config default"), "{text}");
}
