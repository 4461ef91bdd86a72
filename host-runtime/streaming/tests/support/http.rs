//! A hand-written HTTP/1.1 upgrade request, so tests control every header.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's reply to an upgrade request.
pub struct UpgradeReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl UpgradeReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `http://host:port/path` into (host:port, path).
pub fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .expect("http(s) URL");
    let slash = rest.find('/').expect("path");
    (rest[..slash].to_owned(), rest[slash..].to_owned())
}

/// Connects and sends `method path` with `headers`; reads the reply head (and a short body
/// when the server refuses).
pub async fn request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> (TcpStream, UpgradeReply) {
    let (host, path) = split_url(url);
    let tcp = TcpStream::connect(&host).await.expect("connect");
    request_over(tcp, &host, &path, method, headers).await
}

/// Sends the request over an established stream (TCP or TLS).
pub async fn request_over<T: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: T,
    host: &str,
    path: &str,
    method: &str,
    headers: &[(&str, &str)],
) -> (T, UpgradeReply) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "reply head too long");
        let n = tcp.read(&mut byte).await.expect("read reply");
        assert_eq!(
            n,
            1,
            "connection closed in the reply head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut reply = UpgradeReply {
        status,
        headers,
        body: String::new(),
    };
    if status != 101 {
        let len: usize = reply
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await.expect("body");
        reply.body = String::from_utf8_lossy(&body).into_owned();
    }
    (tcp, reply)
}
