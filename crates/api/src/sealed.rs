//! Activation parameters encrypted to the workload's own key, so an activation request that
//! leaks (a quote and a CSR are not secret) can be replayed but never read: the answer's
//! secrets open only with the private key generated inside the TEE, which never left it.
//!
//! The scheme is ECIES over P-256: the Coordinator makes an ephemeral key, derives
//! `HKDF-SHA256(ikm = ECDH(ephemeral, CSR key), salt = SHA-256(CSR SPKI),
//! info = "coffer-activation-parameters-v1")` and encrypts the JSON parameters with AES-256-GCM
//! (AAD = the info label ‖ SHA-256(CSR SPKI)), a fresh key per answer.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use p256::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{ActivationResponse, Parameters};

/// The name of the scheme, carried in every sealed answer.
pub const ALG: &str = "ECDH-ES-P256+HKDF-SHA256+A256GCM";

const INFO: &[u8] = b"coffer-activation-parameters-v1";

/// DER of `SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 }` up to the BIT STRING's
/// contents: what precedes the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Largest sealed parameters accepted when opening (files can be large; 16 MiB).
pub const MAX_SEALED_BYTES: usize = 16 << 20;

/// Parameters encrypted to the CSR's key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedParameters {
    /// [`ALG`].
    pub alg: String,
    /// The ephemeral public key, SEC1 uncompressed point, base64.
    pub epk: String,
    /// The AES-GCM nonce, base64 (12 bytes).
    pub nonce: String,
    /// AES-256-GCM ciphertext and tag of the JSON parameters, base64.
    pub ciphertext: String,
}

impl std::fmt::Debug for SealedParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedParameters")
            .field("alg", &self.alg)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// A key is not a P-256 key of the expected encoding.
    BadKey(String),
    /// The sealed answer is malformed (encoding, lengths, algorithm).
    Malformed(String),
    /// Decryption failed: not sealed to this key, or altered.
    Authentication,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::BadKey(m) => write!(f, "key: {m}"),
            SealError::Malformed(m) => write!(f, "sealed parameters: {m}"),
            SealError::Authentication => f.write_str(
                "sealed parameters do not open with this key (sealed to another key, or altered)",
            ),
        }
    }
}

impl std::error::Error for SealError {}

fn cipher(shared: &[u8], recipient_spki: &[u8]) -> (Aes256Gcm, Vec<u8>) {
    let spki_hash = Sha256::digest(recipient_spki);
    let hk = hkdf::Hkdf::<Sha256>::new(Some(&spki_hash), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit.
    let _ = hk.expand(INFO, key.as_mut());
    let mut aad = INFO.to_vec();
    aad.extend_from_slice(&spki_hash);
    (Aes256Gcm::new(key.as_ref().into()), aad)
}

/// Encrypts `params` to the P-256 key whose DER SubjectPublicKeyInfo is `recipient_spki`.
/// (ring's constant-time P-256 for the ephemeral key and the agreement: this runs once per
/// activation on the Coordinator's hot path.)
pub fn seal(params: &Parameters, recipient_spki: &[u8]) -> Result<SealedParameters, SealError> {
    use ring::agreement;
    // A P-256 SubjectPublicKeyInfo is this fixed header and the uncompressed point; ring
    // validates the point itself during the agreement.
    let point = recipient_spki
        .strip_prefix(P256_SPKI_PREFIX.as_slice())
        .filter(|p| p.len() == 65 && p[0] == 0x04)
        .ok_or_else(|| {
            SealError::BadKey("not a P-256 SubjectPublicKeyInfo (uncompressed point)".into())
        })?;
    let rng = ring::rand::SystemRandom::new();
    let eph = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| SealError::BadKey("no ephemeral key (system randomness failed)".into()))?;
    let epk = eph
        .compute_public_key()
        .map_err(|_| SealError::BadKey("ephemeral public key".into()))?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    let (cipher, aad) =
        agreement::agree_ephemeral(eph, &peer, |shared| cipher(shared, recipient_spki))
            .map_err(|_| SealError::BadKey("key agreement with the CSR key failed".into()))?;
    let mut nonce = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let plain = Zeroizing::new(
        serde_json::to_vec(params).map_err(|e| SealError::Malformed(e.to_string()))?,
    );
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Malformed("parameters too large to seal".into()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(SealedParameters {
        alg: ALG.into(),
        epk: b64.encode(epk.as_ref()),
        nonce: b64.encode(nonce),
        ciphertext: b64.encode(ct),
    })
}

/// Decrypts parameters sealed to the P-256 key `private_pkcs8` (DER).
pub fn open(sealed: &SealedParameters, private_pkcs8: &[u8]) -> Result<Parameters, SealError> {
    if sealed.alg != ALG {
        return Err(SealError::Malformed(format!(
            "algorithm `{}` is not `{ALG}`",
            sealed.alg
        )));
    }
    if sealed.ciphertext.len() > MAX_SEALED_BYTES {
        return Err(SealError::Malformed(format!(
            "larger than {MAX_SEALED_BYTES} bytes"
        )));
    }
    let key = p256::SecretKey::from_pkcs8_der(private_pkcs8)
        .map_err(|e| SealError::BadKey(format!("not a P-256 PKCS#8 key: {e}")))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |name: &str, v: &str| {
        b64.decode(v)
            .map_err(|_| SealError::Malformed(format!("{name} is not base64")))
    };
    let epk = p256::PublicKey::from_sec1_bytes(&field("epk", &sealed.epk)?)
        .map_err(|_| SealError::Malformed("epk is not a P-256 point".into()))?;
    let nonce = field("nonce", &sealed.nonce)?;
    if nonce.len() != 12 {
        return Err(SealError::Malformed(format!(
            "nonce has {} bytes, not 12",
            nonce.len()
        )));
    }
    let ct = field("ciphertext", &sealed.ciphertext)?;
    let shared = p256::ecdh::diffie_hellman(key.to_nonzero_scalar(), epk.as_affine());
    let spki = p256::pkcs8::EncodePublicKey::to_public_key_der(&key.public_key())
        .map_err(|e| SealError::BadKey(e.to_string()))?;
    let (cipher, aad) = cipher(shared.raw_secret_bytes(), spki.as_bytes());
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Authentication)?,
    );
    serde_json::from_slice(&plain)
        .map_err(|e| SealError::Malformed(format!("the parameters inside: {e}")))
}

