//! A minimal HTTPS/1.1 JSON client for the one call the launcher makes (`POST
//! /api/v1/activate`), over rustls with a fixed server name.
//!
//! Why not a general HTTP client: the Coordinator's TLS certificate names
//! `coffer-coordinator` whatever address is dialled (an IP, a port-forward, a Service), so the
//! name verified must be independent of the address, and the RA-TLS trust mode needs its own
//! certificate verifier. Both are one line each with rustls directly. Responses are bounded and
//! parsed with `httparse`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The name the Coordinator's TLS certificate carries (`coffer_coordinator::pki::SERVER_NAME`).
pub const COORDINATOR_SERVER_NAME: &str = "coffer-coordinator";

/// Largest response body read (an activation answer with many files stays far below).
pub(crate) const MAX_RESPONSE: usize = 64 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A TLS client configuration whose server certificate is accepted when `check` passes (given
/// what rustls gives a verifier: the leaf, the intermediates, the name, a stapled OCSP answer
/// and the time); the handshake signatures are still verified
/// against that certificate by rustls. Every way the launcher trusts the Coordinator is such a
/// check.
pub(crate) fn tls_config<F>(check: F) -> Result<Arc<rustls::ClientConfig>, rustls::Error>
where
    F: Fn(
            &CertificateDer<'_>,
            &[CertificateDer<'_>],
            &ServerName<'_>,
            &[u8],
            UnixTime,
        ) -> Result<(), rustls::Error>
        + Send
        + Sync
        + 'static,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(CheckedCertificate {
        check,
        provider: provider.clone(),
    });
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// See [`tls_config`].
struct CheckedCertificate<F> {
    check: F,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl<F> std::fmt::Debug for CheckedCertificate<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckedCertificate")
    }
}

impl<F> ServerCertVerifier for CheckedCertificate<F>
where
    F: Fn(
            &CertificateDer<'_>,
            &[CertificateDer<'_>],
            &ServerName<'_>,
            &[u8],
            UnixTime,
        ) -> Result<(), rustls::Error>
        + Send
        + Sync,
{
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        (self.check)(end_entity, intermediates, server_name, ocsp_response, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why one request failed.
#[derive(Debug)]
pub(crate) enum TransportError {
    /// Worth retrying: connection refused, reset, timeout, DNS not yet resolvable.
    Transient(String),
    /// The server's identity did not verify: never retried.
    Untrusted(String),
    /// The answer is not HTTP we understand.
    Malformed(String),
}

/// An HTTP answer.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Sends one `POST path` with a JSON body and reads the whole answer.
pub(crate) fn post_json(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> Result<Response, TransportError> {
    request(addr, tls, "POST", path, Some(body))
}

/// Sends one `GET path` and reads the whole answer.
pub(crate) fn get(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<Response, TransportError> {
    request(addr, tls, "GET", path, None)
}

fn request(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, TransportError> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| TransportError::Transient(format!("resolve {addr}: {e}")))?
        .collect();
    let mut last = String::from("no address");
    let mut tcp = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let tcp = tcp.ok_or(TransportError::Transient(last))?;
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(COORDINATOR_SERVER_NAME)
        .map_err(|e| TransportError::Malformed(e.to_string()))?;
    let conn = rustls::ClientConnection::new(tls.clone(), name)
        .map_err(|e| TransportError::Malformed(format!("TLS set-up: {e}")))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);

    let content = match body {
        Some(b) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ),
        None => String::new(),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {COORDINATOR_SERVER_NAME}\r\n{content}\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body.unwrap_or_default());
    stream
        .write_all(&req)
        .map_err(|e| classify_io("send request", e))?;
    stream.flush().map_err(|e| classify_io("send request", e))?;

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                if buf.len() > MAX_RESPONSE + 64 * 1024 {
                    return Err(TransportError::Malformed(format!(
                        "response larger than {MAX_RESPONSE} bytes"
                    )));
                }
                if let Some(done) = complete_response(&buf)? {
                    return Ok(done);
                }
            }
            // A server that closes without close_notify after a complete answer is fine; the
            // completeness check below decides.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(classify_io("read response", e)),
        }
    }
    match complete_response(&buf)? {
        Some(r) => Ok(r),
        None => parse_until_eof(&buf),
    }
}

fn classify_io(what: &str, e: std::io::Error) -> TransportError {
    // rustls reports certificate problems as InvalidData wrapping a rustls::Error.
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match inner {
            rustls::Error::InvalidCertificate(c) => {
                TransportError::Untrusted(format!("server certificate: {c}"))
            }
            other => TransportError::Untrusted(format!("TLS: {other}")),
        };
    }
    TransportError::Transient(format!("{what}: {e}"))
}

/// Parses `buf` as a response if it is complete (headers and the whole body).
fn complete_response(buf: &[u8]) -> Result<Option<Response>, TransportError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(TransportError::Malformed(format!("HTTP response: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut content_length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            content_length =
                Some(v.ok_or_else(|| TransportError::Malformed("bad Content-Length".into()))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked");
        }
    }
    let rest = buf.get(head_len..).unwrap_or(&[]);
    if chunked {
        return Ok(dechunk(rest)?.map(|body| Response { status, body }));
    }
    match content_length {
        Some(n) if n > MAX_RESPONSE => Err(TransportError::Malformed(format!(
            "response larger than {MAX_RESPONSE} bytes"
        ))),
        Some(n) if rest.len() >= n => Ok(Some(Response {
            status,
            body: rest.get(..n).unwrap_or(&[]).to_vec(),
        })),
        _ => Ok(None),
    }
}

/// A response without length: the body runs to the end of the connection.
fn parse_until_eof(buf: &[u8]) -> Result<Response, TransportError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let has_length = resp.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("content-length")
                    || h.name.eq_ignore_ascii_case("transfer-encoding")
            });
            if has_length {
                return Err(TransportError::Transient(
                    "connection closed mid-response".into(),
                ));
            }
            Ok(Response {
                status: resp.code.unwrap_or(0),
                body: buf.get(n..).unwrap_or(&[]).to_vec(),
            })
        }
        Ok(httparse::Status::Partial) => Err(TransportError::Transient(
            "connection closed before a complete response".into(),
        )),
        Err(e) => Err(TransportError::Malformed(format!("HTTP response: {e}"))),
    }
}

/// Decodes a chunked body; `None` while incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(rest.get(..line_end).unwrap_or(&[]))
            .map_err(|_| TransportError::Malformed("bad chunk size".into()))?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| TransportError::Malformed("bad chunk size".into()))?;
        if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
            return Err(TransportError::Malformed(format!(
                "response larger than {MAX_RESPONSE} bytes"
            )));
        }
        let data_start = line_end + 2;
        if size == 0 {
            return Ok(Some(body));
        }
        let Some(data) = rest.get(data_start..data_start + size) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        match rest.get(data_start + size..data_start + size + 2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => {
                return Err(TransportError::Malformed(
                    "chunk not followed by CRLF".into(),
                ))
            }
        }
        rest = rest.get(data_start + size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_and_chunked() {
        let r = complete_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        assert!(
            complete_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}")
                .unwrap()
                .is_none()
        );
        let r = complete_response(
            b"HTTP/1.1 403 F\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n1\r\nx\r\n0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (403, &b"{}x"[..]));
        assert!(
            complete_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{")
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            complete_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            Err(TransportError::Malformed(_))
        ));
        assert!(matches!(
            complete_response(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n"),
            Err(TransportError::Malformed(_))
        ));
        assert!(matches!(
            complete_response(b"NOT HTTP\r\n\r\n"),
            Err(TransportError::Malformed(_))
        ));
    }
}
