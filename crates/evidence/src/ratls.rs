//! RA-TLS certificates: a TLS certificate that carries a quote over its own key.
//!
//! Two encodings are read, as Gramine ≥ 1.8 writes them (`tools/sgx/ra-tls/ra_tls_attest.c`):
//! - **TCG DICE tagged evidence** ([`DICE_EVIDENCE_OID`], `2.23.133.5.4.9`), which Coffer
//!   writes: the extension value is CBOR tag 60000 over `[quote, claims]`, both byte strings;
//!   `claims` is a CBOR map whose `"pubkey-hash"` entry is the CBOR array
//!   `[1 (SHA-256), SHA-256 of the certificate's DER SubjectPublicKeyInfo]`, serialised into a
//!   byte string; the quote's report data is `SHA-256(claims) ‖ 0^32` ([`dice_report_data`]);
//! - **Gramine's legacy extension** ([`RATLS_QUOTE_OID`], `1.2.840.113741.1337.6`): the raw
//!   quote, report data `SHA-256(SubjectPublicKeyInfo) ‖ 0^32`. Gramine writes its OID with a
//!   malformed encoding (the DER OID header repeated inside the content), which a strict parser
//!   reads as [`GRAMINE_MALFORMED_QUOTE_OID`]; both are accepted, and the quote may be wrapped
//!   in one more OCTET STRING (as earlier Coffer versions wrote it).
//!
//! On the simulated platform a marker extension ([`SIMULATION_MARKER_OID`]) is added, so
//! simulation is visible in the certificate itself.
//!
//! [`check_coordinator_leaf`] tells a Coordinator's own certificate from any other certificate
//! under the same root, which clients holding only the root need: the Coordinator's root CA
//! also signs the admission webhook's certificate, and its intermediate signs every workload's,
//! so "chains to the root and carries the name" is not enough.

use ciborium::value::Value;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Item};

/// Gramine's RA-TLS quote extension, `1.2.840.113741.1337.6`.
pub const RATLS_QUOTE_OID: &[u64] = &[1, 2, 840, 113741, 1337, 6];

/// The same extension as Gramine encodes its OID: the content bytes
/// `06 09 2A 86 48 86 F8 4D 8A 39 06`, which decode as `0.6.9.42.840.113741.1337.6`.
pub const GRAMINE_MALFORMED_QUOTE_OID: &[u64] = &[0, 6, 9, 42, 840, 113741, 1337, 6];

/// TCG DICE "tagged evidence", `2.23.133.5.4.9` (tcg-dice-TaggedEvidence).
pub const DICE_EVIDENCE_OID: &[u64] = &[2, 23, 133, 5, 4, 9];

/// The CBOR tag of an SGX quote with its claims in DICE tagged evidence.
pub const DICE_SGX_TAG: u64 = 60000;

/// Coffer's simulation marker extension, under the RA-TLS arc: present (value `SIMULATION`)
/// when the quote is simulated, so simulation is visible in the certificate itself.
pub const SIMULATION_MARKER_OID: &[u64] = &[1, 2, 840, 113741, 1337, 6, 99];

/// Largest RA-TLS extension read (a quote with its certification data is a few KiB).
const MAX_EVIDENCE: usize = 64 * 1024;

/// Which extension carried the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaTlsFormat {
    /// TCG DICE tagged evidence (what Coffer writes).
    Dice,
    /// Gramine's legacy quote extension, either OID encoding.
    Legacy,
}

/// The RA-TLS content of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaTls {
    /// The raw quote.
    pub quote: Vec<u8>,
    /// Whether the simulation marker is present.
    pub simulation: bool,
    /// SHA-256 of the certificate's DER SubjectPublicKeyInfo.
    pub spki_sha256: [u8; 32],
    /// The extension the quote came from.
    pub format: RaTlsFormat,
    /// The report data a quote binding this certificate's key must carry: for DICE, the hash
    /// of claims that name [`RaTls::spki_sha256`]; for the legacy extension, that hash itself;
    /// then 32 zero bytes.
    pub expected_report_data: [u8; 64],
}

fn bad(detail: impl Into<String>) -> Error {
    Error::malformed(Item::RaTlsCertificate, detail)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| bad(format!("not X.509 DER: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the certificate", rest.len())));
    }
    Ok(cert)
}

