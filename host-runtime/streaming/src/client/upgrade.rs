//! The HTTP/1.1 request that upgrades a connection to SPDY/3.1.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ClientError, REPLY_TIMEOUT};

/// Longest reply head read.
const MAX_HEAD: usize = 16 * 1024;

/// Longest refusal body kept for the error.
const MAX_BODY: usize = 4 * 1024;

/// A connection the server switched to SPDY/3.1.
pub struct Upgraded {
    /// The connection.
    pub tcp: TcpStream,
    /// The subprotocol the server chose (`X-Stream-Protocol-Version`).
    pub protocol: Option<String>,
}

/// Splits `http://host:port/path` into (host:port, path).
fn split_url(url: &str) -> Result<(&str, &str), ClientError> {
    let bad = |why| ClientError::Url {
        url: url.to_owned(),
        why,
    };
    if url.starts_with("https://") {
        return Err(bad("https is not supported by this client"));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an http:// URL"))?;
    let slash = rest.find('/').ok_or_else(|| bad("no path"))?;
    Ok((&rest[..slash], &rest[slash..]))
}

/// Connects to `url` and asks for SPDY/3.1 offering `protocols`, as client-go does.
pub async fn upgrade(url: &str, protocols: &[&str]) -> Result<Upgraded, ClientError> {
    tokio::time::timeout(REPLY_TIMEOUT, upgrade_now(url, protocols))
        .await
        .map_err(|_| ClientError::Timeout(REPLY_TIMEOUT))?
}

async fn upgrade_now(url: &str, protocols: &[&str]) -> Result<Upgraded, ClientError> {
    let (host, path) = split_url(url)?;
    let mut tcp = TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for protocol in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {protocol}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;

    // Byte by byte: what follows the head is already SPDY.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(ClientError::Protocol("reply head too long".into()));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(ClientError::Protocol(
                "connection closed in the reply head".into(),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol("no HTTP status".into()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if status != 101 {
        let len = header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_BODY);
        let mut body = vec![0u8; len];
        let _ = tcp.read_exact(&mut body).await;
        return Err(ClientError::Refused {
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    if !header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return Err(ClientError::Protocol(
            "the server did not switch to SPDY/3.1".into(),
        ));
    }
    Ok(Upgraded {
        tcp,
        protocol: header("x-stream-protocol-version"),
    })
}
