//! Optional bearer-token authentication of the query APIs (`--query-auth-token-file`).
//!
//! The token file holds one token per line (blank lines and `#` comments ignored); any listed token is accepted,
//! so a token is rotated by adding the new one, moving clients over, then removing the old one. The file is
//! re-read when its modification time changes (checked at most every [`RECHECK`]), which picks up a Kubernetes
//! Secret update without a restart; when a re-read fails, the tokens read last stay in force and the failure is
//! logged.
//!
//! HTTP clients send `Authorization: Bearer <token>` (RFC 6750 §2.1); requests without it, or with another token,
//! get `401` with `WWW-Authenticate: Bearer realm="skein"` and Jaeger's error envelope. gRPC clients send the same
//! header as `authorization` metadata and get `UNAUTHENTICATED`. Tokens are compared in constant time
//! (`subtle`). Failures are counted in `skein_query_auth_failures_total{reason}` (`missing`, `invalid`).
//! The web UI's page and static files carry no trace data and stay public, so the UI can ask for the token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use subtle::ConstantTimeEq as _;

use crate::metrics::{QueryMetrics, ReasonLabels};

/// How often the token file's modification time is checked.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token: send 'Authorization: Bearer <token>'")]
    Missing,
    /// A token that is not in the token file.
    #[error("invalid bearer token")]
    Invalid,
}

impl AuthError {
    fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
        }
    }
}

struct State {
    modified: Option<SystemTime>,
    checked: Instant,
    tokens: Vec<Vec<u8>>,
}

/// The accepted tokens, from a file that is re-read when it changes.
pub struct TokenFile {
    path: PathBuf,
    metrics: Arc<QueryMetrics>,
    state: Mutex<State>,
}

fn parse(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

fn read(path: &Path) -> std::io::Result<(Option<SystemTime>, Vec<Vec<u8>>)> {
    let modified = std::fs::metadata(path)?.modified().ok();
    let tokens = parse(&std::fs::read_to_string(path)?);
    if tokens.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the token file lists no token"));
    }
    Ok((modified, tokens))
}

impl TokenFile {
    /// Reads `path`.
    ///
    /// # Errors
    /// When the file cannot be read or lists no token (a server must not start open by mistake).
    pub fn open(path: &Path, metrics: Arc<QueryMetrics>) -> std::io::Result<Arc<Self>> {
        let (modified, tokens) =
            read(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            metrics,
            state: Mutex::new(State { modified, checked: Instant::now(), tokens }),
        }))
    }

    /// Checks an `Authorization` header value.
    ///
    /// # Errors
    /// [`AuthError::Missing`] without a bearer token, [`AuthError::Invalid`] for a token not in the file; both
    /// are counted.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        let result = self.verify(authorization);
        if let Err(e) = result {
            self.metrics.query_auth_failures.get_or_create(&ReasonLabels { reason: e.reason().into() }).inc();
        }
        result
    }

    fn verify(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        // The scheme is case-insensitive (RFC 7235 §2.1).
        let token = match header.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => token.trim_ascii(),
            _ => return Err(AuthError::Missing),
        };
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            self.reload(&mut state);
        }
        // Every listed token is compared, so the time taken does not tell which one nearly matched.
        let matched = state.tokens.iter().fold(subtle::Choice::from(0), |acc, t| acc | t.as_slice().ct_eq(token));
        if bool::from(matched) { Ok(()) } else { Err(AuthError::Invalid) }
    }

    fn reload(&self, state: &mut State) {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == state.modified {
            return;
        }
        match read(&self.path) {
            Ok((modified, tokens)) => {
                tracing::info!(path = %self.path.display(), tokens = tokens.len(), "query auth tokens reloaded");
                *state = State { modified, checked: state.checked, tokens };
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not re-read the query auth token file; keeping the tokens read last");
            }
        }
    }
}

/// axum middleware: 401 unless the request carries an accepted bearer token.
pub async fn require_token(
    axum::extract::State(tokens): axum::extract::State<Arc<TokenFile>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let header = request.headers().get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
    match tokens.check(header) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            let mut response = super::ApiError::unauthorized(e.to_string()).into_response();
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"skein\""),
            );
            response
        }
    }
}