/// The DICE claims Coffer writes for a key: `{"pubkey-hash": bstr([1, bstr(SHA-256(spki))])}`.
pub fn dice_claims(spki_der: &[u8]) -> Vec<u8> {
    let hash: [u8; 32] = Sha256::digest(spki_der).into();
    let entry = cbor(&Value::Array(vec![
        Value::Integer(1.into()),
        Value::Bytes(hash.to_vec()),
    ]));
    cbor(&Value::Map(vec![(
        Value::Text("pubkey-hash".into()),
        Value::Bytes(entry),
    )]))
}

/// The report data of a quote for a DICE RA-TLS certificate with this key.
pub fn dice_report_data(spki_der: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&Sha256::digest(dice_claims(spki_der)));
    rd
}

/// The value (the extnValue's content) of a DICE tagged-evidence extension.
pub fn dice_extension_value(quote: &[u8], spki_der: &[u8]) -> Vec<u8> {
    cbor(&Value::Tag(
        DICE_SGX_TAG,
        Box::new(Value::Array(vec![
            Value::Bytes(quote.to_vec()),
            Value::Bytes(dice_claims(spki_der)),
        ])),
    ))
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

/// What DICE tagged evidence holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiceEvidence {
    /// The raw quote.
    pub quote: Vec<u8>,
    /// The `pubkey-hash` claim: SHA-256 of the key's DER SubjectPublicKeyInfo.
    pub key_hash: [u8; 32],
    /// SHA-256 of the serialised claims (what the quote's report data starts with).
    pub claims_hash: [u8; 32],
}

/// Parses the value of a DICE tagged-evidence extension (untrusted CBOR).
pub fn parse_dice_evidence(value: &[u8]) -> Result<DiceEvidence, Error> {
    let v: Value =
        ciborium::from_reader(value).map_err(|e| bad(format!("DICE evidence is not CBOR: {e}")))?;
    let Value::Tag(DICE_SGX_TAG, inner) = v else {
        return Err(bad(format!(
            "DICE evidence is not CBOR tag {DICE_SGX_TAG} (an SGX quote with claims)"
        )));
    };
    let Value::Array(items) = *inner else {
        return Err(bad("DICE evidence is not an array [quote, claims]"));
    };
    let [Value::Bytes(quote), Value::Bytes(claims)] = items.as_slice() else {
        return Err(bad(
            "DICE evidence is not [quote, claims] as two byte strings",
        ));
    };
    let map: Value = ciborium::from_reader(claims.as_slice())
        .map_err(|e| bad(format!("DICE claims are not CBOR: {e}")))?;
    let Value::Map(entries) = map else {
        return Err(bad("DICE claims are not a map"));
    };
    let entry = entries
        .iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == "pubkey-hash"))
        .map(|(_, v)| v)
        .ok_or_else(|| bad("DICE claims have no pubkey-hash"))?;
    let Value::Bytes(entry) = entry else {
        return Err(bad("DICE pubkey-hash is not a byte string"));
    };
    let hash: Value = ciborium::from_reader(entry.as_slice())
        .map_err(|e| bad(format!("DICE pubkey-hash is not CBOR: {e}")))?;
    let Value::Array(pair) = hash else {
        return Err(bad("DICE pubkey-hash is not [algorithm, hash]"));
    };
    match pair.as_slice() {
        [Value::Integer(alg), Value::Bytes(h)] if i128::from(*alg) == 1 && h.len() == 32 => {
            let mut key_hash = [0u8; 32];
            key_hash.copy_from_slice(h);
            Ok(DiceEvidence {
                quote: quote.clone(),
                key_hash,
                claims_hash: Sha256::digest(claims).into(),
            })
        }
        _ => Err(bad(
            "DICE pubkey-hash is not [1 (SHA-256), 32-byte hash]; other algorithms are not accepted",
        )),
    }
}

/// Strips one DER OCTET STRING header when `v` is exactly one, else returns `v`.
fn unwrap_octet_string(v: &[u8]) -> &[u8] {
    match x509_parser::der_parser::der::parse_der_octetstring(v) {
        Ok(([], o)) => o.as_slice().unwrap_or(v),
        _ => v,
    }
}

