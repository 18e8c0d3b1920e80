//! Recovery of the state key with the manifest's recovery keys.
//!
//! Whenever a manifest is set or updated, the state key is encrypted to every recovery key
//! (RSA-OAEP-SHA256) and the envelope is kept in the store's plaintext `meta` table:
//! - threshold 1 (default): each entry is the whole state key; any one key owner recovers.
//! - threshold n of n: the key is split into n XOR shares (all are needed; each share alone is
//!   uniformly random), each share encrypted to one recovery key.
//! - threshold k of n (1 < k < n): the key is split with Shamir secret sharing over GF(256)
//!   (crate `blahaj`); share `i` (33 bytes: x = i + 1, then 32 y bytes) is encrypted to recovery
//!   key `i`. Any k shares interpolate the key; fewer reveal nothing about it.
//!
//! If the state key cannot be unsealed, the Coordinator starts in recovery mode with a fresh
//! random challenge. Each key owner decrypts their entry locally (`coffer recover --key`) and
//! uploads the plaintext with an RSA-PSS-SHA256 signature over
//! `"coffer-recover-v1\0" ‖ challenge ‖ secret`, made with the same private key. Uploads are
//! accumulated until the threshold is met; the combined key must open the store (key-check
//! value), then it is re-sealed to this platform and the Coordinator serves again.

use rand::RngCore;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::signature::Verifier as _;
use rsa::{Oaep, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::state::StateKey;

/// Domain separator of recovery signatures.
pub const RECOVERY_SIGNATURE_CONTEXT: &[u8] = b"coffer-recover-v1\0";

/// One recovery key's encrypted part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeEntry {
    /// Name of the recovery key in the manifest.
    pub name: String,
    /// SHA-256 of the key's DER SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    /// The public key, DER SPKI, base64 (checks upload signatures).
    pub public_key: String,
    /// RSA-OAEP-SHA256 ciphertext of the state key or share, base64.
    pub ciphertext: String,
}

/// The recovery envelope stored with the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// How many distinct key owners must upload (1 = any one; n = all).
    pub threshold: usize,
    /// One entry per recovery key.
    pub entries: Vec<EnvelopeEntry>,
}

/// How the state key is split among the recovery keys. Derived from threshold and key count, so
/// envelopes written before k-of-n existed (only 1 or n were accepted then) read the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Every entry holds the whole key.
    Whole,
    /// All n entries are XOR shares.
    Xor,
    /// Any k of the n entries are Shamir shares.
    Shamir,
}

/// Length of a Shamir share upload: x coordinate and one y byte per key byte.
pub const SHAMIR_SHARE_LEN: usize = 33;

impl Envelope {
    /// The splitting scheme of this envelope.
    pub fn scheme(&self) -> Scheme {
        if self.threshold <= 1 {
            Scheme::Whole
        } else if self.threshold >= self.entries.len() {
            Scheme::Xor
        } else {
            Scheme::Shamir
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// SHA-256 fingerprint (hex) of a DER SPKI.
pub fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// Parses an RSA public key from PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
pub fn parse_rsa_public(pem: &str) -> Result<RsaPublicKey, Error> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(|e| Error::Manifest(format!("recovery key is not an RSA public key PEM: {e}")))
}

/// Parses an RSA private key PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub fn parse_rsa_private(pem: &str) -> Result<rsa::RsaPrivateKey, Error> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_pem(pem.trim())
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem.trim()))
        .map_err(|e| Error::Recovery(format!("not an RSA private key PEM: {e}")))
}

/// The fingerprint of a private key's public half (matches [`EnvelopeEntry::fingerprint`]).
pub fn private_fingerprint(key: &rsa::RsaPrivateKey) -> Result<String, Error> {
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| Error::Recovery(e.to_string()))?;
    Ok(fingerprint(spki.as_bytes()))
}

