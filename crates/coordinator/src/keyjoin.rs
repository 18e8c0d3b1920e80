//! Key join: how a Coordinator replica that cannot unseal any copy of the state key (a new
//! node, so a new sealing key) obtains it from a replica that holds it, through the shared store.
//!
//! Why through the store: replicas already share etcd and nothing else; the messages hold no
//! secret in the clear, so the store (which only ever sees ciphertext) can carry them.
//!
//! 1. The joiner makes an ephemeral P-256 key and publishes `meta/join/<replica>`: its name,
//!    public key and a quote whose report data binds both ([`report_data`]).
//! 2. An unlocked replica verifies that quote (signature chain, collateral) and that its
//!    measurement equals *its own* (same Coordinator build: MRENCLAVE/MRSIGNER/product/SVN, or
//!    MRTD/RTMRs), then answers `meta/grant/<replica>` with its own ephemeral public key, its
//!    own quote binding both public keys, and the state key encrypted with AES-256-GCM under
//!    HKDF-SHA256(ECDH) ([`Grant`]).
//! 3. The joiner verifies the granter the same way, decrypts, checks the key against the
//!    store's key-check value, seals its own copy and removes both messages.
//!
//! Both sides attest each other, so the key only ever reaches the same Coordinator code on a
//! genuine platform, and the joiner only adopts a key from one.

use base64::Engine;
use coffer_manifest::MeasurementClaims;
use hkdf::Hkdf;
use p256::ecdh::EphemeralSecret;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::state::{open_value, seal_value, StateKey};

/// `meta` name prefix of join requests.
pub const JOIN_PREFIX: &str = "join/";
/// `meta` name prefix of grants.
pub const GRANT_PREFIX: &str = "grant/";

/// Largest join message accepted (a quote with its certificates is a few KiB).
const MAX_MESSAGE: usize = 64 * 1024;

/// A joiner's request, as stored in `meta/join/<replica>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Message version (1).
    pub version: u32,
    /// The joiner's replica name.
    pub replica: String,
    /// The joiner's ephemeral P-256 public key, SEC1 uncompressed, base64.
    pub public_key: String,
    /// The joiner's quote, base64; report data = [`report_data`]`("join", replica, key, [])`.
    pub quote: String,
}

/// A granter's answer, as stored in `meta/grant/<replica>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Message version (1).
    pub version: u32,
    /// The granting replica's name.
    pub granter: String,
    /// The granter's ephemeral P-256 public key, SEC1 uncompressed, base64.
    pub public_key: String,
    /// The granter's quote, base64; report data binds both public keys.
    pub quote: String,
    /// `nonce ‖ AES-256-GCM(state key)`, base64.
    pub sealed_key: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Report data of a join message: SHA-256 over a domain label, the role, the joiner's name and
/// the public keys (each length-prefixed), then 32 zero bytes.
pub fn report_data(role: &str, replica: &str, first: &[u8], second: &[u8]) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(b"coffer key join v1");
    for part in [role.as_bytes(), replica.as_bytes(), first, second] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// The joiner's side, between publishing the request and receiving the grant.
pub struct Joiner {
    replica: String,
    secret: EphemeralSecret,
    public: Vec<u8>,
}

impl std::fmt::Debug for Joiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joiner")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// Whether two measurements are of the same Coordinator build (TCB status and debug flag are
/// compared too: a debug enclave never gets the key of a production one).
pub fn same_coordinator(a: &MeasurementClaims, b: &MeasurementClaims) -> bool {
    a.tee == b.tee
        && a.mrenclave == b.mrenclave
        && a.mrsigner == b.mrsigner
        && a.isv_prod_id == b.isv_prod_id
        && a.isv_svn == b.isv_svn
        && a.debug == b.debug
        && a.mrtd == b.mrtd
        && a.rtmrs == b.rtmrs
        && a.mrconfigid == b.mrconfigid
}

fn parse_message<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Error::BadRequest(format!(
            "{what} is {} bytes, more than {MAX_MESSAGE}",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(format!("{what}: {e}")))
}

fn decode(what: &str, v: &str) -> Result<Vec<u8>, Error> {
    b64()
        .decode(v)
        .map_err(|_| Error::BadRequest(format!("{what} is not base64")))
}

fn public_key(what: &str, v: &str) -> Result<(PublicKey, Vec<u8>), Error> {
    let raw = decode(what, v)?;
    let key = PublicKey::from_sec1_bytes(&raw)
        .map_err(|_| Error::BadRequest(format!("{what} is not a P-256 public key")))?;
    Ok((key, raw))
}