/// tonic interceptor: `UNAUTHENTICATED` unless the call carries an accepted bearer token in its `authorization`
/// metadata (with `None`, every call passes).
#[derive(Clone)]
pub struct GrpcAuth(pub Option<Arc<TokenFile>>);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(tokens) = &self.0 else { return Ok(request) };
        let header = request.metadata().get("authorization").map(|v| v.as_bytes());
        match tokens.check(header) {
            Ok(()) => Ok(request),
            Err(e) => Err(tonic::Status::unauthenticated(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn accepts_any_listed_token_and_counts_each_refusal() {
        let (_dir, path) = file("# rotated 2026-11\nold-token\n\n  new-token  \n");
        let metrics = Arc::new(QueryMetrics::default());
        let t = TokenFile::open(&path, metrics.clone()).expect("open");
        assert_eq!(t.check(Some(b"Bearer old-token")), Ok(()));
        assert_eq!(t.check(Some(b"bearer new-token")), Ok(()));
        assert_eq!(t.check(Some(b"BEARER  new-token ")), Ok(()));
        assert_eq!(t.check(None), Err(AuthError::Missing));
        assert_eq!(t.check(Some(b"Basic b2xkLXRva2Vu")), Err(AuthError::Missing));
        assert_eq!(t.check(Some(b"Bearer ")), Err(AuthError::Missing));
        assert_eq!(t.check(Some(b"Bearer")), Err(AuthError::Missing));
        assert_eq!(t.check(Some(b"Bearer new-toke")), Err(AuthError::Invalid));
        assert_eq!(t.check(Some(b"Bearer # rotated 2026-11")), Err(AuthError::Invalid), "comments are not tokens");
        let count = |r: &str| metrics.query_auth_failures.get_or_create(&ReasonLabels { reason: r.into() }).get();
        assert_eq!((count("missing"), count("invalid")), (4, 2));
    }

    #[test]
    fn the_grpc_interceptor_answers_unauthenticated() {
        let (_dir, path) = file("s3cret\n");
        use tonic::service::Interceptor as _;
        let mut auth = GrpcAuth(Some(TokenFile::open(&path, Arc::default()).expect("open")));
        let with = |value: Option<&str>| {
            let mut r = tonic::Request::new(());
            if let Some(v) = value {
                r.metadata_mut().insert("authorization", v.parse().expect("metadata"));
            }
            r
        };
        assert!(auth.call(with(Some("Bearer s3cret"))).is_ok());
        for value in [None, Some("Bearer nope")] {
            let status = auth.call(with(value)).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        assert!(GrpcAuth(None).call(with(None)).is_ok(), "no token file: every call is served");
    }

    #[test]
    fn an_empty_or_missing_file_is_an_error_at_start() {
        let (_dir, path) = file("# no tokens yet\n\n");
        let e = TokenFile::open(&path, Arc::default()).err().expect("error");
        assert!(e.to_string().contains("lists no token"), "{e}");
        assert!(TokenFile::open(Path::new("/nonexistent/tokens"), Arc::default()).is_err());
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_tokens() {
        let (_dir, path) = file("first\n");
        let t = TokenFile::open(&path, Arc::default()).expect("open");
        std::fs::write(&path, "second\n").expect("write");
        // Make the change visible regardless of the file system's timestamp granularity, and skip the wait.
        let later = SystemTime::now() + Duration::from_secs(10);
        std::fs::File::options().write(true).open(&path).expect("open").set_modified(later).expect("mtime");
        let force = |t: &TokenFile| {
            let mut s = t.state.lock().expect("lock");
            s.checked = Instant::now().checked_sub(RECHECK).expect("instant");
        };
        force(&t);
        assert_eq!(t.check(Some(b"Bearer second")), Ok(()));
        assert_eq!(t.check(Some(b"Bearer first")), Err(AuthError::Invalid));
        std::fs::remove_file(&path).expect("remove");
        force(&t);
        assert_eq!(t.check(Some(b"Bearer second")), Ok(()), "a vanished file keeps the tokens read last");
    }
}
