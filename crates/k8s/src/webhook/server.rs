//! The webhook's HTTPS server: `POST /mutate` and `GET /healthz` over rustls.
//!
//! The certificate and key are PEM files, mounted from a Secret that cert-manager (or the
//! Coordinator) rotates. A background task re-reads both files every
//! [`TlsFiles::reload_interval`] and swaps the served certificate when their *content* changed
//! (content, not mtime: Secret volumes are updated by an atomic symlink swap whose mtimes say
//! little), so rotation needs no restart. A half-written pair (new certificate, old key) fails
//! the key check and is ignored until the next look; the old certificate stays in service.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::{review, WebhookConfig, MAX_REVIEW_BYTES};
use crate::error::Error;

/// How often the certificate files are re-read when [`TlsFiles::reload_interval`] is not set
/// otherwise.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent connections (the API server keeps a few); further ones wait.
const MAX_CONNECTIONS: usize = 1024;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`tls.crt` of a cert-manager Secret).
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1; `tls.key`).
    pub key_path: PathBuf,
    /// How often the files are re-read to pick up a rotated certificate.
    pub reload_interval: Duration,
}

impl TlsFiles {
    /// Certificate and key paths with [`DEFAULT_RELOAD_INTERVAL`].
    pub fn new(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Self {
        Self {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

fn tls_err(files: &TlsFiles, message: impl Into<String>) -> Error {
    Error::Tls {
        path: format!(
            "{} + {}",
            files.cert_path.display(),
            files.key_path.display()
        ),
        message: message.into(),
    }
}

fn read_pair(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| Error::Io {
            path: p.display().to_string(),
            source,
        })
    };
    Ok((read(&files.cert_path)?, read(&files.key_path)?))
}

fn certified_key(files: &TlsFiles, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(files, format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(tls_err(files, "no CERTIFICATE in the certificate file"));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| tls_err(files, format!("key PEM: {e}")))?
        .ok_or_else(|| tls_err(files, "no PRIVATE KEY in the key file"))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| tls_err(files, format!("certificate and key: {e}")))?;
    ck.keys_match().map_err(|e| {
        tls_err(
            files,
            format!("the key does not match the certificate: {e}"),
        )
    })?;
    Ok(ck)
}

/// The certificate in service, swapped by the reload task.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

async fn reload_loop(files: TlsFiles, resolver: Arc<Reloading>, mut seen: (Vec<u8>, Vec<u8>)) {
    let mut tick = tokio::time::interval(files.reload_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pair = match tokio::task::spawn_blocking({
            let files = files.clone();
            move || read_pair(&files)
        })
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the webhook certificate; keeping the old one");
                continue;
            }
            Err(_) => continue,
        };
        if pair == seen {
            continue;
        }
        match certified_key(&files, &pair.0, &pair.1) {
            Ok(ck) => {
                if let Ok(mut cur) = resolver.current.write() {
                    *cur = Arc::new(ck);
                    tracing::info!(cert = %files.cert_path.display(), "webhook certificate reloaded");
                    seen = pair;
                }
            }
            // Not remembered as seen: a rotation caught half-way is retried at the next tick.
            Err(e) => {
                tracing::warn!(error = %e, "new webhook certificate unusable; keeping the old one")
            }
        }
    }
}

fn error_body(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"kind": kind, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn mutate(State(cfg): State<Arc<WebhookConfig>>, headers: HeaderMap, body: Body) -> Response {
    let too_large = || {
        error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("the AdmissionReview is larger than {MAX_REVIEW_BYTES} bytes"),
        )
    };
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ok = ct
            .to_str()
            .ok()
            .and_then(|s| s.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !ok {
            return error_body(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the AdmissionReview must be sent as application/json",
            );
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REVIEW_BYTES as u64) {
        return too_large();
    }
    let bytes = match Limited::new(body, MAX_REVIEW_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "bad_body",
                &format!("cannot read the request body: {e}"),
            )
        }
    };
    match review(&bytes, &cfg) {
        Ok(answer) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            answer,
        )
            .into_response(),
        Err(Error::BodyTooLarge { .. }) => too_large(),
        Err(e) => error_body(StatusCode::BAD_REQUEST, "malformed", &e.to_string()),
    }
}

/// The webhook's routes (`POST /mutate`, `GET /healthz`), without TLS: for in-process tests and
/// for embedding behind another listener.
pub fn router(cfg: WebhookConfig) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(cfg))
}

/// Serves the webhook over HTTPS (TLS 1.2 and 1.3, rustls with ring) on `listener` until
/// `shutdown` resolves.
///
/// Fails at once when `cfg` is invalid ([`WebhookConfig::validate`]) or the certificate files
/// cannot be used; later rotations that fail keep the old certificate (logged).
pub async fn serve(
    listener: TcpListener,
    tls: TlsFiles,
    cfg: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    cfg.validate()?;
    let pair = read_pair(&tls)?;
    let ck = certified_key(&tls, &pair.0, &pair.1)?;
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(ck)),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_err(&tls, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let reloader = tokio::spawn(reload_loop(tls, resolver, pair));
    let _abort = AbortOnDrop(reloader);
    let app = router(cfg);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                app.clone().oneshot(req.map(Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