/// AES key of a grant: HKDF-SHA256 over the ECDH secret, bound to the joiner and both keys.
fn wrapping_key(
    shared: &p256::ecdh::SharedSecret,
    replica: &str,
    joiner_pub: &[u8],
    granter_pub: &[u8],
) -> zeroize::Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(b"coffer key join v1"), shared.raw_secret_bytes());
    let info = report_data("wrap", replica, joiner_pub, granter_pub);
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 8160.
    let _ = hk.expand(&info, k.as_mut());
    k
}

/// A fresh ephemeral P-256 key and its SEC1 uncompressed public point.
fn ephemeral() -> (EphemeralSecret, Vec<u8>) {
    let secret = EphemeralSecret::random(&mut rand::rngs::OsRng);
    let public = secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    (secret, public)
}

fn grant_aad(replica: &str) -> Vec<u8> {
    [b"coffer key grant v1\0".as_slice(), replica.as_bytes()].concat()
}

impl Joiner {
    /// A fresh ephemeral key for `replica`; `quote` makes evidence over the given report data.
    pub fn request(
        replica: &str,
        quote: impl FnOnce([u8; 64]) -> Result<Vec<u8>, Error>,
    ) -> Result<(Self, JoinRequest), Error> {
        let (secret, public) = ephemeral();
        let evidence = quote(report_data("join", replica, &public, &[]))?;
        let request = JoinRequest {
            version: 1,
            replica: replica.to_string(),
            public_key: b64().encode(&public),
            quote: b64().encode(evidence),
        };
        Ok((
            Self {
                replica: replica.to_string(),
                secret,
                public,
            },
            request,
        ))
    }

    /// Checks a grant and returns the state key. `verify` verifies a quote and returns its
    /// measurement and report data; `own` is this replica's own measurement.
    pub fn accept(
        &self,
        grant: &[u8],
        own: &MeasurementClaims,
        verify: impl FnOnce(&[u8]) -> Result<(MeasurementClaims, [u8; 64]), Error>,
    ) -> Result<StateKey, Error> {
        let grant: Grant = parse_message("key grant", grant)?;
        if grant.version != 1 {
            return Err(Error::BadRequest(format!(
                "key grant version {} is not supported",
                grant.version
            )));
        }
        let (granter_key, granter_pub) = public_key("key grant public_key", &grant.public_key)?;
        let (claims, rd) = verify(&decode("key grant quote", &grant.quote)?)?;
        if !same_coordinator(own, &claims) {
            return Err(Error::PolicyMismatch(format!(
                "the granting replica `{}` runs other code ({claims}) than this one ({own})",
                grant.granter
            )));
        }
        if rd != report_data("grant", &self.replica, &self.public, &granter_pub) {
            return Err(Error::PolicyMismatch(
                "the key grant's quote does not bind the two public keys".into(),
            ));
        }
        let shared = self.secret.diffie_hellman(&granter_key);
        let wrap = wrapping_key(&shared, &self.replica, &self.public, &granter_pub);
        let sealed = decode("key grant sealed_key", &grant.sealed_key)?;
        let plain = open_value(&wrap, &grant_aad(&self.replica), &sealed)
            .ok_or_else(|| Error::Unseal("the key grant does not decrypt".into()))?;
        StateKey::from_slice(&plain)
    }
}