/// Reads the RA-TLS quote and the simulation marker of a DER certificate.
pub fn read(cert_der: &[u8]) -> Result<RaTls, Error> {
    let cert = parse(cert_der)?;
    let spki_sha256: [u8; 32] = Sha256::digest(cert.public_key().raw).into();
    let mut found = None;
    let mut simulation = false;
    for ext in cert.extensions() {
        let oid: Vec<u64> = ext.oid.iter().map(|i| i.collect()).unwrap_or_default();
        if ext.value.len() > MAX_EVIDENCE {
            return Err(bad(format!(
                "an extension of {} bytes is larger than RA-TLS evidence can be",
                ext.value.len()
            )));
        }
        if oid == DICE_EVIDENCE_OID {
            let DiceEvidence {
                quote,
                key_hash,
                claims_hash,
            } = parse_dice_evidence(ext.value)?;
            if key_hash != spki_sha256 {
                return Err(Error::mismatch(
                    "RA-TLS DICE claims",
                    "the pubkey-hash claim is not the certificate's key",
                ));
            }
            let mut rd = [0u8; 64];
            rd[..32].copy_from_slice(&claims_hash);
            found = Some((quote, RaTlsFormat::Dice, rd));
        } else if (oid == RATLS_QUOTE_OID || oid == GRAMINE_MALFORMED_QUOTE_OID)
            && found
                .as_ref()
                .is_none_or(|(_, f, _)| *f != RaTlsFormat::Dice)
        {
            let mut rd = [0u8; 64];
            rd[..32].copy_from_slice(&spki_sha256);
            found = Some((
                unwrap_octet_string(ext.value).to_vec(),
                RaTlsFormat::Legacy,
                rd,
            ));
        } else if oid == SIMULATION_MARKER_OID {
            simulation = true;
        }
    }
    let (quote, format, expected_report_data) =
        found.ok_or_else(|| bad("the certificate carries no RA-TLS quote"))?;
    Ok(RaTls {
        quote,
        simulation,
        spki_sha256,
        format,
        expected_report_data,
    })
}

