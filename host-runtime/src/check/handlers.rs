//! The files of each runtime handler: the VMM and virtiofsd binaries (they
//! must run: `--version` within a few seconds), the guest kernel and the
//! initramfs.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::network::is_executable;
use super::{first_line, CheckResult};
use crate::config::RuntimeHandler;

/// How long `BINARY --version` may take.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of `--version`'s output that is read.
const MAX_VERSION_OUTPUT: u64 = 4096;

/// `--version` outcomes by binary, so handlers sharing a binary run it once.
#[derive(Debug, Default)]
pub struct VersionCache(HashMap<PathBuf, Result<String, String>>);

impl VersionCache {
    fn get(&mut self, binary: &Path) -> Result<String, String> {
        self.0
            .entry(binary.to_path_buf())
            .or_insert_with(|| version_line(binary, VERSION_TIMEOUT))
            .clone()
    }
}

/// The four files of handler `name`, one result each.
pub fn handler_files(
    name: &str,
    handler: &RuntimeHandler,
    versions: &mut VersionCache,
) -> Vec<CheckResult> {
    let key = |field: &str| format!("runtime_handlers.{name}.{field}");
    vec![
        binary(
            &format!("handler {name}: vmm"),
            &handler.vmm,
            &key("vmm"),
            "install vessel-vmm there (`cargo build --release`: target/release/vessel-vmm)",
            versions,
        ),
        virtiofsd_new_enough(binary(
            &format!("handler {name}: virtiofsd"),
            &handler.virtiofsd,
            &key("virtiofsd"),
            VIRTIOFSD_INSTALL,
            versions,
        )),
        kernel(
            &format!("handler {name}: kernel"),
            &handler.kernel,
            &key("kernel"),
        ),
        initramfs(
            &format!("handler {name}: initramfs"),
            &handler.initramfs,
            &key("initramfs"),
        ),
    ]
}

/// Where a new enough virtiofsd comes from.
const VIRTIOFSD_INSTALL: &str = "install virtiofsd 1.13 or later there (Debian 13: `apt install \
     virtiofsd`; elsewhere tests/tools/virtiofsd.sh, which builds 1.14.0)";

/// The oldest virtiofsd with `--translate-uid`, which pods' shares use.
const VIRTIOFSD_MIN: (u32, u32) = (1, 13);

/// A virtiofsd that runs but is older than [`VIRTIOFSD_MIN`] is a FAIL:
/// every pod would fail to start.
fn virtiofsd_new_enough(result: CheckResult) -> CheckResult {
    if result.status != super::Status::Ok {
        return result;
    }
    // The detail is "PATH: virtiofsd X.Y.Z".
    let version = result.detail.rsplit(' ').next().and_then(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    });
    match version {
        Some(v) if v < VIRTIOFSD_MIN => CheckResult::fail(
            &result.name,
            format!(
                "{}: older than {}.{}, which pods' id translation needs",
                result.detail, VIRTIOFSD_MIN.0, VIRTIOFSD_MIN.1
            ),
            format!("{VIRTIOFSD_INSTALL}, or set [pod_ids] translate_share = false"),
        ),
        _ => result,
    }
}

/// An executable file whose `--version` answers.
fn binary(
    name: &str,
    path: &Path,
    key: &str,
    install: &str,
    versions: &mut VersionCache,
) -> CheckResult {
    let shown = path.display();
    if let Err(why) = regular_file(path) {
        return CheckResult::fail(name, why, format!("{install}, or set {key}"));
    }
    if !is_executable(path) {
        return CheckResult::fail(
            name,
            format!("{shown} is not executable"),
            format!("chmod +x {shown}"),
        );
    }
    match versions.get(path) {
        Ok(version) => CheckResult::ok(name, format!("{shown}: {version}")),
        Err(why) => CheckResult::fail(
            name,
            format!("{shown} --version: {why}"),
            format!("{install} (a binary for this machine), or set {key}"),
        ),
    }
}

