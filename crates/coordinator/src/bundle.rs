//! Offline verification bundles: what `coffer verify --save-bundle FILE` writes and
//! `coffer verify --bundle FILE` checks later, on another machine, with no network.
//!
//! A bundle holds everything one attestation was decided on: the client's nonce, the
//! Coordinator's state-bound quote with its root CA, the TLS chain of the connection, the
//! collateral the quote verified with, the manifest history and the manifest in force. Checking
//! it repeats the client's checks ([`crate::attest::check_quote_response`]) and then checks the
//! history against the state head the quote binds, and the manifest against the history.
//!
//! What a bundle proves: at a time when its collateral was valid, a TEE running the attested
//! Coordinator held exactly this state head (generation, manifest history head, audit head)
//! and answered this nonce. The nonce and `created` are the saving client's own claims: the
//! quote is fresh *for that client*, and an auditor trusts the bundle's time as far as they
//! trust whoever saved it (the collateral's validity window bounds it).

use std::sync::Arc;

use base64::Engine;
use coffer_api::{HistoryEntry, QuoteResponse, StateSummary};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::attest::{check_quote_response, Attested, Expectations};
use crate::error::Error;
use crate::platform::{CollateralSource, EvidenceVerifier};

/// The `format` of this version of the bundle.
pub const FORMAT: &str = "coffer-verification-bundle/v1";

/// Largest bundle accepted (a quote, collateral with CRLs, a long history, a large manifest).
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;

/// A verification bundle (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// [`FORMAT`].
    pub format: String,
    /// The address the Coordinator was reached at (informational).
    pub coordinator: String,
    /// Unix seconds when the bundle was saved (the saving client's clock).
    pub created: i64,
    /// The client's nonce, hex.
    #[serde(with = "hex::serde")]
    pub nonce: Vec<u8>,
    /// The Coordinator's state-bound quote answer.
    pub quote: QuoteResponse,
    /// The connection's TLS chain, leaf first, DER in base64.
    pub tls_chain: Vec<String>,
    /// The collateral the quote verified with (Coffer's collateral JSON).
    pub collateral: String,
    /// The manifest history, version 1 first.
    pub history: Vec<HistoryEntry>,
    /// The manifest in force (canonical JSON), if one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// What a bundle showed.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The attestation, as the saving client saw it.
    pub attested: Attested,
    /// The state head the quote binds.
    pub state: StateSummary,
    /// The manifest hash in force (the last history entry's), if any.
    pub manifest_hash: Option<String>,
}

impl Bundle {
    /// A bundle of `attested` (a state-bound attestation), `history` and `manifest`.
    pub fn new(
        coordinator: &str,
        attested: &Attested,
        history: Vec<HistoryEntry>,
        manifest: Option<Vec<u8>>,
        created: i64,
    ) -> Result<Self, Error> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let manifest = manifest
            .map(|m| {
                String::from_utf8(m)
                    .map_err(|_| Error::BadRequest("the manifest is not UTF-8".into()))
            })
            .transpose()?;
        Ok(Self {
            format: FORMAT.into(),
            coordinator: coordinator.into(),
            created,
            nonce: attested.evidence.nonce.clone(),
            quote: attested.evidence.quote.clone(),
            tls_chain: attested
                .evidence
                .tls_chain
                .iter()
                .map(|c| b64.encode(c))
                .collect(),
            collateral: attested.evidence.collateral.to_json(),
            history,
            manifest,
        })
    }

    /// The bundle as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and vectors only: serialising cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a bundle: bounded, strict JSON, this format only.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(Error::BadRequest(format!(
                "the bundle is {} bytes, more than {MAX_BUNDLE_BYTES}",
                bytes.len()
            )));
        }
        let b: Bundle = serde_json::from_slice(bytes)
            .map_err(|e| Error::BadRequest(format!("not a verification bundle: {e}")))?;
        if b.format != FORMAT {
            return Err(Error::BadRequest(format!(
                "bundle format `{}` is not `{FORMAT}`",
                b.format
            )));
        }
        Ok(b)
    }

    /// Checks the bundle at `now` under `anchors` (Intel's root, or a simulated platform's
    /// when `expect` allows simulation): the attestation as the client checked it, then the
    /// history against the bound state head and the manifest against the history.
    pub fn check(
        &self,
        anchors: coffer_evidence::TrustAnchors,
        expect: &Expectations<'_>,
        now: i64,
    ) -> Result<Checked, Error> {
        let collateral = coffer_evidence::Collateral::from_json(self.collateral.as_bytes())
            .map_err(|e| Error::BadRequest(format!("the bundle's collateral: {e}")))?;
        let verifier =
            EvidenceVerifier::new(anchors, CollateralSource::Fixed(Arc::new(collateral)));
        let b64 = base64::engine::general_purpose::STANDARD;
        let chain = self
            .tls_chain
            .iter()
            .map(|c| b64.decode(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::BadRequest("the bundle's TLS chain is not base64".into()))?;
        let attested =
            check_quote_response(&self.quote, &self.nonce, &chain, &verifier, expect, now)?;
        let state = attested.state.clone().ok_or_else(|| {
            Error::PolicyMismatch(
                "the bundle's quote binds no state head (the Coordinator served no verified \
                 state: recovery or tampered mode)"
                    .into(),
            )
        })?;
        let (version, head) = coffer_api::verify_history(&self.history)
            .map_err(|e| Error::PolicyMismatch(format!("the bundle's manifest history: {e}")))?;
        if (version, head) != (state.manifest_version, state.manifest_head) {
            return Err(Error::PolicyMismatch(format!(
                "the bundle's manifest history ends at version {version} ({}) but the quote binds \
                 version {} ({})",
                hex::encode(head),
                state.manifest_version,
                hex::encode(state.manifest_head)
            )));
        }
        let manifest_hash = self
            .history
            .last()
            .map(|e| e.manifest_hash.clone())
            .filter(|h| h != coffer_api::chain::NO_MANIFEST);
        match (&self.manifest, &manifest_hash) {
            (Some(m), Some(want)) => {
                let got = hex::encode(Sha256::digest(m.as_bytes()));
                if &got != want {
                    return Err(Error::PolicyMismatch(format!(
                        "the bundle's manifest hashes to {got}, not {want}, the one its history ends with"
                    )));
                }
            }
            (Some(_), None) => {
                return Err(Error::PolicyMismatch(
                    "the bundle carries a manifest but its history has none in force".into(),
                ))
            }
            (None, _) => {}
        }
        Ok(Checked {
            attested,
            state,
            manifest_hash,
        })
    }
}