/// Builds the envelope for `keys` (name, key) with `threshold` (1 ..= `keys.len()`).
pub fn build(
    state_key: &StateKey,
    keys: &[(String, RsaPublicKey)],
    threshold: usize,
) -> Result<Envelope, Error> {
    use base64::Engine;
    if keys.is_empty() {
        return Err(Error::Recovery("no recovery keys".into()));
    }
    if threshold == 0 || threshold > keys.len() {
        return Err(Error::Manifest(format!(
            "recovery threshold {threshold} is outside 1..={} (the number of recovery keys)",
            keys.len()
        )));
    }
    let scheme = if threshold == 1 {
        Scheme::Whole
    } else if threshold == keys.len() {
        Scheme::Xor
    } else {
        Scheme::Shamir
    };
    let parts: Vec<Zeroizing<Vec<u8>>> = if scheme == Scheme::Whole {
        keys.iter()
            .map(|_| Zeroizing::new(state_key.as_bytes().to_vec()))
            .collect()
    } else if scheme == Scheme::Shamir {
        // x coordinates are 1..=255: one per key.
        let k = u8::try_from(threshold)
            .ok()
            .filter(|_| keys.len() <= 255)
            .ok_or_else(|| {
                Error::Manifest(format!(
                    "k-of-n recovery supports at most 255 recovery keys, the manifest has {}",
                    keys.len()
                ))
            })?;
        blahaj::Sharks(k)
            .dealer(state_key.as_bytes())
            .take(keys.len())
            .map(|share| Zeroizing::new(Vec::from(&share)))
            .collect()
    } else {
        let mut shares = Vec::with_capacity(keys.len());
        let mut acc = Zeroizing::new(state_key.as_bytes().to_vec());
        for _ in 1..keys.len() {
            let mut s = Zeroizing::new(vec![0u8; 32]);
            rand::rngs::OsRng.fill_bytes(&mut s);
            for (a, b) in acc.iter_mut().zip(s.iter()) {
                *a ^= b;
            }
            shares.push(s);
        }
        shares.push(acc);
        shares
    };
    let mut entries = Vec::with_capacity(keys.len());
    for ((name, key), part) in keys.iter().zip(parts) {
        let spki = key
            .to_public_key_der()
            .map_err(|e| Error::Recovery(e.to_string()))?;
        let ct = key
            .encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), &part)
            .map_err(|e| {
                Error::Recovery(format!("cannot encrypt to recovery key `{name}`: {e}"))
            })?;
        entries.push(EnvelopeEntry {
            name: name.clone(),
            fingerprint: fingerprint(spki.as_bytes()),
            public_key: b64().encode(spki.as_bytes()),
            ciphertext: b64().encode(ct),
        });
    }
    Ok(Envelope { threshold, entries })
}

/// Recovery in progress: the challenge and the uploads accepted so far.
pub struct Session {
    /// The envelope read from the store.
    pub envelope: Envelope,
    /// Random challenge uploads must sign.
    pub challenge: [u8; 32],
    accepted: Vec<(usize, Zeroizing<Vec<u8>>)>,
}