/// The guest kernel: vessel-vmm boots an uncompressed ELF vmlinux (PVH
/// entry), not a bzImage.
fn kernel(name: &str, path: &Path, key: &str) -> CheckResult {
    let fix = format!(
        "build it (`kernel-config/build.sh` prints its path) and install it there, or set {key}"
    );
    if let Err(why) = regular_file(path) {
        return CheckResult::fail(name, why, fix);
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic));
    match read {
        Err(e) => CheckResult::fail(
            name,
            format!("{}: cannot read its first bytes: {e}", path.display()),
            fix,
        ),
        Ok(()) if &magic != b"\x7fELF" => CheckResult::fail(
            name,
            format!(
                "{} is not an ELF vmlinux (vessel-vmm boots an uncompressed vmlinux with a PVH \
                 entry, not a bzImage)",
                path.display()
            ),
            fix,
        ),
        Ok(()) => CheckResult::ok(name, format!("{} (ELF vmlinux)", path.display())),
    }
}

/// The initramfs (vessel-agent as /init): a readable, non-empty file.
fn initramfs(name: &str, path: &Path, key: &str) -> CheckResult {
    let fix =
        format!("build it (`rootfs/build.sh` prints its path) and install it there, or set {key}");
    if let Err(why) = regular_file(path) {
        return CheckResult::fail(name, why, fix);
    }
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Err(e) => CheckResult::fail(name, format!("{}: {e}", path.display()), fix),
        Ok(m) if m.len() == 0 => {
            CheckResult::fail(name, format!("{} is empty", path.display()), fix)
        }
        Ok(m) => CheckResult::ok(
            name,
            format!("{} ({} KiB)", path.display(), m.len().div_ceil(1024)),
        ),
    }
}

/// `path` exists and is a regular file (symlinks followed); else why not.
fn regular_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{} does not exist", path.display()))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.is_file() => Err(format!("{} is not a regular file", path.display())),
        Ok(_) => Ok(()),
    }
}

/// The first line `binary --version` prints, if it exits 0 within `timeout`
/// (killed otherwise). At most [`MAX_VERSION_OUTPUT`] bytes are kept; the
/// rest is drained so the program never blocks on a full pipe, and a
/// descendant that keeps the pipe open after it exits is not waited for.
pub fn version_line(binary: &Path, timeout: Duration) -> Result<String, String> {
    let mut child = spawn_version(binary)?;
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    if let Some(mut stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut stdout)
                .take(MAX_VERSION_OUTPUT)
                .read_to_end(&mut kept);
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            let _ = tx.send(kept);
        });
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {} s (killed)",
                    timeout.as_secs_f32()
                ));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for it: {e}"));
            }
        }
    };
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    let out = rx
        .recv_timeout(left)
        .map_err(|_| "exited, but something it started keeps its output open".to_string())?;
    let line = first_line(&String::from_utf8_lossy(&out));
    if line.is_empty() {
        Err("printed nothing".into())
    } else {
        Ok(line)
    }
}

