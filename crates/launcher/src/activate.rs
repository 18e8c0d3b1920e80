//! The activation: a key generated here, evidence binding it, one `POST /api/v1/activate`
//! retried with capped exponential backoff while the Coordinator is unreachable, and a checked
//! answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_api::{
    Activation, ActivationRequest, ActivationResponse, ErrorBody, ErrorKind, Evidence,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::client::{self, TransportError};
use crate::config::CoordinatorTrust;
use crate::Error;

/// First retry delay.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Largest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The workload's key, generated in this process (inside the TEE); it never leaves it except
/// into the app's `key.pem`.
pub struct WorkloadKey {
    key: KeyPair,
}

impl std::fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkloadKey(<P-256, redacted>)")
    }
}

impl WorkloadKey {
    /// Generates a fresh P-256 key.
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Config(format!("generating the workload key: {e}")))?;
        Ok(WorkloadKey { key })
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    /// The report data the evidence must carry: this key, and the image the launcher checked.
    pub fn report_data(&self, image_measurement: &[u8; 32]) -> [u8; 64] {
        coffer_api::workload_report_data_for_image(&self.spki_der(), image_measurement)
    }

    /// A PKCS#10 CSR (PEM) naming the workload.
    pub fn csr_pem(&self, workload: &str) -> Result<String, Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, workload);
        params.distinguished_name = dn;
        params
            .serialize_request(&self.key)
            .and_then(|c| c.pem())
            .map_err(|e| Error::Config(format!("building the CSR: {e}")))
    }

    /// The private key, PKCS#8 PEM.
    pub fn private_key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }
}