impl Session {
    /// Starts a session with a fresh challenge.
    pub fn new(envelope: Envelope) -> Self {
        let mut challenge = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut challenge);
        Self {
            envelope,
            challenge,
            accepted: Vec::new(),
        }
    }

    /// Fingerprints of the keys that have uploaded.
    pub fn accepted(&self) -> Vec<String> {
        self.accepted
            .iter()
            .filter_map(|(i, _)| self.envelope.entries.get(*i).map(|e| e.fingerprint.clone()))
            .collect()
    }

    /// Checks one upload (signature by the matching key) and records it. Returns the combined
    /// candidate key once the threshold is reached.
    pub fn upload(
        &mut self,
        fingerprint: &str,
        secret: &[u8],
        signature: &[u8],
    ) -> Result<Option<StateKey>, Error> {
        use base64::Engine;
        let index = self
            .envelope
            .entries
            .iter()
            .position(|e| e.fingerprint.eq_ignore_ascii_case(fingerprint))
            .ok_or_else(|| {
                Error::Recovery(format!("no recovery key with fingerprint {fingerprint}"))
            })?;
        let entry = &self.envelope.entries[index];
        let spki = b64()
            .decode(&entry.public_key)
            .map_err(|_| Error::Recovery("stored recovery key is corrupt".into()))?;
        let key =
            RsaPublicKey::from_public_key_der(&spki).map_err(|e| Error::Recovery(e.to_string()))?;
        let vk = rsa::pss::VerifyingKey::<Sha256>::new(key);
        let sig = rsa::pss::Signature::try_from(signature)
            .map_err(|_| Error::Recovery("signature is not an RSA-PSS signature".into()))?;
        vk.verify(&signed_message(&self.challenge, secret), &sig)
            .map_err(|_| {
                Error::Recovery(format!(
                    "signature of recovery key `{}` does not verify over this challenge",
                    entry.name
                ))
            })?;
        let scheme = self.envelope.scheme();
        let want = if scheme == Scheme::Shamir {
            SHAMIR_SHARE_LEN
        } else {
            32
        };
        if secret.len() != want {
            return Err(Error::Recovery(format!(
                "a recovery secret of this Coordinator has {want} bytes, got {}",
                secret.len()
            )));
        }
        // A Shamir share is bound to its key's position: a share presented under another key's
        // signature (or with an edited x) is refused before it can spoil the interpolation.
        if scheme == Scheme::Shamir && secret.first().map(|&x| usize::from(x)) != Some(index + 1) {
            return Err(Error::Recovery(format!(
                "the share uploaded with recovery key `{}` is not that key's share",
                entry.name
            )));
        }
        self.accepted.retain(|(i, _)| *i != index);
        self.accepted.push((index, Zeroizing::new(secret.to_vec())));
        if self.accepted.len() < self.envelope.threshold {
            return Ok(None);
        }
        let combined = match scheme {
            Scheme::Whole => StateKey::from_slice(&self.accepted[self.accepted.len() - 1].1)?,
            Scheme::Xor => {
                let mut acc = Zeroizing::new([0u8; 32]);
                for (_, s) in &self.accepted {
                    for (a, b) in acc.iter_mut().zip(s.iter()) {
                        *a ^= b;
                    }
                }
                StateKey::from_slice(acc.as_ref())?
            }
            Scheme::Shamir => {
                let mut shares = Vec::with_capacity(self.accepted.len());
                for (_, s) in &self.accepted {
                    shares.push(
                        blahaj::Share::try_from(s.as_slice())
                            .map_err(|e| Error::Recovery(format!("malformed share: {e}")))?,
                    );
                }
                let k = u8::try_from(self.envelope.threshold)
                    .map_err(|_| Error::Recovery("stored recovery threshold is corrupt".into()))?;
                let key = Zeroizing::new(
                    blahaj::Sharks(k)
                        .recover(&shares)
                        .map_err(|e| Error::Recovery(format!("cannot combine the shares: {e}")))?,
                );
                StateKey::from_slice(&key)?
            }
        };
        Ok(Some(combined))
    }

    /// Forgets the uploads (after a combination that did not open the store).
    pub fn clear(&mut self) {
        self.accepted.clear();
    }
}

/// The message a recovery upload signs.
pub fn signed_message(challenge: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut m = RECOVERY_SIGNATURE_CONTEXT.to_vec();
    m.extend_from_slice(challenge);
    m.extend_from_slice(secret);
    m
}

