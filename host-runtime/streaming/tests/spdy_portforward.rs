//! portforward over SPDY (`portforward.k8s.io`) to real TCP listeners.

mod support;

use std::sync::Arc;

use support::data::{checksum, closed_port, echo_server, payload};
use support::runtime::LocalRuntime;
use support::spdy_client::{upgrade, SpdyClient};
use vessel_streaming::{PortForwardRequest, ServerConfig, StreamingServer};

async fn server() -> StreamingServer {
    StreamingServer::start(ServerConfig::default(), Arc::new(LocalRuntime::default()))
        .await
        .unwrap()
}

fn forward(ports: Vec<u16>) -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: "pod1".into(),
        ports,
    }
}

/// One forwarded connection as client-go makes it: error stream (closed for writing at
/// once), then data stream; sends `data`, returns what came back and the error text.
async fn round_trip(
    client: &mut SpdyClient,
    port: u16,
    request_id: u32,
    data: Vec<u8>,
) -> (Vec<u8>, String) {
    let port = port.to_string();
    let id = request_id.to_string();
    let mut error = client
        .open(&[("streamType", "error"), ("port", &port), ("requestID", &id)])
        .await;
    error.close().await;
    let mut stream = client
        .open(&[("streamType", "data"), ("port", &port), ("requestID", &id)])
        .await;
    let writer = stream.writer();
    let send = async {
        for chunk in data.chunks(32 * 1024) {
            writer.write(chunk).await;
        }
        writer.close().await;
    };
    let (_, received, error) = tokio::join!(send, stream.read_to_end(), error.read_to_end());
    (received, String::from_utf8(error).unwrap())
}

#[tokio::test]
async fn forwards_mebibytes_both_ways_with_checksums() {
    let server = server().await;
    let port = echo_server().await;
    let url = server.get_port_forward(forward(vec![])).unwrap();
    let mut client = SpdyClient::connect(&url, &["portforward.k8s.io"]).await;
    assert_eq!(client.protocol.as_deref(), Some("portforward.k8s.io"));
    let data = payload(8 << 20, 1);
    let (received, error) = round_trip(&mut client, port, 0, data.clone()).await;
    assert_eq!(received.len(), data.len());
    assert_eq!(checksum(&received), checksum(&data));
    assert_eq!(error, "");
    // A second connection on the same session.
    let (received, _) = round_trip(&mut client, port, 1, payload(100_000, 2)).await;
    assert_eq!(checksum(&received), checksum(&payload(100_000, 2)));
}

#[tokio::test]
async fn concurrent_connections_in_one_session() {
    let server = server().await;
    let port = echo_server().await;
    let url = server.get_port_forward(forward(vec![port])).unwrap();
    let mut client = SpdyClient::connect(&url, &["portforward.k8s.io"]).await;
    let mut pending = Vec::new();
    for i in 0..5u32 {
        let p = port.to_string();
        let id = i.to_string();
        let error = client
            .open(&[("streamType", "error"), ("port", &p), ("requestID", &id)])
            .await;
        error.close().await;
        let data = client
            .open(&[("streamType", "data"), ("port", &p), ("requestID", &id)])
            .await;
        pending.push((error, data, payload(300_000, u64::from(i) + 10)));
    }
    let tasks = pending.into_iter().map(|(mut error, mut data, expected)| {
        tokio::spawn(async move {
            let send = async {
                for chunk in expected.chunks(16 * 1024) {
                    data.write(chunk).await;
                }
                data.close().await;
            };
            send.await;
            let received = data.read_to_end().await;
            assert_eq!(checksum(&received), checksum(&expected));
            assert!(error.read_to_end().await.is_empty());
        })
    });
    for task in tasks.collect::<Vec<_>>() {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn failures_come_back_on_the_error_stream() {
    let server = server().await;
    let echo = echo_server().await;
    let closed = closed_port().await;
    let url = server
        .get_port_forward(forward(vec![echo, closed]))
        .unwrap();
    let mut client = SpdyClient::connect(&url, &["portforward.k8s.io"]).await;
    let (received, error) = round_trip(&mut client, closed, 0, b"hello".to_vec()).await;
    assert!(received.is_empty());
    assert!(
        error.contains(&format!("error forwarding port {closed}")),
        "{error}"
    );
    // A port the request did not allow.
    let (_, error) = round_trip(&mut client, 1, 1, b"x".to_vec()).await;
    assert!(error.contains("not allowed"), "{error}");
}

#[tokio::test]
async fn portforward_refuses_remotecommand_protocols() {
    let server = server().await;
    let url = server.get_port_forward(forward(vec![])).unwrap();
    let (_, reply) = upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(reply.status, 403);
}
