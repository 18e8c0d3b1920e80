//! Client side: attesting a Coordinator before trusting it (`coffer verify`, first contact).
//!
//! 1. Connect in recording mode (the server certificate is accepted at the TLS layer and kept).
//! 2. `GET /api/v1/quote?nonce=<fresh random 32 bytes>&state=1`.
//! 3. Verify the quote (Intel root; the simulated platform's root only with
//!    `allow_simulation`), check that its report data binds the root CA it came with, the
//!    nonce, and (when the Coordinator serves a verified state) the state head it reports, so
//!    the quote is fresh and the state summary is the TEE's own word; require an accepted TCB
//!    status (never `Revoked`), no debug enclave, and optionally an expected MRENCLAVE.
//! 4. Check that the TLS certificate of this very connection chains to that root, so the
//!    channel ends in the attested Coordinator.
//!
//! After that the root CA is the trust anchor ([`crate::tls::Trust::RootCa`]).

use std::sync::Arc;

use base64::Engine;
use rand::RngCore;

use crate::client::Client;
use crate::error::Error;
use crate::platform::EvidenceVerifier;
use crate::tls::{RecordingVerifier, Trust};

/// What the client requires of the Coordinator.
pub struct Expectations<'a> {
    /// Accept a simulating Coordinator (its evidence must then verify under `verifier`'s sim
    /// anchors).
    pub allow_simulation: bool,
    /// Acceptable MRENCLAVE values (empty: any; the quote must still verify).
    pub mrenclaves: &'a [[u8; 32]],
    /// Acceptable TCB statuses of the Coordinator's platform (Intel spelling); `Revoked` is
    /// refused whatever this says. See [`DEFAULT_TCB_STATUSES`].
    pub tcb_statuses: &'a [String],
}

/// The TCB statuses accepted by default: a patched platform only.
pub const DEFAULT_TCB_STATUSES: &[&str] = &["UpToDate"];

/// Checks a platform's TCB status against an accepted list: `Revoked` is always refused; an
/// empty list means [`DEFAULT_TCB_STATUSES`].
pub fn check_tcb_status(status: &str, accepted: &[String]) -> Result<(), Error> {
    let refuse = |reason: String| Error::Evidence {
        kind: if status == "Revoked" {
            coffer_api::ErrorKind::Revoked
        } else {
            coffer_api::ErrorKind::PolicyMismatch
        },
        reason,
    };
    if status == "Revoked" {
        return Err(refuse(
            "the platform's TCB level is Revoked; it is never accepted".into(),
        ));
    }
    let ok = if accepted.is_empty() {
        DEFAULT_TCB_STATUSES.contains(&status)
    } else {
        accepted.iter().any(|a| a == status)
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(format!(
            "the platform's TCB status is {status}, not one of the accepted ({}); accept it \
             explicitly with --accept-tcb-status {status} if that is intended",
            if accepted.is_empty() {
                DEFAULT_TCB_STATUSES.join(", ")
            } else {
                accepted.join(", ")
            }
        )))
    }
}

/// An attested Coordinator.
#[derive(Debug, Clone)]
pub struct Attested {
    /// Its root CA certificate, DER.
    pub root_der: Vec<u8>,
    /// Its root CA certificate, PEM.
    pub root_pem: String,
    /// Whether it runs on the simulated platform.
    pub simulation: bool,
    /// Its MRENCLAVE (SGX), hex.
    pub mrenclave: Option<String>,
    /// TCB status of its platform.
    pub tcb_status: String,
    /// The state head the quote binds (absent while the Coordinator serves no verified state:
    /// recovery or tampered mode).
    pub state: Option<coffer_api::StateSummary>,
    /// What was checked, kept for an offline verification bundle.
    pub evidence: AttestationEvidence,
}

/// The material an attestation was decided on: enough to check it again offline.
#[derive(Debug, Clone)]
pub struct AttestationEvidence {
    /// The client's nonce.
    pub nonce: Vec<u8>,
    /// The Coordinator's answer.
    pub quote: coffer_api::QuoteResponse,
    /// The TLS chain of the connection, leaf first, DER.
    pub tls_chain: Vec<Vec<u8>>,
    /// The collateral the quote verified with.
    pub collateral: std::sync::Arc<coffer_evidence::Collateral>,
}