/// Checks that `leaf_der` is the Coordinator's own TLS certificate under `root_der`: signed by
/// the root's key directly (workload certificates are signed by the intermediate) and carrying
/// an RA-TLS quote whose report data binds the leaf's own key (the webhook's certificate,
/// also root-signed, carries none). Only the Coordinator issues such a certificate, and only
/// for itself. The quote's signature is not checked here (that needs collateral: callers that
/// have it verify the returned quote).
pub fn check_coordinator_leaf(leaf_der: &[u8], root_der: &[u8]) -> Result<RaTls, Error> {
    let leaf = parse(leaf_der)?;
    let root = parse(root_der)?;
    // The Coordinator's CA keys are ECDSA P-256 (ecdsa-with-SHA256 signatures).
    let root_key = root.public_key().subject_public_key.data.as_ref();
    if !crate::pki::verify_der(
        root_key,
        leaf.tbs_certificate.as_ref(),
        &leaf.signature_value.data,
    ) {
        return Err(Error::BadSignature {
            item: Item::RaTlsCertificate,
        });
    }
    let ratls = read(leaf_der)?;
    let quote = crate::Quote::parse(&ratls.quote)?;
    if quote.report_data()[..] != ratls.expected_report_data[..] {
        return Err(Error::mismatch(
            "RA-TLS report data",
            "the certificate's quote does not bind the certificate's own key",
        ));
    }
    Ok(ratls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, CustomExtension, KeyPair, PublicKeyData};

    /// A self-signed certificate for `key` with one extension.
    fn cert(key: &KeyPair, oid: &[u64], value: Vec<u8>) -> Vec<u8> {
        let mut p = CertificateParams::new(vec!["x".to_string()]).unwrap();
        p.custom_extensions
            .push(CustomExtension::from_oid_content(oid, value));
        p.self_signed(key).unwrap().der().to_vec()
    }

    fn octet_string(data: &[u8]) -> Vec<u8> {
        let mut v = vec![0x04, 0x82];
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn dice_evidence_binds_the_key_through_its_claims() {
        let key = KeyPair::generate().unwrap();
        let spki = key.subject_public_key_info();
        let der = cert(
            &key,
            DICE_EVIDENCE_OID,
            dice_extension_value(b"QUOTE", &spki),
        );
        let r = read(&der).unwrap();
        assert_eq!(r.format, RaTlsFormat::Dice);
        assert_eq!(r.quote, b"QUOTE");
        assert_eq!(r.expected_report_data, dice_report_data(&spki));
        // The layout Gramine writes: tag 60000, [bstr quote, bstr claims]; 51-byte claims.
        let v = dice_extension_value(b"QUOTE", &spki);
        assert_eq!(&v[..5], &[0xd9, 0xea, 0x60, 0x82, 0x45]);
        let claims = dice_claims(&spki);
        assert_eq!(claims.len(), 51);
        assert_eq!(&claims[..13], b"\xa1\x6bpubkey-hash");
        assert_eq!(&claims[13..19], &[0x58, 0x24, 0x82, 0x01, 0x58, 0x20]);
        assert_eq!(&claims[19..], &Sha256::digest(&spki)[..]);

        // Claims that name another key are refused.
        let other = KeyPair::generate().unwrap();
        let der = cert(
            &key,
            DICE_EVIDENCE_OID,
            dice_extension_value(b"QUOTE", &other.subject_public_key_info()),
        );
        let e = read(&der).unwrap_err();
        assert!(e.to_string().contains("pubkey-hash"), "{e}");
    }

    #[test]
    fn malformed_dice_evidence_is_refused_with_the_reason() {
        let key = KeyPair::generate().unwrap();
        let spki = key.subject_public_key_info();
        let claims = dice_claims(&spki);
        let cases: Vec<(Value, &str)> = vec![
            (Value::Tag(1, Box::new(Value::Array(vec![]))), "tag 60000"),
            (
                Value::Tag(DICE_SGX_TAG, Box::new(Value::Bytes(vec![]))),
                "array",
            ),
            (
                Value::Tag(
                    DICE_SGX_TAG,
                    Box::new(Value::Array(vec![Value::Bytes(b"Q".to_vec())])),
                ),
                "two byte strings",
            ),
            (
                Value::Tag(
                    DICE_SGX_TAG,
                    Box::new(Value::Array(vec![
                        Value::Bytes(b"Q".to_vec()),
                        Value::Bytes(cbor(&Value::Map(vec![]))),
                    ])),
                ),
                "no pubkey-hash",
            ),
            (
                Value::Tag(
                    DICE_SGX_TAG,
                    Box::new(Value::Array(vec![
                        Value::Bytes(b"Q".to_vec()),
                        Value::Bytes(cbor(&Value::Map(vec![(
                            Value::Text("pubkey-hash".into()),
                            Value::Bytes(cbor(&Value::Array(vec![
                                Value::Integer(7.into()),
                                Value::Bytes(Sha256::digest(&spki).to_vec()),
                            ]))),
                        )]))),
                    ])),
                ),
                "SHA-256",
            ),
        ];
        for (v, needle) in cases {
            let der = cert(&key, DICE_EVIDENCE_OID, cbor(&v));
            let e = read(&der).unwrap_err();
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
        let der = cert(&key, DICE_EVIDENCE_OID, claims[..10].to_vec());
        assert!(read(&der).is_err());
    }

    #[test]
    fn gramines_legacy_extension_is_read_in_both_oid_encodings_and_wrappings() {
        let key = KeyPair::generate().unwrap();
        let spki = key.subject_public_key_info();
        // Gramine writes the raw quote as the extension value, under its malformed OID (the
        // DER OID header repeated in the content), which rcgen writes for these arcs.
        for (oid, value) in [
            (GRAMINE_MALFORMED_QUOTE_OID, b"QUOTE".to_vec()),
            (RATLS_QUOTE_OID, b"QUOTE".to_vec()),
            (RATLS_QUOTE_OID, octet_string(b"QUOTE")),
        ] {
            let der = cert(&key, oid, value);
            if oid == GRAMINE_MALFORMED_QUOTE_OID {
                let needle = [
                    0x06, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x8a, 0x39, 0x06,
                ];
                assert!(der.windows(needle.len()).any(|w| w == needle));
            }
            let r = read(&der).unwrap();
            assert_eq!(r.format, RaTlsFormat::Legacy);
            assert_eq!(r.quote, b"QUOTE");
            assert_eq!(&r.expected_report_data[..32], &Sha256::digest(&spki)[..]);
            assert_eq!(&r.expected_report_data[32..], &[0u8; 32]);
        }
        let der = cert(&key, &[1, 2, 3, 4], b"QUOTE".to_vec());
        assert!(read(&der)
            .unwrap_err()
            .to_string()
            .contains("no RA-TLS quote"));
    }
}