/// Starts `binary --version`. ETXTBSY ("text file busy": the file is open
/// for writing somewhere, e.g. mid-upgrade, or inherited for an instant by
/// a child another thread is forking) is retried for a short while.
fn spawn_version(binary: &Path) -> Result<std::process::Child, String> {
    let mut attempts = 0;
    loop {
        let spawned = Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 25 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot run it: {e}")),
            Ok(child) => return Ok(child),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_virtiofsd_without_id_translation_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut versions = VersionCache::default();
        for (version, ok) in [("1.5.0", false), ("1.13.0", true), ("1.14.0", true)] {
            let bin = script(
                dir.path(),
                &format!("fs-{version}"),
                &format!("echo 'virtiofsd {version}'"),
            );
            let r = virtiofsd_new_enough(binary("fs", &bin, "k", "i", &mut versions));
            assert_eq!(r.status == Status::Ok, ok, "{version}: {r:?}");
            if !ok {
                assert!(r.fix.contains("translate_share = false"), "{r:?}");
            }
        }
    }

    #[test]
    fn version_runs_are_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = script(dir.path(), "good", "echo 'virtiofsd 9.9.9'; echo more");
        assert_eq!(
            version_line(&good, VERSION_TIMEOUT).unwrap(),
            "virtiofsd 9.9.9"
        );
        let bad = script(dir.path(), "bad", "echo nope; exit 3");
        assert!(version_line(&bad, VERSION_TIMEOUT)
            .unwrap_err()
            .contains("exit status: 3"));
        // A flood of output neither blocks it nor is kept whole.
        let chatty = script(
            dir.path(),
            "chatty",
            "echo v1; head -c 1000000 /dev/zero; exit 0",
        );
        assert_eq!(version_line(&chatty, VERSION_TIMEOUT).unwrap(), "v1");
        // A background child holding stdout open is not waited for.
        let pid_file = dir.path().join("sleeper.pid");
        let forks = script(
            dir.path(),
            "forks",
            &format!(
                "echo v2; sleep 30 & echo $! > {}; exit 0",
                pid_file.display()
            ),
        );
        let started = Instant::now();
        let err = version_line(&forks, Duration::from_millis(500)).unwrap_err();
        let took = started.elapsed();
        // The test leaves no process behind.
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sleeper),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(err.contains("keeps its output open"), "{err}");
        assert!(took < Duration::from_secs(5));
        let slow = script(dir.path(), "slow", "exec sleep 30");
        let started = Instant::now();
        let err = version_line(&slow, Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn each_handler_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let handler = RuntimeHandler {
            vmm: script(d, "vmm", "echo vessel-vmm 0.1.0"),
            virtiofsd: d.join("virtiofsd"),
            kernel: d.join("vmlinux"),
            initramfs: d.join("initramfs.cpio.lz4"),
            ..RuntimeHandler::default()
        };
        std::fs::write(&handler.virtiofsd, b"#!/bin/sh\n").unwrap();
        std::fs::write(&handler.kernel, b"MZ\x00\x00bzImage").unwrap();
        let results = handler_files("fast", &handler, &mut VersionCache::default());
        let by = |n: &str| {
            results
                .iter()
                .find(|r| r.name == format!("handler fast: {n}"))
                .unwrap()
                .clone()
        };
        assert_eq!(by("vmm").status, Status::Ok);
        assert_eq!(
            by("vmm").detail,
            format!("{}: vessel-vmm 0.1.0", handler.vmm.display())
        );
        assert_eq!(by("virtiofsd").status, Status::Fail);
        assert!(by("virtiofsd").detail.contains("not executable"));
        assert_eq!(by("kernel").status, Status::Fail);
        assert!(by("kernel").detail.contains("not an ELF vmlinux"));
        assert_eq!(by("initramfs").status, Status::Fail);
        assert!(by("initramfs")
            .fix
            .contains("runtime_handlers.fast.initramfs"));

        std::fs::write(&handler.kernel, b"\x7fELF\x02\x01\x01").unwrap();
        std::fs::write(&handler.initramfs, vec![0u8; 3000]).unwrap();
        let results = handler_files("fast", &handler, &mut VersionCache::default());
        assert_eq!(results[2].status, Status::Ok, "{:?}", results[2]);
        assert_eq!(
            results[3].detail,
            format!("{} (3 KiB)", handler.initramfs.display())
        );
    }

    #[test]
    fn the_real_virtiofsd_answers() {
        // tests/all.sh exports VESSEL_VIRTIOFSD (it builds the real one);
        // in CI (CI=true) its absence fails the test.
        let Some(virtiofsd) = std::env::var_os("VESSEL_VIRTIOFSD") else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "VESSEL_VIRTIOFSD unset in CI"
            );
            eprintln!("skipped: VESSEL_VIRTIOFSD unset, the real virtiofsd is not checked");
            return;
        };
        let line = version_line(Path::new(&virtiofsd), VERSION_TIMEOUT).unwrap();
        assert!(line.starts_with("virtiofsd"), "{line}");
    }
}
