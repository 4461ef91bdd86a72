//! Identity tokens (CRI's `AuthConfig.identity_token`, what `docker login`
//! stores for an OAuth2 registry) exchanged for an access token the way
//! containerd does: a `refresh_token` grant POSTed to the realm the registry
//! names in its Bearer challenge. oci-client only knows Basic credentials
//! and its own GET token flow, so this one exchange is ours; a token server
//! that does not do OAuth2 (401, 404, 405) gets the identity token as a
//! Basic password instead, as containerd falls back.

use std::collections::HashMap;

use serde::Deserialize;

use crate::manifest_fetch::{read_capped, transport, FetchError};

/// The most of a token answer read (tokens are a few KiB).
const ANSWER_LIMIT: u64 = 64 * 1024;

/// The client id vessel gives the token server.
const CLIENT_ID: &str = "vessel";

/// Why an identity token could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OauthError {
    /// The token server refused the token.
    #[error("the token server {realm} refused the identity token: HTTP {status}: {text}")]
    Refused {
        /// The realm.
        realm: String,
        /// Its status.
        status: u16,
        /// What it said.
        text: String,
    },
    /// The answer was not a token.
    #[error("the token server {realm} answered without a token: {detail}")]
    BadAnswer {
        /// The realm.
        realm: String,
        /// What was wrong.
        detail: String,
    },
    /// The connection, TLS or transfer failed.
    #[error("{0}")]
    Transport(String),
}

/// The parameters of a `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BearerChallenge {
    pub(crate) realm: String,
    pub(crate) service: Option<String>,
}

/// The manifest fetch's body reader and transport errors serve here too.
impl From<FetchError> for OauthError {
    fn from(e: FetchError) -> Self {
        OauthError::Transport(match e {
            FetchError::TooLarge { limit, .. } => {
                format!("the token server's answer is longer than {limit} bytes")
            }
            FetchError::Transport(text) => text,
            FetchError::Status(code, text) => format!("HTTP {code}: {text}"),
            FetchError::Auth(e) => e.to_string(),
        })
    }
}

/// Parses a Bearer challenge (`Bearer realm="...",service="..."`); None for
/// any other scheme or without a realm.
pub(crate) fn parse_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(BearerChallenge {
        realm: params.remove("realm")?,
        service: params.remove("service"),
    })
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    token: Option<String>,
}

/// Exchanges `identity_token` for an access token to pull `repository` from
/// the registry at `base` (`https://host`). `None`: the registry wants no
/// Bearer token, or its token server does not do OAuth2; the caller then
/// sends the identity token as a Basic password.
pub(crate) async fn exchange(
    http: &reqwest::Client,
    base: &str,
    repository: &str,
    identity_token: &str,
) -> Result<Option<String>, OauthError> {
    let transport = |e: reqwest::Error| OauthError::from(transport(e));
    let probe = http
        .get(format!("{base}/v2/"))
        .send()
        .await
        .map_err(transport)?;
    if probe.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(None);
    }
    let Some(challenge) = probe
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_challenge)
    else {
        return Ok(None);
    };
    let form = grant_form(identity_token, repository, challenge.service.as_deref());
    let mut answer = http
        .post(&challenge.realm)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form)
        .send()
        .await
        .map_err(transport)?;
    let status = answer.status().as_u16();
    let body = read_capped(&mut answer, ANSWER_LIMIT).await?;
    if matches!(status, 401 | 404 | 405) {
        tracing::debug!(realm = %challenge.realm, status, "the token server does not take OAuth2 refresh tokens; trying Basic");
        return Ok(None);
    }
    if status != 200 {
        return Err(OauthError::Refused {
            realm: challenge.realm,
            status,
            text: String::from_utf8_lossy(&body).chars().take(512).collect(),
        });
    }
    let parsed: TokenAnswer = serde_json::from_slice(&body).map_err(|e| OauthError::BadAnswer {
        realm: challenge.realm.clone(),
        detail: e.to_string(),
    })?;
    match parsed.access_token.or(parsed.token) {
        Some(t) if !t.is_empty() => Ok(Some(t)),
        _ => Err(OauthError::BadAnswer {
            realm: challenge.realm,
            detail: "neither access_token nor token".into(),
        }),
    }
}

/// The `refresh_token` grant's form (a plain function: the serializer is not
/// `Send`, so it must not live across an await).
fn grant_form(identity_token: &str, repository: &str, service: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", identity_token)
        .append_pair("client_id", CLIENT_ID)
        .append_pair("scope", &format!("repository:{repository}:pull"));
    if let Some(service) = service {
        form.append_pair("service", service);
    }
    form.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#,
        );
        assert_eq!(
            c,
            Some(BearerChallenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        let c = parse_challenge(r#"bearer service=x, realm="http://127.0.0.1:1/t,oken""#);
        assert_eq!(c.map(|c| c.realm), Some("http://127.0.0.1:1/t,oken".into()));
        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }
}
