//! Loopback numbers for the report: exec round-trip latency and 64 MiB through exec stdout
//! and through port-forward, over SPDY. Ignored by default (timing, not correctness); run
//! with `cargo test -p vessel-streaming --release --test throughput -- --ignored --nocapture`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::data::{checksum, echo_server, payload};
use support::runtime::LocalRuntime;
use support::spdy_client::SpdyClient;
use vessel_streaming::{ExecRequest, PortForwardRequest, ServerConfig, StreamingServer};

fn exec(cmd: &str) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["sh".into(), "-c".into(), cmd.into()],
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    }
}

async fn run_exec(server: &StreamingServer, cmd: &str) -> Vec<u8> {
    let url = server.get_exec(exec(cmd)).unwrap();
    let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let mut stderr = client.open(&[("streamType", "stderr")]).await;
    let (out, _) = tokio::join!(stdout.read_to_end(), stderr.read_to_end());
    let status = error.read_to_end().await;
    assert!(String::from_utf8_lossy(&status).contains("Success"));
    client.wait_closed(Duration::from_secs(10)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing numbers, run by hand"]
async fn measure() {
    let server = StreamingServer::start(ServerConfig::default(), Arc::new(LocalRuntime::default()))
        .await
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        run_exec(&server, "true").await;
        times.push(start.elapsed());
    }
    times.sort();
    eprintln!("exec true round trip: median {:?}", times[10]);

    let start = Instant::now();
    let out = run_exec(&server, "head -c 67108864 /dev/zero").await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(out.len(), 64 << 20);
    eprintln!("64 MiB exec stdout: {:.0} MiB/s", 64.0 / secs);

    let port = echo_server().await;
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![],
        })
        .unwrap();
    let mut client = SpdyClient::connect(&url, &["portforward.k8s.io"]).await;
    let p = port.to_string();
    let error = client
        .open(&[("streamType", "error"), ("port", &p), ("requestID", "0")])
        .await;
    error.close().await;
    let mut data = client
        .open(&[("streamType", "data"), ("port", &p), ("requestID", "0")])
        .await;
    let sent = payload(64 << 20, 9);
    let writer = data.writer();
    let start = Instant::now();
    let send = async {
        for chunk in sent.chunks(32 * 1024) {
            writer.write(chunk).await;
        }
        writer.close().await;
    };
    let (_, received) = tokio::join!(send, data.read_to_end());
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(checksum(&received), checksum(&sent));
    eprintln!(
        "64 MiB each way through port-forward (echo): {:.0} MiB/s each way",
        64.0 / secs
    );
}
