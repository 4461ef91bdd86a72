//! The server's surroundings: TLS, the default bind address, attach.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use support::http::{request_over, split_url};
use support::runtime::LocalRuntime;
use support::spdy_client::SpdyClient;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;
use vessel_streaming::{
    AttachRequest, ExecRequest, ServerConfig, ServerError, StreamingServer, TlsFiles,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn cat_exec() -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["cat".into()],
        tty: false,
        stdin: true,
        stdout: true,
        stderr: false,
    }
}

#[tokio::test]
async fn listens_on_loopback_with_an_ephemeral_port_by_default() {
    let server = StreamingServer::start(ServerConfig::default(), Arc::new(LocalRuntime::default()))
        .await
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    let url = server.get_exec(cat_exec()).unwrap();
    assert!(url.starts_with(&format!("http://{addr}/exec/")), "{url}");
}

#[tokio::test]
async fn an_unspecified_address_needs_an_advertised_host() {
    let config = ServerConfig {
        address: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let err = StreamingServer::start(config, Arc::new(LocalRuntime::default()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ServerError::Invalid {
                field: "advertise_host",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn missing_tls_files_are_named_in_the_error() {
    let tls = TlsFiles {
        cert: "/nonexistent/cert.pem".into(),
        key: fixture("server.key"),
    };
    let config = ServerConfig {
        tls: Some(tls),
        ..Default::default()
    };
    let err = StreamingServer::start(config, Arc::new(LocalRuntime::default()))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

#[tokio::test]
async fn exec_over_tls() {
    let tls = TlsFiles {
        cert: fixture("server.crt"),
        key: fixture("server.key"),
    };
    let config = ServerConfig {
        tls: Some(tls),
        ..Default::default()
    };
    let server = StreamingServer::start(config, Arc::new(LocalRuntime::default()))
        .await
        .unwrap();
    let url = server.get_exec(cat_exec()).unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.crt")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (host, path) = split_url(&url);
    let tcp = TcpStream::connect(&host).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(client_config))
        .connect(name, tcp)
        .await
        .unwrap();
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ];
    let (tls, reply) = request_over(tls, &host, &path, "POST", &headers).await;
    assert_eq!(reply.status, 101);
    let mut client = SpdyClient::over(tls, None);
    let mut error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    stdin.write(b"over tls").await;
    stdin.close().await;
    assert_eq!(stdout.read_to_end().await, b"over tls");
    let status: Value = serde_json::from_slice(&error.read_to_end().await).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn several_attach_sessions_at_once() {
    let runtime = Arc::new(LocalRuntime::default());
    let server = StreamingServer::start(ServerConfig::default(), runtime.clone())
        .await
        .unwrap();
    let mut clients = Vec::new();
    for i in 0..3 {
        let req = AttachRequest {
            container_id: "c1".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let url = server.get_attach(req).unwrap();
        assert!(url.contains("/attach/"));
        let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
        let error = client.open(&[("streamType", "error")]).await;
        let stdin = client.open(&[("streamType", "stdin")]).await;
        let stdout = client.open(&[("streamType", "stdout")]).await;
        stdin.write(format!("attach {i}\n").as_bytes()).await;
        clients.push((client, error, stdin, stdout));
    }
    // Detaching the first one (closing its connection) leaves the others working.
    let (first, ..) = clients.remove(0);
    drop(first);
    for (i, (_client, mut error, stdin, mut stdout)) in clients.into_iter().enumerate() {
        let expected = format!("attach {}\n", i + 1);
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.extend_from_slice(&stdout.read().await.expect("echo"));
        }
        assert_eq!(got, expected.as_bytes());
        stdin.close().await;
        assert!(stdout.read_to_end().await.is_empty());
        let status: Value = serde_json::from_slice(&error.read_to_end().await).unwrap();
        assert_eq!(status["status"], "Success");
    }
}
