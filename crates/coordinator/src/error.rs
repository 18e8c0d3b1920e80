//! The crate's error type and the one place that maps errors to HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coffer_api::{ErrorBody, ErrorDetail, ErrorKind};

/// Everything that can go wrong in the Coordinator, split by cause so callers (and the HTTP
/// mapping) can tell an attack from an outage from a misuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (bad JSON, bad hex, bad CSR …).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The sender speaks a protocol version outside the accepted range.
    #[error("protocol version {got} is not supported; this Coordinator accepts {min}..={max}")]
    UnsupportedProtocolVersion {
        /// Version sent.
        got: u32,
        /// Oldest accepted.
        min: u32,
        /// Newest accepted.
        max: u32,
    },
    /// Evidence was refused; `kind` says which check failed, `reason` names it.
    #[error("evidence refused ({kind:?}): {reason}")]
    Evidence {
        /// Error kind for the client.
        kind: ErrorKind,
        /// The failed check, without secrets.
        reason: String,
    },
    /// Evidence is valid but the manifest does not allow it.
    #[error("policy mismatch: {0}")]
    PolicyMismatch(String),
    /// The workload reached its `max_activations`.
    #[error("activation limit reached: {0}")]
    ActivationLimit(String),
    /// A named resource does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// No acceptable client certificate.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The client's roles do not allow the action.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The action conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request body is too large.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The client's address sent too many requests that were refused.
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The Coordinator waits for recovery.
    #[error(
        "the Coordinator is in recovery mode: upload the recovery key(s) with `coffer recover`"
    )]
    RecoveryMode,
    /// Collateral for real hardware could not be found or fetched.
    #[error("collateral unavailable: {0}")]
    CollateralUnavailable(String),
    /// The manifest is invalid.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The sealed state key cannot be unsealed.
    #[error("cannot unseal the state key: {0}")]
    Unseal(String),
    /// A recovery step failed.
    #[error("recovery: {0}")]
    Recovery(String),
    /// The store failed (I/O, corruption).
    #[error("store: {0}")]
    Store(String),
    /// The stored state does not match its authenticated head: nothing of it is served.
    #[error("the Coordinator's stored state was TAMPERED with ({}); it serves nothing until the recovery-key holders re-authenticate it with `coffer recover --reauthenticate`", .0.join("; "))]
    Tampered(Vec<String>),
    /// Certificate or key handling failed.
    #[error("pki: {0}")]
    Pki(String),
    /// The platform (simulated or Gramine) failed to produce evidence or keys.
    #[error("platform: {0}")]
    Platform(String),
    /// Start-up configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// TLS or socket failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// (Client side) the Coordinator answered with an error.
    #[error("the Coordinator refused ({kind:?}, HTTP {status}): {message}")]
    Remote {
        /// HTTP status.
        status: u16,
        /// Error kind sent by the Coordinator.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
}

impl Error {
    /// The client-facing kind and status.
    pub fn kind(&self) -> (StatusCode, ErrorKind) {
        use ErrorKind as K;
        match self {
            Error::BadRequest(_) | Error::Manifest(_) => (StatusCode::BAD_REQUEST, K::BadRequest),
            Error::UnsupportedProtocolVersion { .. } => {
                (StatusCode::BAD_REQUEST, K::UnsupportedProtocolVersion)
            }
            Error::Evidence { kind, .. } => (
                match kind {
                    K::CollateralUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                    K::MalformedEvidence => StatusCode::BAD_REQUEST,
                    _ => StatusCode::FORBIDDEN,
                },
                kind.clone(),
            ),
            Error::PolicyMismatch(_) => (StatusCode::FORBIDDEN, K::PolicyMismatch),
            Error::ActivationLimit(_) => (StatusCode::FORBIDDEN, K::ActivationLimit),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, K::NotFound),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, K::Unauthenticated),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, K::Forbidden),
            Error::Conflict(_) => (StatusCode::CONFLICT, K::Conflict),
            Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, K::PayloadTooLarge),
            Error::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, K::RateLimited),
            Error::RecoveryMode => (StatusCode::SERVICE_UNAVAILABLE, K::RecoveryMode),
            Error::Tampered(_) => (StatusCode::SERVICE_UNAVAILABLE, K::Tampered),
            Error::CollateralUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, K::CollateralUnavailable)
            }
            Error::Recovery(_) => (StatusCode::BAD_REQUEST, K::BadRequest),
            Error::Remote { status, kind, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                kind.clone(),
            ),
            Error::Unseal(_)
            | Error::Store(_)
            | Error::Pki(_)
            | Error::Platform(_)
            | Error::Config(_)
            | Error::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, K::Internal),
        }
    }

    /// Whether the message may be shown to a client (internal failures are logged, not shown).
    fn is_internal(&self) -> bool {
        self.kind().1 == ErrorKind::Internal
    }
}

/// An error as the API answers it: status + `{"error": {"kind", "message"}}`. Internal errors
/// are logged with their details and answered with a generic message.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.0.kind();
        let message = if self.0.is_internal() {
            tracing::error!(error = %self.0, "internal error answering a request");
            "internal error; the Coordinator's log has the details".to_string()
        } else {
            tracing::debug!(error = %self.0, "request refused");
            self.0.to_string()
        };
        error_response(status, kind, message)
    }
}

/// Builds an error answer (also used by the rejection and fallback handlers).
pub(crate) fn error_response(status: StatusCode, kind: ErrorKind, message: String) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: ErrorDetail { kind, message },
        }),
    )
        .into_response()
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        match &r {
            J::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError(Error::PayloadTooLarge(coffer_api::MAX_REQUEST_BYTES))
            }
            _ => ApiError(Error::BadRequest(r.body_text())),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError(Error::BadRequest(r.body_text()))
    }
}
