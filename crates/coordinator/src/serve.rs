//! Serving a router over TLS: tokio-rustls for the handshake, hyper-util for HTTP/1.1, the
//! client certificate (if any) attached to every request as a [`PeerCertificate`] extension.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::error::Error;

/// The client certificate (leaf, DER) presented in the TLS handshake, if any.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<Arc<Vec<u8>>>);

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent connections; further ones wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 4096;

/// Accepts TLS connections on `listener` and serves `router` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = limit.clone().acquire_owned() => p.map_err(|e| Error::Io(std::io::Error::other(e)))?,
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
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(tcp, peer, acceptor, router).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
) -> Result<(), Error> {
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ))
        })??;
    let cert = PeerCertificate(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Arc::new(c.to_vec())),
    );
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(cert.clone());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    builder
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))
}