/// A fresh random nonce.
pub fn random_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Attests the Coordinator at `addr` (steps 1–4 above).
pub async fn attest(
    addr: &str,
    verifier: &EvidenceVerifier,
    expect: &Expectations<'_>,
    now: i64,
) -> Result<Attested, Error> {
    let rec = Arc::new(RecordingVerifier::default());
    let mut client = Client::new(addr, &Trust::Attest(rec.clone()), None)?;
    let nonce = random_nonce();
    let resp: coffer_api::QuoteResponse = client
        .get(&format!(
            "/api/v1/quote?nonce={}&state=1",
            hex::encode(nonce)
        ))
        .await?;
    let seen = rec.seen();
    check_quote_response(&resp, &nonce, &seen, verifier, expect, now)
}

/// Checks a quote answer (steps 3 and 4); `seen_chain` is the TLS chain of the connection.
pub fn check_quote_response(
    resp: &coffer_api::QuoteResponse,
    nonce: &[u8],
    seen_chain: &[Vec<u8>],
    verifier: &EvidenceVerifier,
    expect: &Expectations<'_>,
    now: i64,
) -> Result<Attested, Error> {
    let refuse = |kind: coffer_api::ErrorKind, reason: String| Error::Evidence { kind, reason };
    if resp.simulation && !expect.allow_simulation {
        return Err(refuse(
            coffer_api::ErrorKind::UntrustedRoot,
            "the Coordinator runs on the SIMULATED platform (no hardware protection); refusing. \
             Pass --allow-simulation (with --sim-dir) only for development"
                .into(),
        ));
    }
    let root_der = crate::pki::pem_decode(&resp.root_ca_pem, "CERTIFICATE")
        .ok_or_else(|| Error::BadRequest("root_ca_pem is not a PEM certificate".into()))?;
    let spki = crate::pki::cert_spki(&root_der)?;
    let quote = base64::engine::general_purpose::STANDARD
        .decode(resp.evidence.data.as_bytes())
        .map_err(|_| {
            refuse(
                coffer_api::ErrorKind::MalformedEvidence,
                "evidence is not base64".into(),
            )
        })?;
    let collateral = verifier.collateral_for(&quote, now)?;
    let verified = verifier.verify_with(&quote, &collateral, now)?;
    let expected = match &resp.state {
        Some(state) => coffer_api::coordinator_report_data_bound(&spki, nonce, state),
        None => coffer_api::coordinator_report_data(&spki, Some(nonce)),
    };
    if verified.report_data != expected {
        return Err(refuse(
            coffer_api::ErrorKind::PolicyMismatch,
            "the quote's report data does not bind the root CA, this request's nonce and the state \
             head the Coordinator reports (stale, replayed or altered answer)"
                .into(),
        ));
    }
    let claims = crate::core::claims_of(&verified);
    check_tcb_status(&claims.tcb_status, expect.tcb_statuses)?;
    if claims.debug {
        return Err(refuse(
            coffer_api::ErrorKind::PolicyMismatch,
            "the Coordinator runs in a DEBUG enclave".into(),
        ));
    }
    if !expect.mrenclaves.is_empty() {
        let got = claims.mrenclave.ok_or_else(|| {
            refuse(
                coffer_api::ErrorKind::PolicyMismatch,
                "the Coordinator's evidence has no MRENCLAVE".into(),
            )
        })?;
        if !expect.mrenclaves.contains(&got) {
            return Err(refuse(
                coffer_api::ErrorKind::PolicyMismatch,
                format!(
                    "Coordinator MRENCLAVE {} is not one of the expected values",
                    hex::encode(got)
                ),
            ));
        }
    }
    // The TLS channel must end in the attested Coordinator: its leaf is its own RA-TLS
    // certificate under the attested root (or, in recovery and tampered mode, the attested
    // self-signed certificate itself), and the quote in it verifies and binds its key.
    let leaf = seen_chain
        .first()
        .ok_or_else(|| Error::Pki("no server certificate was recorded".into()))?;
    let ratls = coffer_evidence::ratls::check_coordinator_leaf(leaf, &root_der).map_err(|e| {
        refuse(
            coffer_api::ErrorKind::BadSignature,
            format!(
                "the TLS server certificate is not the attested Coordinator's own certificate \
                 ({e}): a machine in the middle, or a certificate issued to someone else"
            ),
        )
    })?;
    let leaf_quote = verifier.verify(&ratls.quote, now)?;
    if crate::core::claims_of(&leaf_quote) != claims {
        return Err(refuse(
            coffer_api::ErrorKind::PolicyMismatch,
            "the TLS certificate's quote is from other code than the attested Coordinator's".into(),
        ));
    }
    Ok(Attested {
        root_pem: resp.root_ca_pem.clone(),
        root_der,
        simulation: resp.simulation,
        mrenclave: claims.mrenclave.map(hex::encode),
        tcb_status: claims.tcb_status,
        state: resp.state.clone(),
        evidence: AttestationEvidence {
            nonce: nonce.to_vec(),
            quote: resp.clone(),
            tls_chain: seen_chain.to_vec(),
            collateral,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::CollateralSource;
    use coffer_evidence::sim::{SimCollateralOptions, SimPlatform};
    use coffer_evidence::TcbStatus;

    #[test]
    fn tcb_status_policy() {
        check_tcb_status("UpToDate", &[]).unwrap();
        let err = check_tcb_status("SWHardeningNeeded", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("--accept-tcb-status SWHardeningNeeded"),
            "{err}"
        );
        check_tcb_status("SWHardeningNeeded", &["SWHardeningNeeded".into()]).unwrap();
        for accepted in [vec![], vec!["Revoked".to_string()]] {
            let err = check_tcb_status("Revoked", &accepted).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Evidence {
                        kind: coffer_api::ErrorKind::Revoked,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    /// A Coordinator whose platform is not UpToDate is refused by default, accepted when the
    /// client accepts that status, and never when its TCB level is revoked.
    #[test]
    fn clients_refuse_a_coordinator_on_an_unaccepted_tcb() {
        let sim = SimPlatform::from_seed([5; 32]);
        let now = crate::core::now_unix();
        let ca = crate::pki::Ca::generate(now).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf_quote = sim.sgx_quote(&coffer_evidence::sim::SgxQuoteSpec {
            report_data: coffer_evidence::ratls::dice_report_data(&crate::pki::key_spki(&key)),
            ..Default::default()
        });
        let quotes = crate::pki::RaTlsQuotes {
            dice: leaf_quote,
            legacy: None,
        };
        let leaf = ca.server_cert(&key, &quotes, true, now).unwrap();
        let nonce = [9u8; 32];
        let spki = crate::pki::cert_spki(ca.root_der()).unwrap();
        let quote = sim.sgx_quote(&coffer_evidence::sim::SgxQuoteSpec {
            report_data: coffer_api::coordinator_report_data(&spki, Some(&nonce)),
            ..Default::default()
        });
        let resp = coffer_api::QuoteResponse {
            protocol_version: coffer_api::PROTOCOL_VERSION,
            evidence: coffer_api::Evidence {
                format: coffer_api::EvidenceFormat::DcapQuote,
                data: base64::engine::general_purpose::STANDARD.encode(quote),
                certificates: Vec::new(),
            },
            root_ca_pem: crate::pki::pem_encode("CERTIFICATE", ca.root_der()),
            intermediate_ca_pem: String::new(),
            simulation: true,
            state: None,
        };
        let chain = vec![leaf, ca.root_der().to_vec()];
        let check = |status: TcbStatus, accepted: &[String]| {
            let collateral = sim.collateral_with(
                coffer_evidence::Tee::Sgx,
                now,
                &SimCollateralOptions {
                    platform_status: status,
                    ..Default::default()
                },
            );
            let v = EvidenceVerifier::new(
                sim.trust_anchors(),
                CollateralSource::Fixed(Arc::new(collateral)),
            );
            let expect = Expectations {
                allow_simulation: true,
                mrenclaves: &[],
                tcb_statuses: accepted,
            };
            check_quote_response(&resp, &nonce, &chain, &v, &expect, now)
        };
        check(TcbStatus::UpToDate, &[]).unwrap();
        let err = check(TcbStatus::SWHardeningNeeded, &[]).unwrap_err();
        assert!(err.to_string().contains("SWHardeningNeeded"), "{err}");
        check(TcbStatus::SWHardeningNeeded, &["SWHardeningNeeded".into()]).unwrap();
        let err = check(TcbStatus::Revoked, &["Revoked".into()]).unwrap_err();
        assert!(err.to_string().contains("Revoked"), "{err}");
    }
}