/// Client side: decrypts `entry` with `key` and signs the upload. Returns (secret, signature).
pub fn client_answer(
    key: &rsa::RsaPrivateKey,
    ciphertext_b64: &str,
    challenge: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), Error> {
    use base64::Engine;
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let ct = b64()
        .decode(ciphertext_b64)
        .map_err(|_| Error::Recovery("ciphertext is not base64".into()))?;
    let secret = Zeroizing::new(key.decrypt(Oaep::new::<Sha256>(), &ct).map_err(|_| {
        Error::Recovery("this private key does not decrypt its recovery entry".into())
    })?);
    let sk = rsa::pss::BlindedSigningKey::<Sha256>::new(key.clone());
    let sig = sk.sign_with_rng(&mut rand::rngs::OsRng, &signed_message(challenge, &secret));
    Ok((secret, sig.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<(String, rsa::RsaPrivateKey)> {
        keys_n(2)
    }

    fn keys_n(n: usize) -> Vec<(String, rsa::RsaPrivateKey)> {
        // 1024-bit keys keep the test fast; production keys are checked by the manifest.
        (0..n)
            .map(|i| {
                (
                    format!("k{i}"),
                    rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn any_one_key_recovers() {
        let ks = keys();
        let pubs: Vec<_> = ks
            .iter()
            .map(|(n, k)| (n.clone(), k.to_public_key()))
            .collect();
        let sk = StateKey::generate();
        let env = build(&sk, &pubs, 1).unwrap();
        let mut s = Session::new(env.clone());
        let (secret, sig) =
            client_answer(&ks[1].1, &env.entries[1].ciphertext, &s.challenge).unwrap();
        let got = s
            .upload(&env.entries[1].fingerprint, &secret, &sig)
            .unwrap()
            .unwrap();
        assert_eq!(got.as_bytes(), sk.as_bytes());
    }

    #[test]
    fn all_of_n_needs_every_share_and_signatures_are_checked() {
        let ks = keys();
        let pubs: Vec<_> = ks
            .iter()
            .map(|(n, k)| (n.clone(), k.to_public_key()))
            .collect();
        let sk = StateKey::generate();
        let env = build(&sk, &pubs, 2).unwrap();
        let mut s = Session::new(env.clone());
        let (s0, sig0) = client_answer(&ks[0].1, &env.entries[0].ciphertext, &s.challenge).unwrap();
        // Signed for another challenge: refused.
        let (_, stale) = client_answer(&ks[0].1, &env.entries[0].ciphertext, &[0u8; 32]).unwrap();
        let err = s
            .upload(&env.entries[0].fingerprint, &s0, &stale)
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not verify"), "{err}");
        assert!(s
            .upload(&env.entries[0].fingerprint, &s0, &sig0)
            .unwrap()
            .is_none());
        let (s1, sig1) = client_answer(&ks[1].1, &env.entries[1].ciphertext, &s.challenge).unwrap();
        let got = s
            .upload(&env.entries[1].fingerprint, &s1, &sig1)
            .unwrap()
            .unwrap();
        assert_eq!(got.as_bytes(), sk.as_bytes());
        // A share alone is not the key.
        assert_ne!(s0.as_slice(), sk.as_bytes());
    }

    fn publics(ks: &[(String, rsa::RsaPrivateKey)]) -> Vec<(String, RsaPublicKey)> {
        ks.iter()
            .map(|(n, k)| (n.clone(), k.to_public_key()))
            .collect()
    }

    fn sign(key: &rsa::RsaPrivateKey, challenge: &[u8], secret: &[u8]) -> Vec<u8> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        rsa::pss::BlindedSigningKey::<Sha256>::new(key.clone())
            .sign_with_rng(&mut rand::rngs::OsRng, &signed_message(challenge, secret))
            .to_vec()
    }

    #[test]
    fn two_of_three_any_pair_recovers_and_one_share_is_not_enough() {
        let ks = keys_n(3);
        let sk = StateKey::generate();
        let env = build(&sk, &publics(&ks), 2).unwrap();
        assert_eq!(env.scheme(), Scheme::Shamir);
        for (a, b) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
            let mut s = Session::new(env.clone());
            let (sa, siga) =
                client_answer(&ks[a].1, &env.entries[a].ciphertext, &s.challenge).unwrap();
            assert_eq!(sa.len(), SHAMIR_SHARE_LEN);
            // k - 1 shares: no key yet, and the share itself is not the key.
            assert!(s
                .upload(&env.entries[a].fingerprint, &sa, &siga)
                .unwrap()
                .is_none());
            assert_ne!(&sa[1..], sk.as_bytes().as_slice());
            // The same key again does not count twice.
            assert!(s
                .upload(&env.entries[a].fingerprint, &sa, &siga)
                .unwrap()
                .is_none());
            assert_eq!(s.accepted().len(), 1);
            let (sb, sigb) =
                client_answer(&ks[b].1, &env.entries[b].ciphertext, &s.challenge).unwrap();
            let got = s
                .upload(&env.entries[b].fingerprint, &sb, &sigb)
                .unwrap()
                .unwrap();
            assert_eq!(got.as_bytes(), sk.as_bytes(), "shares {a} and {b}");
        }
        // All three shares (more than k) also interpolate the key.
        let mut s = Session::new(env.clone());
        let mut last = None;
        for (i, (_, k)) in ks.iter().enumerate() {
            let (sec, sig) = client_answer(k, &env.entries[i].ciphertext, &s.challenge).unwrap();
            last = s.upload(&env.entries[i].fingerprint, &sec, &sig).unwrap();
        }
        assert_eq!(last.unwrap().as_bytes(), sk.as_bytes());
    }

    #[test]
    fn tampered_shares_are_refused() {
        let ks = keys_n(3);
        let sk = StateKey::generate();
        let env = build(&sk, &publics(&ks), 2).unwrap();
        let mut s = Session::new(env.clone());
        let (s0, sig0) = client_answer(&ks[0].1, &env.entries[0].ciphertext, &s.challenge).unwrap();
        let fp0 = env.entries[0].fingerprint.clone();

        // A byte flipped after signing: the signature no longer verifies.
        let mut flipped = s0.to_vec();
        flipped[5] ^= 1;
        let err = s.upload(&fp0, &flipped, &sig0).err().unwrap();
        assert!(err.to_string().contains("does not verify"), "{err}");

        // Another key's x coordinate, signed by key 0: not key 0's share.
        let mut moved = s0.to_vec();
        moved[0] = 2;
        let err = s
            .upload(&fp0, &moved, &sign(&ks[0].1, &s.challenge, &moved))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not that key's share"), "{err}");

        // A whole 32-byte key where a share is expected.
        let err = s
            .upload(
                &fp0,
                sk.as_bytes(),
                &sign(&ks[0].1, &s.challenge, sk.as_bytes()),
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("has 33 bytes, got 32"), "{err}");
        assert!(s.accepted().is_empty());

        // A key owner who signs an edited y: accepted as an upload, but the combination is not
        // the state key and the store's authenticated key check refuses it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(
            crate::state::RawStore::open(&path)
                .unwrap()
                .initialise(StateKey::from_slice(sk.as_bytes()).unwrap(), vec![])
                .unwrap(),
        );
        let raw = crate::state::RawStore::open(&path).unwrap();
        let (s1, sig1) = client_answer(&ks[1].1, &env.entries[1].ciphertext, &s.challenge).unwrap();
        assert!(s
            .upload(&fp0, &flipped, &sign(&ks[0].1, &s.challenge, &flipped))
            .unwrap()
            .is_none());
        let bad = s
            .upload(&env.entries[1].fingerprint, &s1, &sig1)
            .unwrap()
            .unwrap();
        assert_ne!(bad.as_bytes(), sk.as_bytes());
        assert!(!raw.key_matches(&bad).unwrap());
        // The honest pair opens it.
        s.clear();
        s.upload(&fp0, &s0, &sig0).unwrap();
        let good = s
            .upload(&env.entries[1].fingerprint, &s1, &sig1)
            .unwrap()
            .unwrap();
        assert!(raw.key_matches(&good).unwrap());
    }

    #[test]
    fn thresholds_outside_one_to_n_are_refused() {
        let ks = keys_n(2);
        let sk = StateKey::generate();
        for t in [0, 3] {
            let err = build(&sk, &publics(&ks), t).err().unwrap();
            assert!(err.to_string().contains("outside 1..=2"), "{err}");
        }
    }
}
