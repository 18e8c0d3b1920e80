//! The HTTP API: `fn router(coordinator) -> Router`. Handlers are thin: they decode, call
//! [`Coordinator`], and encode; [`ApiError`] is the one place errors become HTTP answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use coffer_api::{ActivationRequest, ErrorKind};
use serde::Deserialize;

use crate::core::Coordinator;
use crate::error::{error_response, ApiError, Error};
use crate::serve::PeerCertificate;

/// The OpenAPI 3.1 description of this API (hand-written; a test checks every route is in it).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every route the router serves (method, path), for the OpenAPI sync test and docs.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/status"),
    ("get", "/api/v1/quote"),
    ("get", "/api/v1/collateral"),
    ("get", "/api/v1/manifest"),
    ("post", "/api/v1/manifest"),
    ("post", "/api/v1/manifest/update"),
    ("get", "/api/v1/manifest/history"),
    ("post", "/api/v1/activate"),
    ("get", "/api/v1/secrets"),
    ("put", "/api/v1/secrets"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/recover"),
    ("post", "/api/v1/recover"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/metrics"),
];

/// Time limit of one request (activation includes RSA key generation for per-instance RSA
/// secrets, so it is generous).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

type AppState = Arc<Coordinator>;

/// Builds the router.
pub fn router(c: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/quote", get(quote))
        .route("/api/v1/collateral", get(collateral))
        .route("/api/v1/manifest", get(get_manifest).post(set_manifest))
        .route("/api/v1/manifest/update", post(update_manifest))
        .route("/api/v1/manifest/history", get(manifest_history))
        .route("/api/v1/activate", post(activate))
        .route("/api/v1/secrets", get(get_secrets).put(set_secrets))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/recover", get(recovery_status).post(recover))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(coffer_api::MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn(timeout))
        .with_state(c)
}

async fn timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal,
            format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorKind::NotFound,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::BadRequest,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn peer(p: &Option<Extension<PeerCertificate>>) -> Option<Vec<u8>> {
    p.as_ref()
        .and_then(|Extension(c)| c.0.as_ref().map(|v| v.as_ref().clone()))
}

/// Reads a body as bytes with the size limit turned into our error.
fn limited(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(Error::PayloadTooLarge(coffer_api::MAX_REQUEST_BYTES))
        } else {
            ApiError(Error::BadRequest(r.body_text()))
        }
    })
}

/// Decodes JSON from bytes with a message naming the problem.
fn json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError(Error::BadRequest(format!("invalid JSON body: {e}"))))
}

async fn status(State(c): State<AppState>) -> Json<coffer_api::StatusResponse> {
    Json(c.status())
}

#[derive(Deserialize)]
struct QuoteQuery {
    nonce: Option<String>,
    /// `1`: bind the state head too (needs a nonce).
    state: Option<u8>,
}

/// Largest client nonce, bytes.
pub const MAX_NONCE_BYTES: usize = 64;

async fn quote(
    State(c): State<AppState>,
    q: Result<Query<QuoteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<coffer_api::QuoteResponse>, ApiError> {
    let Query(q) = q?;
    let nonce = match q.nonce {
        None => None,
        Some(h) => {
            let n = hex::decode(&h).map_err(|_| Error::BadRequest("nonce must be hex".into()))?;
            if n.is_empty() || n.len() > MAX_NONCE_BYTES {
                return Err(Error::BadRequest(format!(
                    "nonce must be 1..={MAX_NONCE_BYTES} bytes"
                ))
                .into());
            }
            Some(n)
        }
    };
    let bind_state = match q.state {
        None | Some(0) => false,
        Some(1) if nonce.is_some() => true,
        Some(1) => {
            return Err(Error::BadRequest(
                "state=1 needs a nonce: the binding is fresh or useless".into(),
            )
            .into())
        }
        Some(_) => return Err(Error::BadRequest("state must be 0 or 1".into()).into()),
    };
    let c2 = c.clone();
    let r = tokio::task::spawn_blocking(move || c2.quote(nonce.as_deref(), bind_state))
        .await
        .map_err(|e| Error::Platform(e.to_string()))??;
    Ok(Json(r))
}

/// The Intel-signed collateral of the Coordinator's own TLS quote (public: nothing in it is
/// secret, and a client checks its signatures).
async fn collateral(State(c): State<AppState>) -> Result<Response, ApiError> {
    let c2 = c.clone();
    let json = tokio::task::spawn_blocking(move || c2.own_collateral())
        .await
        .map_err(|e| Error::Platform(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

async fn get_manifest(State(c): State<AppState>) -> Result<Response, ApiError> {
    let (bytes, hash) = c.manifest()?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::ETAG, format!("\"{hash}\"")),
        ],
        bytes,
    )
        .into_response())
}

