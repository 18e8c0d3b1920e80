//! RA-TLS certificates: a TLS certificate that carries a quote over its own key.
//!
//! The Coordinator's TLS server certificate carries, in Gramine's RA-TLS extension
//! ([`RATLS_QUOTE_OID`], written with the standard OID encoding), a DCAP quote whose report data
//! bytes 0..32 are SHA-256 of the certificate's DER SubjectPublicKeyInfo (bytes 32..64 zero),
//! and, on the simulated platform, a marker extension ([`SIMULATION_MARKER_OID`]).
//!
//! [`check_coordinator_leaf`] tells a Coordinator's own certificate from any other certificate
//! under the same root, which clients holding only the root need: the Coordinator's root CA
//! also signs the admission webhook's certificate, and its intermediate signs every workload's,
//! so "chains to the root and carries the name" is not enough.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Item};

/// Gramine's RA-TLS quote extension, `1.2.840.113741.1337.6`.
pub const RATLS_QUOTE_OID: &[u64] = &[1, 2, 840, 113741, 1337, 6];

/// Coffer's simulation marker extension, under the RA-TLS arc: present (value `SIMULATION`)
/// when the quote is simulated, so simulation is visible in the certificate itself.
pub const SIMULATION_MARKER_OID: &[u64] = &[1, 2, 840, 113741, 1337, 6, 99];

/// The RA-TLS content of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaTls {
    /// The raw quote.
    pub quote: Vec<u8>,
    /// Whether the simulation marker is present.
    pub simulation: bool,
    /// SHA-256 of the certificate's DER SubjectPublicKeyInfo: what the quote's report data
    /// must start with.
    pub spki_sha256: [u8; 32],
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

/// Reads the RA-TLS quote and the simulation marker of a DER certificate.
pub fn read(cert_der: &[u8]) -> Result<RaTls, Error> {
    let cert = parse(cert_der)?;
    let mut quote = None;
    let mut simulation = false;
    for ext in cert.extensions() {
        let oid: Vec<u64> = ext.oid.iter().map(|i| i.collect()).unwrap_or_default();
        if oid == RATLS_QUOTE_OID {
            let (_, v) = x509_parser::der_parser::der::parse_der_octetstring(ext.value)
                .map_err(|e| bad(format!("RA-TLS extension is not an OCTET STRING: {e}")))?;
            quote = v.as_slice().ok().map(<[u8]>::to_vec);
        } else if oid == SIMULATION_MARKER_OID {
            simulation = true;
        }
    }
    Ok(RaTls {
        quote: quote.ok_or_else(|| bad("the certificate carries no RA-TLS quote"))?,
        simulation,
        spki_sha256: Sha256::digest(cert.public_key().raw).into(),
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
    let rd = quote.report_data();
    if rd[..32] != ratls.spki_sha256 || rd[32..] != [0u8; 32] {
        return Err(Error::mismatch(
            "RA-TLS report data",
            "the certificate's quote does not bind the certificate's own key",
        ));
    }
    Ok(ratls)
}
