//! The simulated platform as an evidence source, and the RA-TLS check of the Coordinator.
//!
//! Simulation is used only when `COFFER_EVIDENCE=sim` names it. The simulated "hardware"
//! measures what is on disk: the image measurement recomputed from the files
//! ([`coffer_image::workload::measure_rootfs`]) is the quote's MRENCLAVE, MRSIGNER is the fixed
//! simulation signer ([`SIM_MRSIGNER`]), ISVPRODID/ISVSVN come from the workload file.

use std::path::Path;
use std::sync::Arc;

use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform};
use coffer_image::workload::WorkloadFile;
use coffer_image::Digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

use crate::{Error, Source};

/// MRSIGNER of images run on the simulated platform: SHA-256 of
/// `"coffer simulated platform signer"`, fixed so a manifest can pin it.
pub fn sim_mrsigner() -> [u8; 32] {
    Sha256::digest(b"coffer simulated platform signer").into()
}

/// Same value as [`sim_mrsigner`], for documentation links.
pub const SIM_MRSIGNER: &str = "sha256(\"coffer simulated platform signer\")";

/// File name of the persisted simulated platform in `COFFER_SIM_DIR`.
pub const SIM_PLATFORM_FILE: &str = "sim-platform.json";

/// Loads the simulated platform from `dir`.
pub fn load_platform(dir: &Path) -> Result<SimPlatform, Error> {
    let path = dir.join(SIM_PLATFORM_FILE);
    let bytes = crate::evidence::read_bounded(&path, 1 << 20, "sim")?;
    SimPlatform::from_bytes(&bytes).map_err(|e| {
        Error::evidence(
            "sim",
            format!("{} is not a simulated platform: {e}", path.display()),
        )
    })
}

/// A simulated SGX quote over `report_data` for the image as measured on disk.
pub fn sim_quote(
    dir: &Path,
    wf: &WorkloadFile,
    measurement: &Digest,
    report_data: &[u8; 64],
) -> Result<Vec<u8>, Error> {
    let platform = load_platform(dir)?;
    let spec = SgxQuoteSpec {
        mrenclave: measurement.0,
        mrsigner: sim_mrsigner(),
        isv_prod_id: wf.isv_prod_id,
        isv_svn: wf.isv_svn,
        debug: false,
        report_data: *report_data,
        ..SgxQuoteSpec::default()
    };
    Ok(platform.sgx_quote(&spec))
}

/// TLS configuration that accepts the Coordinator only when its certificate's RA-TLS evidence
/// verifies, binds the certificate's key and shows MRENCLAVE `expected`.
pub fn ratls_tls(source: &Source, expected: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let Source::Sim(dir) = source else {
        return Err(Error::Config(
            "COFFER_COORDINATOR_MRENCLAVE is supported with the simulated platform only so far \
             (verifying a hardware quote needs Intel collateral in the launcher); use \
             COFFER_ROOT_CA on hardware"
                .into(),
        ));
    };
    let platform = load_platform(dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RaTlsVerifier {
        platform,
        expected,
        provider: provider.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

struct RaTlsVerifier {
    platform: SimPlatform,
    expected: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for RaTlsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaTlsVerifier")
            .field("expected", &hex::encode(self.expected))
            .finish()
    }
}

fn bad(reason: String) -> rustls::Error {
    rustls::Error::General(format!("Coordinator RA-TLS: {reason}"))
}

impl ServerCertVerifier for RaTlsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DICE tagged evidence or Gramine's legacy extension, either OID encoding.
        let ratls = coffer_evidence::ratls::read(end_entity)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        let now = now.as_secs() as i64;
        let collateral = self.platform.collateral(now);
        let verified = coffer_evidence::verify(
            &ratls.quote,
            &collateral,
            &self.platform.trust_anchors(),
            now,
        )
        .map_err(|e| bad(format!("quote: {e}")))?;
        if verified.report_data[..] != ratls.expected_report_data[..] {
            return Err(bad("the quote does not bind the certificate's key".into()));
        }
        match &verified.measurement {
            coffer_evidence::Measurement::Sgx(m) => {
                if m.mrenclave != self.expected {
                    return Err(bad(format!(
                        "MRENCLAVE {} is not the expected {}",
                        hex::encode(m.mrenclave),
                        hex::encode(self.expected)
                    )));
                }
                if m.debug {
                    return Err(bad("the Coordinator runs in a debug enclave".into()));
                }
            }
            _ => return Err(bad("the Coordinator's evidence is not an SGX quote".into())),
        }
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