/// The granter's side: checks `request` and wraps `key` for it. `own` is the granter's own
/// measurement, `verify` as in [`Joiner::accept`], `quote` makes the granter's evidence.
pub fn grant(
    granter: &str,
    request: &[u8],
    key: &StateKey,
    own: &MeasurementClaims,
    verify: impl FnOnce(&[u8]) -> Result<(MeasurementClaims, [u8; 64]), Error>,
    quote: impl FnOnce([u8; 64]) -> Result<Vec<u8>, Error>,
) -> Result<(String, Grant), Error> {
    let req: JoinRequest = parse_message("key join request", request)?;
    if req.version != 1 {
        return Err(Error::BadRequest(format!(
            "key join request version {} is not supported",
            req.version
        )));
    }
    crate::replica::validate_name(&req.replica)?;
    let (joiner_key, joiner_pub) = public_key("key join public_key", &req.public_key)?;
    let (claims, rd) = verify(&decode("key join quote", &req.quote)?)?;
    if !same_coordinator(own, &claims) {
        return Err(Error::PolicyMismatch(format!(
            "replica `{}` runs other code ({claims}) than this one ({own})",
            req.replica
        )));
    }
    if rd != report_data("join", &req.replica, &joiner_pub, &[]) {
        return Err(Error::PolicyMismatch(format!(
            "the quote of replica `{}` does not bind its public key",
            req.replica
        )));
    }
    let (secret, public) = ephemeral();
    let evidence = quote(report_data("grant", &req.replica, &joiner_pub, &public))?;
    let shared = secret.diffie_hellman(&joiner_key);
    let wrap = wrapping_key(&shared, &req.replica, &joiner_pub, &public);
    let sealed = seal_value(&wrap, &grant_aad(&req.replica), key.as_bytes());
    Ok((
        req.replica,
        Grant {
            version: 1,
            granter: granter.to_string(),
            public_key: b64().encode(&public),
            quote: b64().encode(evidence),
            sealed_key: b64().encode(sealed),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_manifest::Tee;

    /// A stand-in "quote" for these unit tests: the claims' MRENCLAVE byte and the report data.
    /// (The real quotes are exercised end to end in `crates/cli/tests/ha_etcd.rs`.)
    fn quote_as(mr: u8) -> impl Fn([u8; 64]) -> Result<Vec<u8>, Error> {
        move |rd| Ok([&[mr][..], &rd[..]].concat())
    }

    fn claims(mr: u8) -> MeasurementClaims {
        MeasurementClaims {
            mrenclave: Some([mr; 32]),
            mrsigner: Some([1; 32]),
            isv_prod_id: Some(1),
            isv_svn: Some(1),
            tcb_status: "UpToDate".into(),
            ..MeasurementClaims::of_tee(Tee::Sgx)
        }
    }

    fn verify(q: &[u8]) -> Result<(MeasurementClaims, [u8; 64]), Error> {
        let (mr, rd) = q.split_first().ok_or(Error::BadRequest("empty".into()))?;
        Ok((
            claims(*mr),
            rd.try_into().map_err(|_| Error::BadRequest("rd".into()))?,
        ))
    }

    fn round(joiner_mr: u8, granter_mr: u8) -> Result<StateKey, Error> {
        let key = StateKey::from_slice(&[7; 32])?;
        let (j, req) = Joiner::request("b", quote_as(joiner_mr))?;
        let (name, g) = grant(
            "a",
            &serde_json::to_vec(&req).unwrap(),
            &key,
            &claims(granter_mr),
            verify,
            quote_as(granter_mr),
        )?;
        assert_eq!(name, "b");
        j.accept(&serde_json::to_vec(&g).unwrap(), &claims(joiner_mr), verify)
    }

    #[test]
    fn the_same_coordinator_gets_the_key() {
        assert_eq!(round(9, 9).unwrap().as_bytes(), &[7; 32]);
    }

    #[test]
    fn other_code_is_refused_either_way() {
        assert!(
            matches!(round(8, 9), Err(Error::PolicyMismatch(m)) if m.contains("runs other code"))
        );
    }

    #[test]
    fn a_tampered_grant_or_a_swapped_key_is_refused() {
        let key = StateKey::from_slice(&[7; 32]).unwrap();
        let (j, req) = Joiner::request("b", quote_as(9)).unwrap();
        let body = serde_json::to_vec(&req).unwrap();
        let (_, g) = grant("a", &body, &key, &claims(9), verify, quote_as(9)).unwrap();
        // One flipped bit of the ciphertext.
        let mut sealed = b64().decode(&g.sealed_key).unwrap();
        sealed[20] ^= 1;
        let bad = Grant {
            sealed_key: b64().encode(&sealed),
            ..g.clone()
        };
        let err = j
            .accept(&serde_json::to_vec(&bad).unwrap(), &claims(9), verify)
            .unwrap_err();
        assert!(matches!(err, Error::Unseal(_)), "{err}");
        // A grant made for another request (another ephemeral key) does not bind this one.
        let (_, other_req) = Joiner::request("b", quote_as(9)).unwrap();
        let (_, other) = grant(
            "a",
            &serde_json::to_vec(&other_req).unwrap(),
            &key,
            &claims(9),
            verify,
            quote_as(9),
        )
        .unwrap();
        let err = j
            .accept(&serde_json::to_vec(&other).unwrap(), &claims(9), verify)
            .unwrap_err();
        assert!(matches!(err, Error::PolicyMismatch(m) if m.contains("does not bind")));
        // A request whose quote binds another key is refused by the granter.
        let mut swapped = req.clone();
        swapped.public_key = other_req.public_key.clone();
        let err = grant(
            "a",
            &serde_json::to_vec(&swapped).unwrap(),
            &key,
            &claims(9),
            verify,
            quote_as(9),
        )
        .unwrap_err();
        assert!(matches!(err, Error::PolicyMismatch(m) if m.contains("does not bind")));
        // Oversized and malformed requests are refused with a reason.
        let err = grant(
            "a",
            &vec![b' '; MAX_MESSAGE + 1],
            &key,
            &claims(9),
            verify,
            quote_as(9),
        )
        .unwrap_err();
        assert!(matches!(err, Error::BadRequest(m) if m.contains("more than")));
        let err = grant("a", b"{}", &key, &claims(9), verify, quote_as(9)).unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)));
    }
}
