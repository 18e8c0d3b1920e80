//! TLS for the Coordinator (server) and its clients, rustls with the ring provider.
//!
//! Server: the certificate is swappable at run time ([`CertSlot`]) so it can be re-issued when
//! the intermediate rotates; client certificates are *optional* at the TLS layer and only the
//! handshake signature is checked there (proof of possession). Whether a certificate belongs
//! to a manifest user is decided per request by exact match (DER or SPKI) against the manifest,
//! which is the only trust a user certificate has.
//!
//! Client: either the pinned root CA (normal use, after `coffer verify`), or *attestation mode*,
//! where the server certificate is accepted at the TLS layer, recorded, and trusted only after
//! the caller has verified the Coordinator's quote and checked that the recorded certificate
//! chains to the attested root.

use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::Error;

/// The ring crypto provider (no process-wide default is installed: every config names it).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algs() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// The current server certificate, replaceable while serving.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    /// A slot holding `chain` (DER, leaf first) and its PKCS#8 key.
    pub fn new(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self(RwLock::new(certified(chain, key_pkcs8)?))))
    }

    /// Replaces the certificate; new handshakes use it.
    pub fn set(&self, chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<(), Error> {
        let ck = certified(chain, key_pkcs8)?;
        if let Ok(mut g) = self.0.write() {
            *g = ck;
        }
        Ok(())
    }

    /// The current leaf certificate, DER.
    pub fn leaf(&self) -> Vec<u8> {
        self.0
            .read()
            .map(|g| g.cert.first().map(|c| c.to_vec()).unwrap_or_default())
            .unwrap_or_default()
    }
}

fn certified(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<Arc<CertifiedKey>, Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Pki(format!("TLS key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        chain.into_iter().map(CertificateDer::from).collect(),
        signing,
    )))
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|g| g.clone())
    }
}

/// Accepts any client certificate at the TLS layer (checking only the handshake signature);
/// authorisation happens per request against the manifest's users.
#[derive(Debug)]
struct OptionalClientCert;

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algs().supported_schemes()
    }
}

/// The server configuration: TLS 1.3 and 1.2, HTTP/1.1, optional client certificates.
pub fn server_config(slot: Arc<CertSlot>) -> Result<rustls::ServerConfig, Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(OptionalClientCert))
        .with_cert_resolver(slot);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Records the server's certificate chain and accepts it at the TLS layer (attestation mode).
#[derive(Debug, Default)]
pub struct RecordingVerifier {
    seen: Mutex<Vec<Vec<u8>>>,
}

impl RecordingVerifier {
    /// The chain the server presented (leaf first), once the handshake happened.
    pub fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut g) = self.seen.lock() {
            *g = std::iter::once(end_entity.to_vec())
                .chain(intermediates.iter().map(|c| c.to_vec()))
                .collect();
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algs().supported_schemes()
    }
}

/// Verifies a server certificate the usual way (chain to the pinned root, validity, the name
/// [`crate::pki::SERVER_NAME`]) and then that it is the Coordinator's *own* certificate
/// ([`coffer_evidence::ratls::check_coordinator_leaf`]): a certificate that merely chains to the
/// root with the right name (a workload's or the webhook's, had a manifest been allowed to name
/// them so) is refused.
#[derive(Debug)]
struct PinnedCoordinator {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    root: Vec<u8>,
}

impl ServerCertVerifier for PinnedCoordinator {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        coffer_evidence::ratls::check_coordinator_leaf(end_entity, &self.root).map_err(|e| {
            rustls::Error::General(format!(
                "the server certificate chains to the Coordinator's root but is not the \
                 Coordinator's own RA-TLS certificate ({e})"
            ))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algs().supported_schemes()
    }
}

/// How a client trusts the Coordinator.
#[derive(Clone)]
pub enum Trust {
    /// The server certificate must chain to this root CA (DER), name
    /// [`crate::pki::SERVER_NAME`], and be the Coordinator's own RA-TLS certificate, issued
    /// directly by the root with a quote over its key.
    RootCa(Vec<u8>),
    /// A service other than the Coordinator whose certificate the root signs (the admission
    /// webhook): chain to this root (DER) and the name only. Never for the Coordinator.
    Service(Vec<u8>),
    /// Accept and record the certificate; the caller must attest before trusting anything.
    Attest(Arc<RecordingVerifier>),
}

/// A client certificate chain (DER) and its PKCS#8 key, for mTLS.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER key.
    pub key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(<key redacted>)")
    }
}

