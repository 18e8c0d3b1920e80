//! Trusting the Coordinator by its measurement: its RA-TLS certificate's quote is verified
//! inside the TEE, with collateral the Coordinator relays.
//!
//! This is the trust pin of images converted before the Coordinator exists (as Marblerun's
//! marbles are): the launcher knows the Coordinator's expected MRENCLAVE, or MRSIGNER with
//! ISVPRODID and a minimum ISVSVN, not its root CA. Before the first activation attempt it
//! fetches `GET /api/v1/collateral` over a TLS connection it does not trust: the collateral (TCB
//! info, QE identity, CRLs) is signed by Intel (or, in simulation, by the simulated platform's
//! root), so a host that alters it only makes verification fail; what it can do is replay older
//! collateral that is still within its validity, which `now` bounds as for any cached
//! collateral. The TLS handshake of every activation then requires a certificate whose quote
//! verifies with that collateral against the pinned anchors ([`TrustAnchors::intel`] on
//! hardware), binds the certificate's key (TCG DICE claims or Gramine's legacy extension),
//! shows the expected identity, is not a debug enclave, and has a TCB status without known
//! unpatched vulnerabilities (`UpToDate`, `SWHardeningNeeded`, `ConfigurationNeeded`,
//! `ConfigurationAndSWHardeningNeeded`; never `OutOfDate*` or `Revoked`).

use std::sync::{Arc, Mutex};

use coffer_evidence::{Collateral, Measurement, TcbStatus, TrustAnchors};
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::client::{self, TransportError};
use crate::config::ExpectedCoordinator;
use crate::evidence::Source;
use crate::Error;

/// Largest collateral answer accepted (a few dozen KiB in practice).
const MAX_COLLATERAL: usize = 1 << 20;

/// The Coordinator trust of [`crate::config::CoordinatorTrust::Measurement`]; builds its TLS
/// configuration once the collateral has been fetched.
pub struct MeasurementTrust {
    anchors: TrustAnchors,
    expected: ExpectedCoordinator,
    simulation: bool,
    tls: Mutex<Option<Arc<rustls::ClientConfig>>>,
}

impl std::fmt::Debug for MeasurementTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasurementTrust")
            .field("expected", &self.expected)
            .field("simulation", &self.simulation)
            .finish()
    }
}

impl MeasurementTrust {
    /// Intel's anchors on hardware; the simulated platform's when the launcher's own evidence
    /// is simulated (a simulated Coordinator is only accepted then).
    pub fn new(source: &Source, expected: ExpectedCoordinator) -> Result<Self, Error> {
        let (anchors, simulation) = match source {
            Source::Sim(dir) => (crate::sim::load_platform(dir)?.trust_anchors(), true),
            Source::Gramine(_) | Source::Tsm(_) => (TrustAnchors::intel(), false),
        };
        Ok(MeasurementTrust {
            anchors,
            expected,
            simulation,
            tls: Mutex::new(None),
        })
    }

    /// The TLS configuration for `addr`, fetching the Coordinator's collateral the first time.
    /// A network failure is transient (the activation loop retries it); collateral that does
    /// not parse is a reason not to trust the Coordinator.
    pub(crate) fn tls(&self, addr: &str) -> Result<Arc<rustls::ClientConfig>, TransportError> {
        let mut cached = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let resp = client::get(addr, &unverified_tls()?, "/api/v1/collateral")?;
        if resp.status != 200 {
            return Err(TransportError::Transient(format!(
                "the Coordinator answered {} to GET /api/v1/collateral",
                resp.status
            )));
        }
        if resp.body.len() > MAX_COLLATERAL {
            return Err(TransportError::Untrusted(format!(
                "the Coordinator's collateral is larger than {MAX_COLLATERAL} bytes"
            )));
        }
        let collateral = Collateral::from_json(&resp.body)
            .map_err(|e| TransportError::Untrusted(format!("the Coordinator's collateral: {e}")))?;
        let check = RaTlsCheck {
            anchors: self.anchors.clone(),
            collateral,
            expected: self.expected.clone(),
            allow_simulation: self.simulation,
        };
        let tls = client::tls_config(move |cert, _, _, _, now| check.check(cert, now))
            .map_err(|e| TransportError::Malformed(format!("TLS: {e}")))?;
        *cached = Some(tls.clone());
        Ok(tls)
    }
}

/// TLS that accepts any certificate: only for fetching signed collateral, never for secrets.
fn unverified_tls() -> Result<Arc<rustls::ClientConfig>, TransportError> {
    client::tls_config(|_, _, _, _, _| Ok(()))
        .map_err(|e| TransportError::Malformed(format!("TLS: {e}")))
}

fn bad(reason: String) -> rustls::Error {
    rustls::Error::General(format!("Coordinator RA-TLS: {reason}"))
}

/// Checks the Coordinator's identity in verified evidence (see the module docs).
pub fn check_identity(
    verified: &coffer_evidence::Verified,
    expected: &ExpectedCoordinator,
) -> Result<(), String> {
    let Measurement::Sgx(m) = &verified.measurement else {
        return Err("the Coordinator's evidence is not an SGX quote".into());
    };
    if m.debug {
        return Err("the Coordinator runs in a debug enclave".into());
    }
    if let Some(want) = expected.mrenclave {
        if m.mrenclave != want {
            return Err(format!(
                "MRENCLAVE {} is not the expected {}",
                hex::encode(m.mrenclave),
                hex::encode(want)
            ));
        }
    }
    if let Some(want) = expected.mrsigner {
        if m.mrsigner != want {
            return Err(format!(
                "MRSIGNER {} is not the expected {}",
                hex::encode(m.mrsigner),
                hex::encode(want)
            ));
        }
        if Some(m.isv_prod_id) != expected.isv_prod_id {
            return Err(format!(
                "ISVPRODID {} is not the expected {}",
                m.isv_prod_id,
                expected.isv_prod_id.unwrap_or_default()
            ));
        }
        if m.isv_svn < expected.min_isv_svn {
            return Err(format!(
                "ISVSVN {} is below the minimum {}",
                m.isv_svn, expected.min_isv_svn
            ));
        }
    }
    match verified.tcb_status {
        TcbStatus::UpToDate
        | TcbStatus::SWHardeningNeeded
        | TcbStatus::ConfigurationNeeded
        | TcbStatus::ConfigurationAndSWHardeningNeeded => Ok(()),
        other => Err(format!(
            "the Coordinator's platform TCB status is {other:?}: known unpatched vulnerabilities"
        )),
    }
}

/// What the activation connection requires of the Coordinator's certificate.
struct RaTlsCheck {
    anchors: TrustAnchors,
    collateral: Collateral,
    expected: ExpectedCoordinator,
    allow_simulation: bool,
}

impl RaTlsCheck {
    fn check(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        // DICE tagged evidence or Gramine's legacy extension, either OID encoding.
        let ratls = coffer_evidence::ratls::read(end_entity)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        if ratls.simulation && !self.allow_simulation {
            return Err(bad("the Coordinator runs on the SIMULATED platform".into()));
        }
        let now = now.as_secs() as i64;
        let verified = coffer_evidence::verify(&ratls.quote, &self.collateral, &self.anchors, now)
            .map_err(|e| bad(format!("quote: {e}")))?;
        if verified.report_data[..] != ratls.expected_report_data[..] {
            return Err(bad("the quote does not bind the certificate's key".into()));
        }
        check_identity(&verified, &self.expected).map_err(bad)
    }
}
