//! The enclave signing key: RSA-3072 with public exponent 3, the only kind EINIT accepts.

use std::fmt;

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::rand_core::CryptoRngCore;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Modulus size SGX requires, in bits.
pub const KEY_BITS: usize = 3072;
/// Modulus size in bytes (the SIGSTRUCT field width).
pub const KEY_BYTES: usize = KEY_BITS / 8;
/// Public exponent SGX requires.
pub const EXPONENT: u32 = 3;

/// An RSA-3072, e = 3 private key for signing SIGSTRUCTs. Its `Debug` output shows only the
/// MRSIGNER, never key material.
#[derive(Clone)]
pub struct SigningKey {
    inner: RsaPrivateKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("mrsigner", &hex::encode(self.mrsigner()))
            .finish_non_exhaustive()
    }
}

/// Checks size and exponent of a public key, as EINIT does.
pub(crate) fn check_public(n: &BigUint, e: &BigUint) -> Result<()> {
    if *e != BigUint::from(EXPONENT) {
        return Err(Error::WrongExponent {
            found: e.to_string(),
        });
    }
    let bits = n.bits();
    if bits != KEY_BITS {
        return Err(Error::WrongKeySize { bits });
    }
    Ok(())
}

impl SigningKey {
    /// Wraps a key after checking it is 3072 bits with e = 3.
    pub fn from_rsa(inner: RsaPrivateKey) -> Result<Self> {
        check_public(inner.n(), inner.e())?;
        inner
            .validate()
            .map_err(|e| Error::Key(format!("inconsistent RSA key: {e}")))?;
        Ok(SigningKey { inner })
    }

    /// Reads a PEM private key: PKCS#1 (`RSA PRIVATE KEY`, what OpenSSL, Gramine and the Intel
    /// SDK write) or unencrypted PKCS#8 (`PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let inner = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|e| Error::Key(format!("not a valid PKCS#1 PEM key: {e}")))?
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|e| Error::Key(format!("not a valid PKCS#8 PEM RSA key: {e}")))?
        } else if pem.contains("ENCRYPTED") {
            return Err(Error::Key("encrypted PEM keys are not supported; decrypt it first (openssl rsa -in KEY -out PLAIN)".into()));
        } else {
            return Err(Error::Key(
                "no `RSA PRIVATE KEY` or `PRIVATE KEY` PEM block found".into(),
            ));
        };
        Self::from_rsa(inner)
    }

    /// [`SigningKey::from_pem`] on raw file bytes (which must be UTF-8 PEM text).
    pub fn from_pem_bytes(pem: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| Error::Key("the key file is not PEM text".into()))?;
        Self::from_pem(text)
    }

    /// Generates a new key. Slow (seconds; RSA-3072 prime search), so callers do it once.
    pub fn generate<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Result<Self> {
        let inner = RsaPrivateKey::new_with_exp(rng, KEY_BITS, &BigUint::from(EXPONENT))
            .map_err(|e| Error::Rsa(format!("key generation failed: {e}")))?;
        Self::from_rsa(inner)
    }

    /// The key as PKCS#1 PEM (`RSA PRIVATE KEY`), the format `gramine-sgx-sign` and `sgxs-sign`
    /// read. The string is wiped from memory when dropped.
    pub fn to_pem(&self) -> Result<Zeroizing<String>> {
        self.inner
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| Error::Key(format!("PEM encoding failed: {e}")))
    }

    /// The public key as SPKI PEM (`PUBLIC KEY`).
    pub fn public_pem(&self) -> Result<String> {
        RsaPublicKey::from(&self.inner)
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key(format!("PEM encoding failed: {e}")))
    }

    /// The modulus, little-endian, 384 bytes: the SIGSTRUCT MODULUS field.
    pub fn modulus_le(&self) -> [u8; KEY_BYTES] {
        modulus_le(self.inner.n())
    }

    /// MRSIGNER: SHA-256 of the little-endian modulus.
    pub fn mrsigner(&self) -> [u8; 32] {
        Sha256::digest(self.modulus_le()).into()
    }

    pub(crate) fn rsa(&self) -> &RsaPrivateKey {
        &self.inner
    }
}

pub(crate) fn modulus_le(n: &BigUint) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    let le = n.to_bytes_le();
    let len = le.len().min(KEY_BYTES);
    out[..len].copy_from_slice(&le[..len]);
    out
}