async fn manifest_history(
    State(c): State<AppState>,
) -> Result<Json<coffer_api::HistoryResponse>, ApiError> {
    Ok(Json(c.manifest_history()?))
}

async fn set_manifest(
    State(c): State<AppState>,
    p: Option<Extension<PeerCertificate>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<coffer_api::ManifestResponse>, ApiError> {
    let body = limited(body)?;
    Ok(Json(c.set_manifest(peer(&p).as_deref(), &body).await?))
}

async fn update_manifest(
    State(c): State<AppState>,
    p: Option<Extension<PeerCertificate>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<coffer_api::ManifestResponse>, ApiError> {
    let body = limited(body)?;
    Ok(Json(c.update_manifest(peer(&p).as_deref(), &body).await?))
}

async fn activate(
    State(c): State<AppState>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<coffer_api::ActivationResponse>, ApiError> {
    let body = limited(body)?;
    let req: ActivationRequest = parse_activation_request(&body)?;
    let peer = peer.map(|Extension(axum::extract::ConnectInfo(a))| a.ip());
    Ok(Json(c.activate(req, peer).await?))
}

/// Parses an activation request body: JSON with every field, no unknown ones, the protocol
/// version in range. Shared with the fuzz target.
pub fn parse_activation_request(body: &[u8]) -> Result<ActivationRequest, Error> {
    if body.len() > coffer_api::MAX_REQUEST_BYTES {
        return Err(Error::PayloadTooLarge(coffer_api::MAX_REQUEST_BYTES));
    }
    // Read the version first, so an old or new client gets the version error rather than a
    // field error.
    #[derive(Deserialize)]
    struct Version {
        protocol_version: Option<u32>,
    }
    if let Ok(Version {
        protocol_version: Some(v),
    }) = serde_json::from_slice::<Version>(body)
    {
        crate::core::check_version(v)?;
    }
    let req: ActivationRequest = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("invalid activation request: {e}")))?;
    crate::core::check_version(req.protocol_version)?;
    if req.workload.is_empty() || req.workload.len() > 256 {
        return Err(Error::BadRequest(
            "workload name must be 1..=256 characters".into(),
        ));
    }
    Ok(req)
}

#[derive(Deserialize)]
struct SecretsQuery {
    names: Option<String>,
}

async fn get_secrets(
    State(c): State<AppState>,
    p: Option<Extension<PeerCertificate>>,
    q: Result<Query<SecretsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<coffer_api::SecretsResponse>, ApiError> {
    let Query(q) = q?;
    let names: Vec<String> = q
        .names
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Json(c.get_secrets(peer(&p).as_deref(), &names).await?))
}

async fn set_secrets(
    State(c): State<AppState>,
    p: Option<Extension<PeerCertificate>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = limited(body)?;
    let req: coffer_api::SetSecretsRequest = json(&body)?;
    c.set_secrets(peer(&p).as_deref(), req).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn audit(
    State(c): State<AppState>,
    p: Option<Extension<PeerCertificate>>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<coffer_api::AuditResponse>, ApiError> {
    let Query(q) = q?;
    Ok(Json(c.audit(
        peer(&p).as_deref(),
        q.after.unwrap_or(0),
        q.limit.unwrap_or(100),
    )?))
}

async fn recovery_status(
    State(c): State<AppState>,
) -> Result<Json<coffer_api::RecoveryStatus>, ApiError> {
    Ok(Json(c.recovery_status()?))
}

async fn recover(
    State(c): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<coffer_api::RecoverResponse>, ApiError> {
    let body = limited(body)?;
    let req: coffer_api::RecoverRequest = json(&body)?;
    Ok(Json(c.recover(req).await?))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn metrics(State(c): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        c.metrics().encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::platform::{CollateralSource, EvidenceVerifier, Platform};
    use crate::seal::Sealer;

    fn coordinator(dir: &std::path::Path) -> Arc<Coordinator> {
        let sim = coffer_evidence::sim::SimPlatform::from_seed([1; 32]);
        let sim2 = coffer_evidence::sim::SimPlatform::from_seed([1; 32]);
        let anchors = sim.trust_anchors();
        Arc::new(
            Coordinator::open(
                crate::Config {
                    data_dir: dir.join("data"),
                    cert_hours: 4,
                    accepted_tcb_statuses: Vec::new(),
                    owner_certificate: None,
                    store: crate::StoreConfig::Embedded,
                },
                Platform::Simulated {
                    sim: Box::new(sim),
                    mrenclave: [9; 32],
                },
                EvidenceVerifier::new(
                    anchors,
                    CollateralSource::Simulated {
                        sim: Box::new(sim2),
                        cache: Default::default(),
                    },
                ),
                Sealer::KeyFile(dir.join("data").join("sealing.key")),
            )
            .unwrap(),
        )
    }

    async fn call(r: &Router, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        (
            status,
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }

    fn kind(body: &[u8]) -> (ErrorKind, String) {
        let e: coffer_api::ErrorBody = serde_json::from_slice(body).unwrap();
        (e.error.kind, e.error.message)
    }

    #[tokio::test]
    async fn openapi_document_lists_every_route_and_the_router_serves_them() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let dir = tempfile::tempdir().unwrap();
        let r = router(coordinator(dir.path()));
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing from openapi.json"
            );
            let (status, body) = call(&r, &method.to_uppercase(), path, b"{}".to_vec()).await;
            if !status.is_success() {
                let (_, msg) = kind(&body);
                assert!(
                    !msg.starts_with("no such endpoint") && !msg.contains("is not allowed"),
                    "{method} {path}: {msg}"
                );
            }
        }
        // And nothing in the document that the router does not serve.
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for m in ops.as_object().unwrap().keys() {
                assert!(
                    ROUTES.contains(&(m.as_str(), path.as_str())),
                    "openapi.json has {m} {path}, the router does not"
                );
            }
        }
    }

    #[tokio::test]
    async fn errors_are_json_with_the_right_status() {
        let dir = tempfile::tempdir().unwrap();
        let r = router(coordinator(dir.path()));
        let (s, b) = call(&r, "GET", "/api/v1/nope", vec![]).await;
        assert_eq!(
            (s, kind(&b).0),
            (StatusCode::NOT_FOUND, ErrorKind::NotFound)
        );
        let (s, b) = call(&r, "DELETE", "/api/v1/status", vec![]).await;
        assert_eq!(
            (s, kind(&b).0),
            (StatusCode::METHOD_NOT_ALLOWED, ErrorKind::BadRequest)
        );
        let (s, b) = call(
            &r,
            "POST",
            "/api/v1/activate",
            b"{\"protocol_version\":1".to_vec(),
        )
        .await;
        assert_eq!(
            (s, kind(&b).0),
            (StatusCode::BAD_REQUEST, ErrorKind::BadRequest)
        );
        let (s, b) = call(
            &r,
            "POST",
            "/api/v1/activate",
            b"{\"protocol_version\":7}".to_vec(),
        )
        .await;
        assert_eq!(
            (s, kind(&b).0),
            (
                StatusCode::BAD_REQUEST,
                ErrorKind::UnsupportedProtocolVersion
            )
        );
        let (s, b) = call(
            &r,
            "POST",
            "/api/v1/manifest",
            vec![b' '; coffer_api::MAX_REQUEST_BYTES + 10],
        )
        .await;
        assert_eq!(
            (s, kind(&b).0),
            (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::PayloadTooLarge)
        );
        let (s, b) = call(
            &r,
            "POST",
            "/api/v1/manifest",
            b"{\"packages\": 3}".to_vec(),
        )
        .await;
        let (k, m) = kind(&b);
        assert_eq!((s, k), (StatusCode::BAD_REQUEST, ErrorKind::BadRequest));
        assert!(m.contains("$.packages"), "{m}");
        let (s, b) = call(&r, "GET", "/api/v1/quote?nonce=zz", vec![]).await;
        assert_eq!(
            (s, kind(&b).0),
            (StatusCode::BAD_REQUEST, ErrorKind::BadRequest)
        );
        let (s, b) = call(&r, "GET", "/api/v1/secrets?names=x", vec![]).await;
        assert_eq!((s, kind(&b).0), (StatusCode::CONFLICT, ErrorKind::Conflict));
        let (s, b) = call(&r, "GET", "/api/v1/status", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        let st: coffer_api::StatusResponse = serde_json::from_slice(&b).unwrap();
        assert!(st.simulation);
        assert_eq!(st.state, coffer_api::CoordinatorState::AwaitingManifest);
    }

    #[tokio::test]
    async fn quote_binds_root_and_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let c = coordinator(dir.path());
        let r = router(c.clone());
        let (s, b) = call(&r, "GET", "/api/v1/quote?nonce=00112233", vec![]).await;
        assert_eq!(s, StatusCode::OK);
        let q: coffer_api::QuoteResponse = serde_json::from_slice(&b).unwrap();
        let sim = coffer_evidence::sim::SimPlatform::from_seed([1; 32]);
        let v = EvidenceVerifier::new(
            sim.trust_anchors(),
            CollateralSource::Simulated {
                sim: Box::new(sim),
                cache: Default::default(),
            },
        );
        let root = crate::pki::pem_decode(&q.root_ca_pem, "CERTIFICATE").unwrap();
        let expect = crate::attest::Expectations {
            allow_simulation: true,
            mrenclaves: &[[9; 32]],
            tcb_statuses: &[],
        };
        let seen = vec![c.tls_slot().leaf(), root.clone()];
        let a = crate::attest::check_quote_response(
            &q,
            &[0, 0x11, 0x22, 0x33],
            &seen,
            &v,
            &expect,
            crate::core::now_unix(),
        )
        .unwrap();
        assert!(a.simulation);
        // Another nonce: refused as stale.
        let err = crate::attest::check_quote_response(
            &q,
            &[1],
            &seen,
            &v,
            &expect,
            crate::core::now_unix(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nonce"), "{err}");
        // A simulating Coordinator is refused unless allowed.
        let strict = crate::attest::Expectations {
            allow_simulation: false,
            mrenclaves: &[],
            tcb_statuses: &[],
        };
        let err = crate::attest::check_quote_response(
            &q,
            &[0, 0x11, 0x22, 0x33],
            &seen,
            &v,
            &strict,
            crate::core::now_unix(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("SIMULATED"), "{err}");
        // The TLS certificate the server presents carries the RA-TLS quote.
        let (tlsq, sim_marker) = crate::pki::ratls_quote(&c.tls_slot().leaf()).unwrap();
        assert!(sim_marker);
        let verified = v.verify(&tlsq, crate::core::now_unix()).unwrap();
        let leaf = c.tls_slot().leaf();
        assert_eq!(
            verified.report_data,
            coffer_evidence::ratls::dice_report_data(&crate::pki::cert_spki(&leaf).unwrap())
        );
        // Renewal: a new certificate (new key, new quote) signed by the same root.
        c.renew_tls_certificate().unwrap();
        let renewed = c.tls_slot().leaf();
        assert_ne!(renewed, leaf);
        let seen = vec![renewed];
        crate::attest::check_quote_response(
            &q,
            &[0, 0x11, 0x22, 0x33],
            &seen,
            &v,
            &expect,
            crate::core::now_unix(),
        )
        .unwrap();
    }
}