/// The client configuration for `trust` and an optional client identity.
pub fn client_config(
    trust: &Trust,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let builder = match trust {
        Trust::Service(der) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| Error::Config(format!("root CA: {e}")))?;
            builder.with_root_certificates(roots)
        }
        Trust::RootCa(der) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| Error::Config(format!("root CA: {e}")))?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| Error::Config(format!("root CA: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCoordinator {
                    webpki,
                    root: der.clone(),
                }))
        }
        Trust::Attest(rec) => builder
            .dangerous()
            .with_custom_certificate_verifier(rec.clone()),
    };
    let mut cfg = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                id.chain.iter().cloned().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.clone())),
            )
            .map_err(|e| Error::Config(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Ca};
    use rcgen::KeyPair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One TLS handshake over an in-memory pipe: the server presents `chain`; the client trusts
    /// `trust`. Returns whether the client accepted the server.
    async fn handshake(chain: Vec<Vec<u8>>, key: Vec<u8>, trust: &Trust) -> Result<(), String> {
        let slot = CertSlot::new(chain, key).unwrap();
        let server = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(slot).unwrap()));
        let client =
            tokio_rustls::TlsConnector::from(Arc::new(client_config(trust, None).unwrap()));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            if let Ok(mut s) = server.accept(a).await {
                let _ = s.write_all(b"ok").await;
                let _ = s.flush().await;
            }
        });
        let name = ServerName::try_from(pki::SERVER_NAME).unwrap();
        let result = match client.connect(name, b).await {
            Ok(mut s) => {
                let mut buf = [0u8; 2];
                s.read_exact(&mut buf)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        srv.abort();
        result
    }

    /// A client that pinned only the root accepts the Coordinator's own certificate and
    /// refuses other certificates under the same root that carry the Coordinator's name: a
    /// workload certificate (from a manifest that named `coffer-coordinator` before such names
    /// were reserved) and a root-signed service certificate.
    #[tokio::test]
    async fn root_pinned_clients_accept_only_the_coordinators_own_certificate() {
        let now = crate::core::now_unix();
        let sim = coffer_evidence::sim::SimPlatform::from_seed([4; 32]);
        let ca = Ca::generate(now).unwrap();
        let trust = Trust::RootCa(ca.root_der().to_vec());
        // The Coordinator's own RA-TLS certificate.
        let key = KeyPair::generate().unwrap();
        let quote = sim.sgx_quote(&coffer_evidence::sim::SgxQuoteSpec {
            report_data: coffer_evidence::ratls::dice_report_data(&pki::key_spki(&key)),
            ..Default::default()
        });
        let quotes = pki::RaTlsQuotes {
            dice: quote,
            legacy: None,
        };
        let own = ca.server_cert(&key, &quotes, true, now).unwrap();
        handshake(
            vec![own, ca.root_der().to_vec()],
            key.serialize_der(),
            &trust,
        )
        .await
        .unwrap();
        // A workload certificate named coffer-coordinator, chained through the intermediate.
        let wkey = KeyPair::generate().unwrap();
        let csr = pki::parse_csr(&pki::make_csr(&wkey, "w").unwrap()).unwrap();
        let (leaf, _) = ca
            .sign_workload(
                &csr,
                "w",
                &uuid::Uuid::new_v4(),
                &[pki::SERVER_NAME.to_string()],
                now,
                1,
            )
            .unwrap();
        let err = handshake(
            vec![leaf, ca.intermediate_der().to_vec()],
            wkey.serialize_der(),
            &trust,
        )
        .await
        .unwrap_err();
        assert!(err.contains("not the Coordinator's own"), "{err}");
        // A root-signed certificate without the RA-TLS quote (as the webhook's is).
        let skey = KeyPair::generate().unwrap();
        let svc = ca
            .service_cert(&skey, &[pki::SERVER_NAME.to_string()], now)
            .unwrap();
        let err = handshake(vec![svc], skey.serialize_der(), &trust)
            .await
            .unwrap_err();
        assert!(err.contains("not the Coordinator's own"), "{err}");
    }
}
