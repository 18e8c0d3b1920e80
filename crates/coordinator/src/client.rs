//! A small HTTPS client for the Coordinator API (used by the CLI, the tests and the load
//! benchmark): HTTP/1.1 keep-alive over rustls, one connection per client, reconnecting when the
//! server closed it. Error answers are decoded into [`Error::Remote`] with the server's kind.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::Request;
pub use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::pki::SERVER_NAME;
use crate::tls::{client_config, ClientIdentity, Trust};

/// Largest answer body the client reads.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one Coordinator.
pub struct Client {
    addr: String,
    connector: tokio_rustls::TlsConnector,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    /// Prepares a client for `addr` (`host:port`); connects on first use.
    pub fn new(
        addr: &str,
        trust: &Trust,
        identity: Option<&ClientIdentity>,
    ) -> Result<Self, Error> {
        let cfg = client_config(trust, identity)?;
        Ok(Self {
            addr: addr.to_string(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            sender: None,
        })
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let tcp = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {}", self.addr),
                ))
            })?
            .map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot connect to {}: {e}", self.addr),
                ))
            })?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
            .map_err(|e| Error::Config(e.to_string()))?;
        let tls = tokio::time::timeout(TIMEOUT, self.connector.connect(name, tcp))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake",
                ))
            })?
            .map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("TLS handshake with {}: {e}", self.addr),
                ))
            })?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(format!("HTTP handshake: {e}"))))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends a request and returns status and body.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let needs_connect = match &mut self.sender {
            Some(s) => s.ready().await.is_err(),
            None => true,
        };
        if needs_connect {
            self.connect().await?;
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| Error::Io(std::io::Error::other("not connected")))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, SERVER_NAME);
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "waiting for the Coordinator",
                ))
            })?
            .map_err(|e| {
                self.sender = None;
                Error::Io(std::io::Error::other(format!(
                    "request to {} failed: {e}",
                    self.addr
                )))
            })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Error::Io(std::io::Error::other(format!("reading the answer: {e}"))))?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends a request and decodes a JSON answer, or the error body into [`Error::Remote`].
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| Error::BadRequest(e.to_string()))?),
            None => None,
        };
        let (status, bytes) = self.request(method, path, body).await?;
        decode(status, &bytes)
    }

    /// `GET path` decoding JSON.
    pub async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, Error> {
        self.call::<(), T>(Method::GET, path, None).await
    }
}

/// Decodes an answer: JSON `T` on success, [`Error::Remote`] otherwise.
pub fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, Error> {
    if status.is_success() {
        return serde_json::from_slice(bytes).map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "the Coordinator answered unexpected JSON: {e}"
            )))
        });
    }
    match serde_json::from_slice::<coffer_api::ErrorBody>(bytes) {
        Ok(b) => Err(Error::Remote {
            status: status.as_u16(),
            kind: b.error.kind,
            message: b.error.message,
        }),
        Err(_) => Err(Error::Remote {
            status: status.as_u16(),
            kind: coffer_api::ErrorKind::Internal,
            message: format!("HTTP {status} without an error body"),
        }),
    }
}