/// An activation answer with its parameters opened (what a launcher acts on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The workload certificate followed by the intermediate CA, PEM.
    pub certificate_chain_pem: String,
    /// The Coordinator's root CA, PEM.
    pub root_ca_pem: String,
    /// Expiry of the workload certificate, Unix seconds.
    pub not_after: i64,
    /// Files, env, argv with secrets filled in.
    pub parameters: Parameters,
}

impl ActivationResponse {
    /// Opens the sealed parameters with the workload's private key (PKCS#8 DER).
    pub fn open(self, private_pkcs8: &[u8]) -> Result<Activation, SealError> {
        let parameters = open(&self.sealed_parameters, private_pkcs8)?;
        Ok(Activation {
            certificate_chain_pem: self.certificate_chain_pem,
            root_ca_pem: self.root_ca_pem,
            not_after: self.not_after,
            parameters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};

    fn params() -> Parameters {
        Parameters {
            files: vec![],
            env: [("DB_KEY".to_string(), "secret-value".to_string())].into(),
            argv: None,
            host_env: Vec::new(),
            image_key: None,
        }
    }

    fn keypair() -> (Vec<u8>, Vec<u8>) {
        let k = p256::SecretKey::random(&mut rand_core::OsRng);
        (
            k.to_pkcs8_der().unwrap().as_bytes().to_vec(),
            k.public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec(),
        )
    }

    #[test]
    fn opens_only_with_the_recipients_key() {
        let (private, spki) = keypair();
        let sealed = seal(&params(), &spki).unwrap();
        assert!(!sealed.ciphertext.contains("secret"));
        assert_eq!(open(&sealed, &private).unwrap(), params());
        let (other, _) = keypair();
        assert_eq!(open(&sealed, &other), Err(SealError::Authentication));
    }

    #[test]
    fn only_p256_keys_are_sealed_to() {
        let (_, spki) = keypair();
        let mut bad = spki.clone();
        bad[30] ^= 1; // a point off the curve
        assert!(matches!(seal(&params(), &bad), Err(SealError::BadKey(_))));
        assert!(matches!(
            seal(&params(), &spki[..60]),
            Err(SealError::BadKey(_))
        ));
        let rsa = [0x30u8, 0x82, 0x01, 0x22];
        assert!(matches!(seal(&params(), &rsa), Err(SealError::BadKey(_))));
    }

    #[test]
    fn every_field_is_bound() {
        let (private, spki) = keypair();
        let sealed = seal(&params(), &spki).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let flip = |s: &str| {
            let mut v = b64.decode(s).unwrap();
            let last = v.len() - 1;
            v[last] ^= 1;
            b64.encode(v)
        };
        let mut ct = sealed.clone();
        ct.ciphertext = flip(&ct.ciphertext);
        assert_eq!(open(&ct, &private), Err(SealError::Authentication));
        let mut n = sealed.clone();
        n.nonce = flip(&n.nonce);
        assert_eq!(open(&n, &private), Err(SealError::Authentication));
        // Another ephemeral key (a valid point): another shared secret.
        let mut e = sealed.clone();
        e.epk = seal(&params(), &spki).unwrap().epk;
        assert_eq!(open(&e, &private), Err(SealError::Authentication));
        let mut a = sealed;
        a.alg = "none".into();
        assert!(matches!(open(&a, &private), Err(SealError::Malformed(_))));
    }
}
