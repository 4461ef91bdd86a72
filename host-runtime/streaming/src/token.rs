//! Single-use, expiring tokens for the URLs handed out by CRI Exec, Attach and PortForward.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::runtime::{AttachRequest, ExecRequest, PortForwardRequest};

/// Random bytes per token (base64url: 22 characters).
const TOKEN_BYTES: usize = 16;

/// A request waiting for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingRequest {
    /// For `/exec/{token}`.
    Exec(ExecRequest),
    /// For `/attach/{token}`.
    Attach(AttachRequest),
    /// For `/portforward/{token}`.
    PortForward(PortForwardRequest),
}

/// The URL path kind a token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// exec.
    Exec,
    /// attach.
    Attach,
    /// portforward.
    PortForward,
}

impl PendingRequest {
    /// The URL path kind this request is served on.
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::Exec(_) => RequestKind::Exec,
            Self::Attach(_) => RequestKind::Attach,
            Self::PortForward(_) => RequestKind::PortForward,
        }
    }
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too many requests wait for their clients.
    #[error("too many pending streaming requests (limit {0})")]
    Full(usize),
    /// The system's random source failed.
    #[error("cannot generate a streaming token: {0}")]
    Random(String),
}

/// Pending requests by token. Tokens are used once and expire after `ttl`.
pub struct TokenCache {
    ttl: Duration,
    max_pending: usize,
    pending: Mutex<HashMap<String, (Instant, PendingRequest)>>,
}

impl TokenCache {
    /// An empty cache.
    pub fn new(ttl: Duration, max_pending: usize) -> Self {
        Self {
            ttl,
            max_pending,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, PendingRequest)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `request` and returns its new token.
    pub fn insert(&self, request: PendingRequest) -> Result<String, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut pending = self.lock();
        pending.retain(|_, (expires, _)| *expires > now);
        if pending.len() >= self.max_pending {
            return Err(TokenError::Full(self.max_pending));
        }
        pending.insert(token.clone(), (now + self.ttl, request));
        Ok(token)
    }

    /// Takes the request of a live token issued for `kind`. An unknown or expired token,
    /// or one issued for another kind, yields `None` and leaves everything as it was.
    pub fn take(&self, token: &str, kind: RequestKind) -> Option<PendingRequest> {
        let mut pending = self.lock();
        let (expires, request) = pending.get(token)?;
        if *expires <= Instant::now() {
            pending.remove(token);
            return None;
        }
        if request.kind() != kind {
            return None;
        }
        pending.remove(token).map(|(_, request)| request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> PendingRequest {
        PendingRequest::Exec(ExecRequest {
            container_id: "c1".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
    }

    #[test]
    fn tokens_are_random_base64url_and_single_use() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let a = cache.insert(exec()).unwrap();
        let b = cache.insert(exec()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(cache.take(&a, RequestKind::Exec), Some(exec()));
        assert_eq!(cache.take(&a, RequestKind::Exec), None);
        assert_eq!(cache.take("nonsense", RequestKind::Exec), None);
    }

    #[test]
    fn a_token_for_another_kind_touches_nothing() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(exec()).unwrap();
        assert_eq!(cache.take(&token, RequestKind::Attach), None);
        assert_eq!(cache.take(&token, RequestKind::Exec), Some(exec()));
    }

    #[test]
    fn tokens_expire() {
        let cache = TokenCache::new(Duration::from_millis(20), 10);
        let token = cache.insert(exec()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.take(&token, RequestKind::Exec), None);
    }

    #[test]
    fn pending_requests_are_capped() {
        let cache = TokenCache::new(Duration::from_secs(60), 2);
        cache.insert(exec()).unwrap();
        cache.insert(exec()).unwrap();
        assert!(matches!(cache.insert(exec()), Err(TokenError::Full(2))));
    }
}
