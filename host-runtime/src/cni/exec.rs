//! Running one plugin binary: environment, stdin, bounded time and output,
//! and the plugin's error JSON on failure (libcni's `invoke` package).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{CniError, Command};

/// How long one plugin may run unless [`PluginLimits`] says otherwise.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds on one plugin run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// The plugin is killed after this long.
    pub timeout: Duration,
    /// Largest stdout (the result or error JSON) accepted.
    pub max_stdout: usize,
    /// stderr kept for error messages (the rest is read and dropped).
    pub max_stderr: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            timeout: PLUGIN_TIMEOUT,
            max_stdout: 1 << 20,
            max_stderr: 16 << 10,
        }
    }
}

/// One run of a plugin.
pub(super) struct Invocation<'a> {
    /// The plugin's `type`, for messages.
    pub plugin: &'a str,
    /// Its binary.
    pub binary: &'a Path,
    /// What it does.
    pub command: Command,
    /// The `CNI_*` variables (`CNI_COMMAND` is added).
    pub env: Vec<(&'static str, OsString)>,
    /// Its configuration (stdin).
    pub stdin: Vec<u8>,
}

/// A plugin's error JSON (spec: "Error").
#[derive(Deserialize)]
struct ErrorJson {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// The first binary named `plugin` in `bin_dirs`.
pub(super) fn find_plugin(plugin: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    bin_dirs
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|path| path.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin.to_string(),
            bin_dirs: bin_dirs.to_vec(),
        })
}

/// Runs the plugin and returns its stdout if it succeeded.
pub(super) async fn run(inv: Invocation<'_>, limits: &PluginLimits) -> Result<Vec<u8>, CniError> {
    let mut cmd = tokio::process::Command::new(inv.binary);
    // Plugins get vesseld's environment (they need PATH for iptables and
    // the like), minus any CNI_* of our own, plus the call's.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| CniError::io(format!("running CNI plugin {}", inv.binary.display()), e))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(CniError::io(
            "running a CNI plugin",
            std::io::Error::other("no pipes to the plugin"),
        ));
    };
    let input = inv.stdin;
    let talk = async {
        let write = async move {
            // A plugin that does not read its config fails by itself; a
            // broken pipe here is not the error to report.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let (_, out, err) = tokio::join!(
            write,
            read_capped(stdout, limits.max_stdout),
            read_capped(stderr, limits.max_stderr)
        );
        let status = child.wait().await;
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(limits.timeout, talk).await {
        Ok(done) => done,
        Err(_) => {
            // kill_on_drop would only signal; kill and reap here.
            let _ = child.kill().await;
            return Err(CniError::Timeout {
                plugin: inv.plugin.to_string(),
                command: inv.command,
                secs: limits.timeout.as_secs(),
            });
        }
    };
    let io = |e| CniError::io(format!("running CNI plugin {}", inv.plugin), e);
    let (stdout, stdout_overflow) = out.map_err(io)?;
    let (stderr, _) = err.map_err(io)?;
    let status = status.map_err(io)?;
    if stdout_overflow {
        return Err(CniError::OutputTooBig {
            plugin: inv.plugin.to_string(),
            command: inv.command,
            limit: limits.max_stdout,
        });
    }
    if status.success() {
        return Ok(stdout);
    }
    match serde_json::from_slice::<ErrorJson>(&stdout) {
        Ok(e) => Err(CniError::Plugin {
            plugin: inv.plugin.to_string(),
            command: inv.command,
            code: e.code,
            msg: e.msg,
            details: e.details,
        }),
        Err(_) => Err(CniError::PluginCrashed {
            plugin: inv.plugin.to_string(),
            command: inv.command,
            status: status.to_string(),
            output: format!(
                "stdout: {:?}; stderr: {:?}",
                snippet(&stdout),
                snippet(&stderr)
            ),
        }),
    }
}

/// Reads to EOF, keeping the first `cap` bytes; true if there was more.
async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut overflow = false;
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, overflow));
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
        overflow |= n > room;
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]);
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A stand-in plugin: these tests check the runner's bounds and error
    /// handling; the real plugins run in tests/cni.rs.
    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    async fn run_script(body: &str, limits: PluginLimits) -> Result<Vec<u8>, CniError> {
        let dir = tempfile::tempdir().unwrap();
        let binary = script(dir.path(), body);
        run(
            Invocation {
                plugin: "fake",
                binary: &binary,
                command: Command::Add,
                env: vec![("CNI_IFNAME", "eth0".into())],
                stdin: b"{\"in\":1}".to_vec(),
            },
            &limits,
        )
        .await
    }

    #[tokio::test]
    async fn stdin_and_env_reach_the_plugin() {
        let out = run_script(
            "echo \"$CNI_COMMAND $CNI_IFNAME $(cat)\"",
            PluginLimits::default(),
        )
        .await
        .unwrap();
        assert_eq!(out, b"ADD eth0 {\"in\":1}\n");
    }

    #[tokio::test]
    async fn the_error_json_is_reported() {
        let err = run_script(
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"try again","details":"busy"}'; exit 1"#,
            PluginLimits::default(),
        )
        .await
        .unwrap_err();
        match err {
            CniError::Plugin {
                code, msg, details, ..
            } => assert_eq!(
                (code, msg.as_str(), details.as_str()),
                (11, "try again", "busy")
            ),
            other => panic!("unexpected {other:?}"),
        }
        let err = run_script("echo oops >&2; exit 3", PluginLimits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CniError::PluginCrashed { output, .. } if output.contains("oops")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_plugin_is_killed_and_a_chatty_one_refused() {
        let limits = PluginLimits {
            timeout: Duration::from_millis(300),
            ..PluginLimits::default()
        };
        let started = std::time::Instant::now();
        let err = run_script("exec sleep 30", limits).await.unwrap_err();
        assert!(matches!(err, CniError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let limits = PluginLimits {
            max_stdout: 1000,
            ..PluginLimits::default()
        };
        let err = run_script("head -c 100000 /dev/zero", limits)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CniError::OutputTooBig { limit: 1000, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn plugins_are_found_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("bridge"), "").unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_plugin("bridge", &dirs).unwrap(),
            b.path().join("bridge")
        );
        std::fs::write(a.path().join("bridge"), "").unwrap();
        assert_eq!(
            find_plugin("bridge", &dirs).unwrap(),
            a.path().join("bridge")
        );
        assert!(matches!(
            find_plugin("nope", &dirs),
            Err(CniError::PluginNotFound { .. })
        ));
    }
}
