//! Streaming through each runtime's own streaming server, with the same
//! client (`vessel_streaming::client`, SPDY as client-go): the round trip of
//! an `Exec` of `true` (the CRI call, the upgrade, the exit status), and
//! 64 MiB out of the pod through exec and through port-forward.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerMetadata, CreateContainerRequest, ExecRequest, PortForwardRequest,
    StartContainerRequest,
};
use tokio::io::{AsyncReadExt, AsyncWrite};
use vessel_client::{call, request, Cri};
use vessel_streaming::client::{self, PortForwarder, SessionIo};

use super::{pod_config, sleeper_config, LONG, QUICK};

/// The measurements, with their names in tables.
pub const KINDS: [(&str, &str); 3] = [
    ("exec-true", "Exec `true` (URL, upgrade, exit status)"),
    ("exec-64MiB", "64 MiB out through exec"),
    ("forward-64MiB", "64 MiB out through port-forward"),
];

/// 64 MiB.
const BIG: u64 = 64 << 20;

/// The pod port the streamer container serves [`BIG`] zero bytes on.
const PORT: u16 = 8080;

/// The longest one measurement may take.
const LIMIT: Duration = Duration::from_secs(300);

/// A sink that counts what it is given.
#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>);

impl AsyncWrite for Count {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Starts, in the running pod `pod_id` (made from `pod_config(pod_name)`),
/// a container that serves [`BIG`] zero bytes to every connection on
/// [`PORT`] (busybox `nc -ll`).
pub async fn start_streamer(
    cri: &mut Cri,
    pod_id: &str,
    pod_name: &str,
    image: &str,
    log_dir: &std::path::Path,
) -> Result<(), String> {
    let config = k8s_cri::v1::ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "streamer".into(),
            attempt: 0,
        }),
        command: [
            "nc",
            "-ll",
            "-p",
            "8080",
            "-e",
            "head",
            "-c",
            "67108864",
            "/dev/zero",
        ]
        .map(String::from)
        .to_vec(),
        log_path: "streamer.log".into(),
        ..sleeper_config(image)
    };
    let id = call(
        "CreateContainer",
        Some(LONG),
        cri.runtime.create_container(request(
            CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(pod_config(pod_name, log_dir)),
            },
            Some(LONG),
        )),
    )
    .await
    .map_err(|e| e.to_string())?
    .container_id;
    call(
        "StartContainer",
        Some(LONG),
        cri.runtime.start_container(request(
            StartContainerRequest { container_id: id },
            Some(LONG),
        )),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs `cmd` in `container_id` through `Exec` and the streaming server;
/// the time from the CRI call to the exit status and the bytes of stdout.
async fn exec(cri: &mut Cri, container_id: &str, cmd: &[&str]) -> Result<(Duration, u64), String> {
    let t = Instant::now();
    let url = call(
        "Exec",
        Some(QUICK),
        cri.runtime.exec(request(
            ExecRequest {
                container_id: container_id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            },
            Some(QUICK),
        )),
    )
    .await
    .map_err(|e| e.to_string())?
    .url;
    let out = Count::default();
    let session = client::exec(
        &url,
        SessionIo {
            stdout: Some(Box::new(out.clone())),
            stderr: Some(Box::new(Count::default())),
            ..SessionIo::default()
        },
    );
    let status = tokio::time::timeout(LIMIT, session)
        .await
        .map_err(|_| format!("{cmd:?} did not end in {LIMIT:?}"))?
        .map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if status.code != 0 {
        return Err(format!("{cmd:?} exited with {}", status.code));
    }
    Ok((took, out.0.load(Ordering::Relaxed)))
}

/// The round trip of an exec of `true`.
pub async fn exec_true(cri: &mut Cri, container_id: &str) -> Result<Duration, String> {
    exec(cri, container_id, &["true"]).await.map(|(t, _)| t)
}

/// 64 MiB of zeros out of `container_id` through exec.
pub async fn exec_out(cri: &mut Cri, container_id: &str) -> Result<Duration, String> {
    let (took, bytes) = exec(cri, container_id, &["head", "-c", "67108864", "/dev/zero"]).await?;
    if bytes != BIG {
        return Err(format!("exec gave {bytes} bytes, not {BIG}"));
    }
    Ok(took)
}

/// 64 MiB out of the streamer container through port-forward: from the CRI
/// call to the last byte.
pub async fn forward_out(cri: &mut Cri, pod_id: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let url = call(
        "PortForward",
        Some(QUICK),
        cri.runtime.port_forward(request(
            PortForwardRequest {
                pod_sandbox_id: pod_id.into(),
                port: vec![i32::from(PORT)],
            },
            Some(QUICK),
        )),
    )
    .await
    .map_err(|e| e.to_string())?
    .url;
    let forwarder = PortForwarder::connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    let (local, mut far) = tokio::io::duplex(1 << 20);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match far.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    tokio::time::timeout(LIMIT, forwarder.forward(PORT, local))
        .await
        .map_err(|_| format!("port-forward did not end in {LIMIT:?}"))?
        .map_err(|e| e.to_string())?;
    let bytes = reader.await.map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if bytes != BIG {
        return Err(format!("port-forward gave {bytes} bytes, not {BIG}"));
    }
    Ok(took)
}