/// Builds the TLS client configuration for a root-CA trust setting: the Coordinator's
/// certificate must chain to one of the pinned roots with the Coordinator's name *and* be its
/// own RA-TLS certificate ([`coffer_evidence::ratls::check_coordinator_leaf`]), so a workload
/// or webhook certificate under the same root is refused.
pub fn tls_for_root_ca(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert =
            cert.map_err(|e| Error::Config(format!("COFFER_ROOT_CA: not PEM certificates: {e}")))?;
        pinned.push(cert.to_vec());
        roots
            .add(cert)
            .map_err(|e| Error::Config(format!("COFFER_ROOT_CA: unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Config("COFFER_ROOT_CA holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::Config(format!("COFFER_ROOT_CA: {e}")))?;
    client::tls_config(move |end_entity, intermediates, name, ocsp, now| {
        use rustls::client::danger::ServerCertVerifier as _;
        webpki.verify_server_cert(end_entity, intermediates, name, ocsp, now)?;
        let mut last = None;
        for root in &pinned {
            match coffer_evidence::ratls::check_coordinator_leaf(end_entity, root) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(rustls::Error::General(format!(
            "the server certificate chains to COFFER_ROOT_CA but is not the Coordinator's own \
             RA-TLS certificate ({})",
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    })
    .map_err(|e| Error::Config(format!("TLS: {e}")))
}

/// How the activation connection checks the Coordinator.
#[derive(Debug)]
pub enum CoordinatorTls {
    /// A ready configuration (the pinned root CA).
    Fixed(Arc<rustls::ClientConfig>),
    /// By measurement: the configuration needs the Coordinator's collateral first.
    Measurement(Box<crate::ratls::MeasurementTrust>),
}

impl CoordinatorTls {
    fn config(&self, addr: &str) -> Result<Arc<rustls::ClientConfig>, TransportError> {
        match self {
            CoordinatorTls::Fixed(c) => Ok(c.clone()),
            CoordinatorTls::Measurement(m) => m.tls(addr),
        }
    }
}

/// What an activation needs besides the evidence.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `host:port`.
    pub addr: &'a str,
    /// Workload name.
    pub workload: &'a str,
    /// Instance UUID.
    pub instance_id: uuid::Uuid,
    /// How the Coordinator is checked.
    pub trust: &'a CoordinatorTrust,
    /// How long to keep retrying while the Coordinator is unreachable.
    pub timeout: Duration,
    /// The image measurement bound into the evidence (see [`WorkloadKey::report_data`]).
    pub image_measurement: [u8; 32],
}

/// A successful activation.
#[derive(Debug)]
pub struct Activated {
    /// The Coordinator's answer (parameters hold secrets; its Debug output does not show them).
    pub response: Activation,
    /// Attempts made.
    pub attempts: u32,
}

/// Sends the activation, retrying transient failures with backoff until `timeout`, and checks
/// the answer: protocol version, the certificate is for our key, the root CA is the pinned one.
pub fn activate(
    req: &Request<'_>,
    tls: &CoordinatorTls,
    key: &WorkloadKey,
    evidence: &Evidence,
    pinned_root_pem: Option<&[u8]>,
) -> Result<Activated, Error> {
    let body = ActivationRequest {
        protocol_version: coffer_api::PROTOCOL_VERSION,
        workload: req.workload.to_string(),
        instance_id: req.instance_id,
        csr_pem: key.csr_pem(req.workload)?,
        evidence: evidence.clone(),
        image_measurement: Some(hex::encode(req.image_measurement)),
    };
    let body = serde_json::to_vec(&body).map_err(|e| Error::Protocol(e.to_string()))?;
    let start = Instant::now();
    let mut delay = BACKOFF_START;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        // Whether the last failure was an answer from the Coordinator (not the network).
        let sent = tls
            .config(req.addr)
            .and_then(|tls| client::post_json(req.addr, &tls, "/api/v1/activate", &body));
        let (last, answered) = match sent {
            Ok(resp) if resp.status == 200 => {
                let response = check_response(&resp.body, key, pinned_root_pem)?;
                return Ok(Activated { response, attempts });
            }
            Ok(resp) => match refusal(resp.status, &resp.body) {
                Refusal::Fatal(e) => return Err(e),
                Refusal::Retry(why) => (why, true),
            },
            Err(TransportError::Transient(why)) => (why, false),
            Err(TransportError::Untrusted(why)) => {
                return Err(Error::CoordinatorUntrusted {
                    addr: req.addr.to_string(),
                    reason: why,
                })
            }
            Err(TransportError::Malformed(why)) => return Err(Error::Protocol(why)),
        };
        let elapsed = start.elapsed();
        if elapsed + delay > req.timeout && answered {
            return Err(Error::NotReady {
                addr: req.addr.to_string(),
                workload: req.workload.to_string(),
                secs: elapsed.as_secs(),
                reason: last,
            });
        }
        if elapsed + delay > req.timeout {
            return Err(Error::Unreachable {
                addr: req.addr.to_string(),
                attempts,
                secs: elapsed.as_secs(),
                last,
            });
        }
        eprintln!(
            "coffer-launcher: Coordinator {} not ready ({last}); retrying in {} ms",
            req.addr,
            delay.as_millis()
        );
        std::thread::sleep(delay);
        delay = (delay * 2).min(BACKOFF_CAP);
    }
}

enum Refusal {
    Fatal(Error),
    Retry(String),
}

/// Sorts a non-200 answer into a final refusal or a transient state worth waiting for.
fn refusal(status: u16, body: &[u8]) -> Refusal {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => {
            let kind = serde_json::to_value(&b.error.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            let message: String = b.error.message.chars().take(2000).collect();
            match b.error.kind {
                // The Coordinator is up but cannot decide yet: no manifest (conflict), sealed
                // state in recovery, a tampered state awaiting its owners, the vendor's
                // collateral service down, too many refusals from this address, an internal
                // fault.
                ErrorKind::Conflict
                | ErrorKind::RecoveryMode
                | ErrorKind::Tampered
                | ErrorKind::CollateralUnavailable
                | ErrorKind::RateLimited
                | ErrorKind::Internal => Refusal::Retry(
                    // The Coordinator's messages may already start with their kind.
                    if message.starts_with(&format!("{kind}: ")) {
                        message
                    } else {
                        format!("{kind}: {message}")
                    },
                ),
                _ => Refusal::Fatal(Error::Refused { kind, message }),
            }
        }
        Err(_) if (500..600).contains(&status) || status == 429 => {
            Refusal::Retry(format!("HTTP {status}"))
        }
        Err(_) => Refusal::Fatal(Error::Protocol(format!(
            "HTTP {status} without a Coffer error body (is COFFER_COORDINATOR a Coffer Coordinator?)"
        ))),
    }
}

fn check_response(
    body: &[u8],
    key: &WorkloadKey,
    pinned_root_pem: Option<&[u8]>,
) -> Result<Activation, Error> {
    let resp: ActivationResponse = serde_json::from_slice(body).map_err(|e| {
        Error::Protocol(format!(
            "activation answer is not valid JSON of the expected shape: {e}"
        ))
    })?;
    if !coffer_api::protocol_version_supported(resp.protocol_version) {
        return Err(Error::Protocol(format!(
            "Coordinator speaks protocol {}, this launcher {}..={}",
            resp.protocol_version,
            coffer_api::MIN_PROTOCOL_VERSION,
            coffer_api::PROTOCOL_VERSION
        )));
    }
    let leaf = CertificateDer::pem_slice_iter(resp.certificate_chain_pem.as_bytes())
        .next()
        .ok_or_else(|| Error::Protocol("the answer has no workload certificate".into()))?
        .map_err(|e| Error::Protocol(format!("workload certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| Error::Protocol(format!("workload certificate: {e}")))?;
    if cert.public_key().raw != key.spki_der().as_slice() {
        return Err(Error::Protocol(
            "the workload certificate is not for the key this launcher generated".into(),
        ));
    }
    let root = CertificateDer::pem_slice_iter(resp.root_ca_pem.as_bytes())
        .next()
        .ok_or_else(|| Error::Protocol("the answer has no root CA".into()))?
        .map_err(|e| Error::Protocol(format!("root CA: {e}")))?;
    if let Some(pinned) = pinned_root_pem {
        let same = CertificateDer::pem_slice_iter(pinned)
            .flatten()
            .any(|c| c.as_ref() == root.as_ref());
        if !same {
            return Err(Error::Protocol(
                "the answer's root CA is not the pinned COFFER_ROOT_CA".into(),
            ));
        }
    }
    // The parameters are sealed to this launcher's key: only it can read them.
    let der = Zeroizing::new(key.key.serialize_der());
    resp.open(&der)
        .map_err(|e| Error::Protocol(format!("activation parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_binds_report_data_and_csr() {
        let k = WorkloadKey::generate().unwrap();
        let rd = k.report_data(&[7; 32]);
        assert_eq!(
            rd[..32],
            coffer_api::workload_report_data(&k.spki_der())[..32]
        );
        // The image slot is domain-separated: not the bare measurement, not zero, and another
        // image gives another value.
        assert!(rd[32..] != [0u8; 32] && rd[32..] != [7u8; 32]);
        assert_ne!(rd[32..], k.report_data(&[8; 32])[32..]);
        let csr = k.csr_pem("web").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(!format!("{k:?}").contains("BEGIN"));
    }

    #[test]
    fn refusals_are_sorted() {
        let body =
            |kind: &str| format!(r#"{{"error":{{"kind":"{kind}","message":"m"}}}}"#).into_bytes();
        assert!(matches!(refusal(403, &body("policy_mismatch")),
            Refusal::Fatal(Error::Refused { kind, .. }) if kind == "policy_mismatch"));
        assert!(matches!(
            refusal(503, &body("recovery_mode")),
            Refusal::Retry(_)
        ));
        assert!(matches!(refusal(502, b"<html>"), Refusal::Retry(_)));
        assert!(matches!(
            refusal(404, b"<html>"),
            Refusal::Fatal(Error::Protocol(_))
        ));
    }
}
