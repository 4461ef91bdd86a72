//! One manifest GET with its size capped while the body streams in.
//!
//! oci-client 0.18's manifest calls read the whole body before the caller
//! sees its size, and any tenant can name any registry in a pod spec: a
//! hostile one could answer with gigabytes and exhaust vesseld's memory.
//! Authentication stays with oci-client (Basic, or its Bearer token flow,
//! whose tokens it keeps for the blob pulls that follow); only this GET is
//! ours, made with the endpoint's TLS settings.

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

/// The most of an error answer's body kept for the message.
const ERROR_BODY_LIMIT: usize = 4096;

/// Why a manifest could not be fetched, before it is tied to an image.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// oci-client's authentication step failed.
    Auth(OciDistributionError),
    /// The registry answered with this HTTP status; the text explains it.
    Status(u16, String),
    /// The body passed `limit` bytes (`declared` when the registry said so up front).
    TooLarge {
        /// The cap.
        limit: u64,
        /// The Content-Length the registry declared, if any.
        declared: Option<u64>,
    },
    /// The connection, TLS or transfer failed.
    Transport(String),
}

/// GETs the manifest `oref` names, accepting `accept` media types, and
/// returns its bytes: at most `limit` of them, or [`FetchError::TooLarge`]
/// as soon as the registry declares or sends more.
pub(crate) async fn fetch_manifest(
    client: &Client,
    http: &reqwest::Client,
    plain_http: bool,
    oref: &Reference,
    auth: &RegistryAuth,
    accept: &[&str],
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    let token = client
        .auth(oref, auth, RegistryOperation::Pull)
        .await
        .map_err(FetchError::Auth)?;
    let url = format!(
        "{scheme}://{registry}/v2/{repository}/manifests/{reference}",
        scheme = if plain_http { "http" } else { "https" },
        registry = oref.resolve_registry(),
        repository = oref.repository(),
        reference = oref.digest().or(oref.tag()).unwrap_or("latest"),
    );
    let mut req = http
        .get(&url)
        .header(reqwest::header::ACCEPT, accept.join(", "));
    req = match (token, auth) {
        (Some(token), _) => req.bearer_auth(token),
        (None, RegistryAuth::Basic(user, pass)) => req.basic_auth(user, Some(pass)),
        (None, _) => req,
    };
    let mut res = req.send().await.map_err(transport)?;
    let status = res.status();
    if !status.is_success() {
        let body = read_prefix(&mut res, ERROR_BODY_LIMIT).await;
        return Err(FetchError::Status(status.as_u16(), error_text(&body)));
    }
    let declared = res.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(FetchError::TooLarge { limit, declared });
    }
    read_capped(&mut res, limit).await
}

/// Reads the body, failing once it passes `limit` bytes (the identity token
/// exchange reads its answer with it too).
pub(crate) async fn read_capped(
    res: &mut reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(transport)? {
        // A declared length over the cap was refused before (manifests; the
        // token exchange refuses it here), and hyper holds the body to it.
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(FetchError::TooLarge {
                limit,
                declared: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `limit` bytes of the body, or what arrived before it failed.
async fn read_prefix(res: &mut reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The registry's own words for an error: the distribution spec's error
/// envelope as `CODE: message`, or the start of the body as text.
fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) if !env.errors.is_empty() => env
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(body).trim().to_string(),
    }
}

pub(crate) fn transport(e: reqwest::Error) -> FetchError {
    // The innermost cause says what happened (refused, reset, bad certificate).
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    FetchError::Transport(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_envelope_reads_as_codes_and_messages() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access is denied"},{"code":"X"}]}"#;
        assert_eq!(error_text(body), "DENIED: requested access is denied; X: ");
    }

    #[test]
    fn other_bodies_read_as_text() {
        assert_eq!(error_text(b" oops \n"), "oops");
        assert_eq!(error_text(br#"{"errors":[]}"#), r#"{"errors":[]}"#);
    }
}
