//! Reading the PEM values a manifest carries (user certificates, recovery keys). Parsing only:
//! no clock, so certificate validity dates are the Coordinator's business.

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;

use crate::error::Error;

/// Smallest recovery key accepted.
pub const MIN_RECOVERY_KEY_BITS: usize = 2048;

fn bad(what: &str, reason: impl Into<String>) -> Error {
    Error::BadKey {
        what: what.into(),
        reason: reason.into(),
    }
}

/// The DER of the one certificate in `pem_text` (the form the Coordinator compares client
/// certificates against).
pub fn certificate_der(pem_text: &str) -> Result<Vec<u8>, Error> {
    let blocks = pem::parse_many(pem_text).map_err(|e| bad("certificate", e.to_string()))?;
    let [block] = blocks.as_slice() else {
        return Err(bad(
            "certificate",
            format!("expected exactly one PEM block, found {}", blocks.len()),
        ));
    };
    if block.tag() != "CERTIFICATE" {
        return Err(bad(
            "certificate",
            format!("PEM block is {:?}, not CERTIFICATE", block.tag()),
        ));
    }
    let (rest, _) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| bad("certificate", format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("certificate", "trailing bytes after the certificate"));
    }
    Ok(block.contents().to_vec())
}

/// Parses a recovery key: an RSA public key of at least 2048 bits, PEM (`PUBLIC KEY` SPKI or
/// `RSA PUBLIC KEY` PKCS#1).
pub fn parse_recovery_key(pem_text: &str) -> Result<RsaPublicKey, Error> {
    let blocks = pem::parse_many(pem_text).map_err(|e| bad("recovery key", e.to_string()))?;
    let [block] = blocks.as_slice() else {
        return Err(bad(
            "recovery key",
            format!("expected exactly one PEM block, found {}", blocks.len()),
        ));
    };
    let key = match block.tag() {
        "PUBLIC KEY" => RsaPublicKey::from_public_key_der(block.contents())
            .map_err(|e| bad("recovery key", format!("not an RSA public key: {e}")))?,
        "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_der(block.contents())
            .map_err(|e| bad("recovery key", format!("not an RSA public key: {e}")))?,
        other => {
            return Err(bad(
                "recovery key",
                format!("PEM block is {other:?}, not PUBLIC KEY"),
            ));
        }
    };
    let bits = key.n().bits();
    if bits < MIN_RECOVERY_KEY_BITS {
        return Err(bad(
            "recovery key",
            format!("RSA key has {bits} bits, fewer than {MIN_RECOVERY_KEY_BITS}"),
        ));
    }
    Ok(key)
}
