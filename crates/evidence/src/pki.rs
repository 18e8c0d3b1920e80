//! Certificates, CRLs and the PCK SGX extension; trust anchors pinned by public key.
//!
//! Only ECDSA P-256 with SHA-256 is accepted anywhere in the Intel SGX PKI, so every certificate
//! and CRL here must use it; signatures are checked with `ring`.

use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_CRL_NUMBER,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::error::{Error, Item};
use crate::reader::Reader;

/// DER of Intel's production "Intel SGX Root CA" (SHA-256 fingerprint
/// 44:A0:19:6B:2B:99:F8:89:B8:E1:49:E9:5B:80:7A:35:0E:74:24:96:43:99:E8:85:A7:CB:B8:CC:FA:B6:74:D3).
const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");

/// The pinned public key of Intel's SGX Root CA (uncompressed SEC1 point). A chain is trusted
/// because its root carries this key and signs itself with it, not because it is self-signed.
const INTEL_SGX_ROOT_CA_KEY: [u8; 65] = [
    0x04, 0x0b, 0xa9, 0xc4, 0xc0, 0xc0, 0xc8, 0x61, 0x93, 0xa3, 0xfe, 0x23, 0xd6, 0xb0, 0x2c, 0xda,
    0x10, 0xa8, 0xbb, 0xd4, 0xe8, 0x8e, 0x48, 0xb4, 0x45, 0x85, 0x61, 0xa3, 0x6e, 0x70, 0x55, 0x25,
    0xf5, 0x67, 0x91, 0x8e, 0x2e, 0xdc, 0x88, 0xe4, 0x0d, 0x86, 0x0b, 0xd0, 0xcc, 0x4e, 0xe2, 0x6a,
    0xac, 0xc9, 0x88, 0xe5, 0x05, 0xa9, 0x53, 0x55, 0x8c, 0x45, 0x3f, 0x6b, 0x09, 0x04, 0xae, 0x73,
    0x94,
];

/// OID 1.2.840.113741.1.13.1 (Intel SGX extensions), DER content bytes.
const SGX_EXT_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];

/// Which PCK CA issued a PCK certificate (selects `pckcrl?ca=processor|platform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PckCa {
    /// "Intel SGX PCK Processor CA" (single-socket platforms).
    Processor,
    /// "Intel SGX PCK Platform CA" (multi-package platforms).
    Platform,
}

impl PckCa {
    /// The PCS query value: "processor" or "platform".
    pub fn as_str(self) -> &'static str {
        match self {
            PckCa::Processor => "processor",
            PckCa::Platform => "platform",
        }
    }
}

impl std::fmt::Display for PckCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pinned root public keys that end every chain (PCK, CRL issuer, TCB signing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchors {
    anchors: Vec<Anchor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Anchor {
    key: Vec<u8>,
    /// The anchor certificate itself, when known: a chain root with exactly these bytes needs
    /// no self-signature check.
    cert_der: Option<Vec<u8>>,
    /// That certificate, parsed once (chains repeat the root; it is not parsed again).
    cert: Option<Cert>,
}

impl TrustAnchors {
    /// Intel's production SGX Root CA (embedded; pinned by key).
    pub fn intel() -> TrustAnchors {
        TrustAnchors {
            anchors: vec![Anchor {
                key: INTEL_SGX_ROOT_CA_KEY.to_vec(),
                cert_der: Some(INTEL_SGX_ROOT_CA_DER.to_vec()),
                cert: Cert::parse(INTEL_SGX_ROOT_CA_DER, Item::TrustAnchors).ok(),
            }],
        }
    }

    /// Pins the public keys of the certificates in `pem` (one or more `CERTIFICATE` blocks),
    /// e.g. a test root or a simulated platform's root.
    pub fn from_pem(pem: &str) -> Result<TrustAnchors, Error> {
        let mut anchors = Vec::new();
        for der in parse_pem_chain(pem, Item::TrustAnchors)? {
            let c = Cert::parse(&der, Item::TrustAnchors)?;
            anchors.push(Anchor {
                key: c.key.clone(),
                cert_der: Some(der),
                cert: Some(c),
            });
        }
        Ok(TrustAnchors { anchors })
    }

    /// Pins one raw public key (uncompressed SEC1 P-256 point, 65 bytes).
    pub fn from_public_key(sec1: &[u8]) -> Result<TrustAnchors, Error> {
        if sec1.len() != 65 || sec1.first() != Some(&0x04) {
            return Err(Error::malformed(
                Item::TrustAnchors,
                "expected an uncompressed P-256 point (65 bytes starting with 0x04)",
            ));
        }
        Ok(TrustAnchors {
            anchors: vec![Anchor {
                key: sec1.to_vec(),
                cert_der: None,
                cert: None,
            }],
        })
    }

    /// Pins `key`, with its certificate when known (used by the simulated platform).
    pub(crate) fn pinned(key: Vec<u8>, cert_der: Vec<u8>) -> TrustAnchors {
        let cert = Cert::parse(&cert_der, Item::TrustAnchors).ok();
        TrustAnchors {
            anchors: vec![Anchor {
                key,
                cert_der: Some(cert_der),
                cert,
            }],
        }
    }

    /// True when Intel's production root is among the anchors.
    pub fn includes_intel(&self) -> bool {
        self.anchors.iter().any(|a| a.key == INTEL_SGX_ROOT_CA_KEY)
    }

    /// SHA-256 of each pinned public key (SEC1 point), for display and logs.
    pub fn key_fingerprints(&self) -> Vec<[u8; 32]> {
        self.anchors.iter().map(|a| sha256(&a.key)).collect()
    }

    /// The parsed anchor certificate whose DER is exactly `der`, if any.
    fn known_cert(&self, der: &[u8]) -> Option<&Cert> {
        self.anchors
            .iter()
            .find(|a| a.cert_der.as_deref() == Some(der))
            .and_then(|a| a.cert.as_ref())
    }

    /// Accepts `root` if it carries a pinned key and is either the anchor certificate itself or
    /// correctly self-signed with that key.
    pub(crate) fn check_root(&self, root: &Cert, item: Item) -> Result<(), Error> {
        let Some(anchor) = self.anchors.iter().find(|a| a.key == root.key) else {
            return Err(Error::UntrustedRoot {
                item,
                detail: format!(
                    "root {:?} has key sha256:{}, which is not pinned",
                    root.subject_cn,
                    hex::encode(sha256(&root.key))
                ),
            });
        };
        if anchor.cert_der.as_deref() == Some(&root.der[..]) {
            return Ok(());
        }
        if !verify_der(&root.key, &root.tbs, &root.sig) {
            return Err(Error::BadSignature {
                item: Item::RootCaCertificate,
            });
        }
        if root.issuer != root.subject {
            return Err(Error::mismatch(
                "root CA certificate",
                "root is not self-issued",
            ));
        }
        Ok(())
    }
}

pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

/// Verifies a DER-encoded ECDSA P-256/SHA-256 signature (X.509, CRL).
pub(crate) fn verify_der(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
        .verify(msg, sig)
        .is_ok()
}

/// Verifies a raw r ‖ s ECDSA P-256/SHA-256 signature (quote, QE report, TCB info).
pub(crate) fn verify_raw(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(msg, sig)
        .is_ok()
}

/// DER of AlgorithmIdentifier { ecdsa-with-SHA256 } (no parameters).
const ECDSA_SHA256_ALG: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

fn der_tlv_bytes(tag: u8, content: &[&[u8]]) -> Vec<u8> {
    let n: usize = content.iter().map(|c| c.len()).sum();
    let mut v = Vec::with_capacity(n + 6);
    v.push(tag);
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend_from_slice(&[0x81, n as u8]);
    } else if n < 0x10000 {
        v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    } else {
        v.extend_from_slice(&[0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    for c in content {
        v.extend_from_slice(c);
    }
    v
}

/// The only encoding of `SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING sig }`. The outer
/// algorithm and signature wrapper are not covered by the signature, so anything but this
/// exact encoding is refused (no malleable bytes in accepted certificates or CRLs).
fn is_canonical_signed(der: &[u8], tbs: &[u8], sig: &[u8]) -> bool {
    let bits = der_tlv_bytes(0x03, &[&[0], sig]);
    der_tlv_bytes(0x30, &[tbs, ECDSA_SHA256_ALG, &bits]) == der
}

/// Parses PEM text with one or more `CERTIFICATE` blocks, strictly: only blocks and blank
/// lines, standard base64 with padding. At most 8 certificates.
pub(crate) fn parse_pem_chain(text: &str, item: Item) -> Result<Vec<Vec<u8>>, Error> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = text.strip_suffix('\0').unwrap_or(text);
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match &mut body {
            None if line.trim().is_empty() => {}
            None if line == BEGIN => body = Some(String::with_capacity(1024)),
            None => {
                return Err(Error::malformed(
                    item,
                    format!("PEM line {}: expected {BEGIN}", n + 1),
                ))
            }
            Some(b) if line == END => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| Error::malformed(item, format!("PEM base64: {e}")))?;
                out.push(der);
                body = None;
                if out.len() > 8 {
                    return Err(Error::malformed(item, "more than 8 certificates"));
                }
            }
            Some(b) => {
                if b.len() + line.len() > 64 * 1024 {
                    return Err(Error::malformed(item, "PEM block larger than 64 KiB"));
                }
                b.push_str(line)
            }
        }
    }
    if body.is_some() {
        return Err(Error::malformed(item, format!("PEM: missing {END}")));
    }
    if out.is_empty() {
        return Err(Error::malformed(item, "no certificate in PEM text"));
    }
    Ok(out)
}

/// A certificate reduced to what verification needs (owned; parsed once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cert {
    pub(crate) der: Vec<u8>,
    pub(crate) tbs: Vec<u8>,
    pub(crate) sig: Vec<u8>,
    pub(crate) subject: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    pub(crate) subject_cn: String,
    pub(crate) issuer_cn: String,
    pub(crate) key: Vec<u8>,
    pub(crate) serial: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) is_ca: bool,
    pub(crate) sgx_ext: Option<Vec<u8>>,
}

fn strip_serial(s: &[u8]) -> Vec<u8> {
    let i = s
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(s.len().saturating_sub(1));
    s.get(i..).unwrap_or_default().to_vec()
}

impl Cert {
    pub(crate) fn parse(der: &[u8], item: Item) -> Result<Cert, Error> {
        let (rest, x) = X509Certificate::from_der(der)
            .map_err(|e| Error::malformed(item, format!("certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::malformed(
                item,
                "trailing bytes after the certificate",
            ));
        }
        if x.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256
            || x.tbs_certificate.signature.algorithm != OID_SIG_ECDSA_WITH_SHA256
        {
            return Err(Error::unsupported(
                item,
                format!(
                    "signature algorithm {} (only ecdsa-with-SHA256)",
                    x.signature_algorithm.algorithm
                ),
            ));
        }
        if x.signature_value.unused_bits != 0
            || !is_canonical_signed(der, x.tbs_certificate.as_ref(), &x.signature_value.data)
        {
            return Err(Error::malformed(
                item,
                "certificate is not the canonical DER of tbs, ecdsa-with-SHA256, signature",
            ));
        }
        let spki = x.public_key();
        let curve_ok = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|o| o == OID_EC_P256);
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || !curve_ok {
            return Err(Error::unsupported(item, "public key is not ECDSA P-256"));
        }
        let key = spki.subject_public_key.data.to_vec();
        if key.len() != 65 || key[0] != 0x04 {
            return Err(Error::malformed(
                item,
                "public key is not an uncompressed P-256 point",
            ));
        }
        let cn = |n: &x509_parser::x509::X509Name<'_>| {
            n.iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let is_ca = x
            .basic_constraints()
            .map_err(|e| Error::malformed(item, format!("basic constraints: {e}")))?
            .is_some_and(|b| b.value.ca);
        let mut sgx_ext = None;
        for e in x.extensions() {
            if e.oid.as_bytes() == SGX_EXT_OID {
                if sgx_ext.is_some() {
                    return Err(Error::malformed(item, "duplicate SGX extension"));
                }
                sgx_ext = Some(e.value.to_vec());
            }
        }
        Ok(Cert {
            der: der.to_vec(),
            tbs: x.tbs_certificate.as_ref().to_vec(),
            sig: x.signature_value.data.to_vec(),
            subject: x.subject().as_raw().to_vec(),
            issuer: x.issuer().as_raw().to_vec(),
            subject_cn: cn(x.subject()),
            issuer_cn: cn(x.issuer()),
            key,
            serial: strip_serial(x.raw_serial()),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            is_ca,
            sgx_ext,
        })
    }
}

/// The expected role of each certificate in a chain, leaf first.
#[derive(Clone, Copy)]
pub(crate) struct Role {
    pub(crate) item: Item,
    /// A phrase the subject CN must contain (Intel QVL's CN checks).
    pub(crate) cn_phrase: &'static str,
    /// Whether the certificate must be a CA (else it must be an end entity).
    pub(crate) ca: bool,
}

/// A validity window to check at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) item: Item,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// CRLs: nextUpdate is exclusive.
    pub(crate) end_exclusive: bool,
}

impl Window {
    pub(crate) fn check(&self, now: i64) -> Result<(), Error> {
        let after_end = if self.end_exclusive {
            now >= self.not_after
        } else {
            now > self.not_after
        };
        if now < self.not_before || after_end {
            return Err(Error::Expired {
                item: self.item,
                now,
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

/// Parses a PEM chain and verifies it: root pinned, each signature by the next certificate's
/// key, issuer names linked, CA flags, CN phrases. Root-first listings are accepted (Intel's
/// sample data has them) and turned leaf-first. Time and revocation are checked by the caller.
///
/// `known` is a certificate whose signature by the given key was already verified in this
/// verification (the PCK CA appears in the quote's chain and in the PCK CRL issuer chain); it
/// is not verified twice.
pub(crate) fn verify_chain(
    pem: &str,
    roles: &[Role],
    anchors: &TrustAnchors,
    known: Option<(&Cert, &[u8])>,
) -> Result<Vec<Cert>, Error> {
    let first = roles.first().map(|r| r.item).unwrap_or(Item::Quote);
    let ders = parse_pem_chain(pem, first)?;
    if ders.len() != roles.len() {
        return Err(Error::malformed(
            first,
            format!(
                "chain has {} certificates, expected {}",
                ders.len(),
                roles.len()
            ),
        ));
    }
    let mut certs = Vec::with_capacity(ders.len());
    for d in &ders {
        // Certificates already parsed from the same bytes (the anchor, the known PCK CA) are
        // not parsed again.
        let parsed = anchors
            .known_cert(d)
            .or_else(|| known.map(|(k, _)| k).filter(|k| k.der == *d));
        match parsed {
            Some(c) => certs.push(c.clone()),
            None => certs.push(Cert::parse(d, first)?),
        }
    }
    let certs = order_chain(certs);
    let n = certs.len();
    anchors.check_root(&certs[n - 1], first)?;
    for i in (0..n.saturating_sub(1)).rev() {
        let (child, parent) = (&certs[i], &certs[i + 1]);
        let already = known.is_some_and(|(k, key)| k.der == child.der && key == &parent.key[..]);
        if !already && !verify_der(&parent.key, &child.tbs, &child.sig) {
            return Err(Error::BadSignature {
                item: roles[i].item,
            });
        }
        if child.issuer != parent.subject {
            return Err(Error::mismatch(
                "certificate issuer",
                format!(
                    "{} names issuer {:?} but is followed by {:?}",
                    roles[i].item, child.issuer_cn, parent.subject_cn
                ),
            ));
        }
    }
    for (c, r) in certs.iter().zip(roles) {
        if c.is_ca != r.ca {
            return Err(Error::mismatch(
                "certificate authority",
                if r.ca {
                    format!("{} {:?} is not a CA", r.item, c.subject_cn)
                } else {
                    format!(
                        "{} {:?} is a CA certificate used as an end entity",
                        r.item, c.subject_cn
                    )
                },
            ));
        }
    }
    for (c, r) in certs.iter().zip(roles) {
        if !c.subject_cn.contains(r.cn_phrase) {
            return Err(Error::mismatch(
                "certificate subject",
                format!(
                    "{} subject CN {:?} does not contain {:?}",
                    r.item, c.subject_cn, r.cn_phrase
                ),
            ));
        }
    }
    Ok(certs)
}

/// Orders certificates leaf first by following issuer names (Intel's sample data lists some
/// chains root first, or leaf ‖ root ‖ CA). When no complete order exists the input order is
/// kept, and the signature/issuer checks refuse it.
fn order_chain(certs: Vec<Cert>) -> Vec<Cert> {
    let n = certs.len();
    let issued_other = |i: usize| {
        (0..n).any(|j| {
            j != i && certs[j].issuer == certs[i].subject && certs[j].issuer != certs[j].subject
        })
    };
    let Some(leaf) = (0..n).find(|&i| !issued_other(i)) else {
        return certs;
    };
    let mut order = vec![leaf];
    while order.len() < n {
        let cur = &certs[order[order.len() - 1]];
        match (0..n).find(|j| !order.contains(j) && certs[*j].subject == cur.issuer) {
            Some(j) => order.push(j),
            None => return certs,
        }
    }
    if order.iter().copied().eq(0..n) {
        return certs;
    }
    let mut slots: Vec<Option<Cert>> = certs.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

pub(crate) fn windows_of(certs: &[Cert], roles: &[Role]) -> Vec<Window> {
    certs
        .iter()
        .zip(roles)
        .map(|(c, r)| Window {
            item: r.item,
            not_before: c.not_before,
            not_after: c.not_after,
            end_exclusive: false,
        })
        .collect()
}

/// A CRL reduced to what verification needs; revoked serials sorted for lookup.
#[derive(Debug, Clone)]
pub(crate) struct Crl {
    pub(crate) window: Window,
    revoked: Vec<Vec<u8>>,
}

impl Crl {
    /// Parses the CRL and verifies its signature by `issuer` (which must be its named issuer).
    pub(crate) fn parse_verified(der: &[u8], item: Item, issuer: &Cert) -> Result<Crl, Error> {
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| Error::malformed(item, format!("CRL: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::malformed(item, "trailing bytes after the CRL"));
        }
        if crl.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256
            || crl.tbs_cert_list.signature.algorithm != OID_SIG_ECDSA_WITH_SHA256
        {
            return Err(Error::unsupported(
                item,
                "CRL signature algorithm is not ecdsa-with-SHA256",
            ));
        }
        if crl.signature_value.unused_bits != 0
            || !is_canonical_signed(der, crl.tbs_cert_list.as_ref(), &crl.signature_value.data)
        {
            return Err(Error::malformed(
                item,
                "CRL is not the canonical DER of tbs, ecdsa-with-SHA256, signature",
            ));
        }
        if !verify_der(
            &issuer.key,
            crl.tbs_cert_list.as_ref(),
            &crl.signature_value.data,
        ) {
            return Err(Error::BadSignature { item });
        }
        if crl.issuer().as_raw() != &issuer.subject[..] {
            return Err(Error::mismatch(
                "CRL issuer",
                format!("{item} is not issued by {:?}", issuer.subject_cn),
            ));
        }
        let next = crl
            .next_update()
            .ok_or_else(|| Error::malformed(item, "CRL without nextUpdate"))?;
        // Intel's QVL (PckCrlVerifier, CRL_REQUIRED_EXTENSIONS) refuses a CRL that lacks
        // either extension RFC 5280 makes mandatory; so do we.
        for (oid, name) in [
            (&OID_X509_EXT_CRL_NUMBER, "CRL Number"),
            (
                &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
                "Authority Key Identifier",
            ),
        ] {
            if !crl.extensions().iter().any(|e| e.oid == *oid) {
                return Err(Error::malformed(
                    item,
                    format!(
                        "CRL without the {name} extension (RFC 5280 5.2, required by Intel's QVL)"
                    ),
                ));
            }
        }
        let mut revoked: Vec<Vec<u8>> = crl
            .iter_revoked_certificates()
            .map(|r| strip_serial(r.raw_serial()))
            .collect();
        revoked.sort();
        Ok(Crl {
            window: Window {
                item,
                not_before: crl.last_update().timestamp(),
                not_after: next.timestamp(),
                end_exclusive: true,
            },
            revoked,
        })
    }

    pub(crate) fn check(&self, cert: &Cert, item: Item) -> Result<(), Error> {
        if self.revoked.binary_search(&cert.serial).is_ok() {
            return Err(Error::Revoked {
                item,
                serial: hex::encode(&cert.serial),
                by: self.window.item,
            });
        }
        Ok(())
    }
}

/// The values of the PCK certificate's SGX extension that verification uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SgxExtension {
    pub(crate) cpu_svn: [u8; 16],
    pub(crate) comp_svn: [u8; 16],
    pub(crate) pce_svn: u16,
    pub(crate) pce_id: [u8; 2],
    pub(crate) fmspc: [u8; 6],
}

pub(crate) fn sgx_extension_of(der: &[u8]) -> Result<SgxExtension, Error> {
    let c = Cert::parse(der, Item::PckCertificate)?;
    parse_sgx_extension(c.sgx_ext.as_deref())
}

pub(crate) fn pck_ca_of_leaf(der: &[u8]) -> Result<PckCa, Error> {
    let c = Cert::parse(der, Item::PckCertificate)?;
    if c.issuer_cn.contains("Processor") {
        Ok(PckCa::Processor)
    } else if c.issuer_cn.contains("Platform") {
        Ok(PckCa::Platform)
    } else {
        Err(Error::unsupported(
            Item::PckCertificate,
            format!(
                "issuer {:?} is neither a Processor nor a Platform CA",
                c.issuer_cn
            ),
        ))
    }
}

fn der_tlv<'a>(r: &mut Reader<'a>) -> Result<(u8, &'a [u8]), Error> {
    let tag = r.u8("DER tag")?;
    if tag & 0x1f == 0x1f {
        return Err(Error::malformed(
            Item::PckCertificate,
            "SGX extension: multi-byte DER tag",
        ));
    }
    let first = r.u8("DER length")?;
    let len = match first {
        0..=0x7f => first as usize,
        0x81 => {
            let l = r.u8("DER length")? as usize;
            if l < 0x80 {
                return Err(Error::malformed(
                    Item::PckCertificate,
                    "SGX extension: non-minimal length",
                ));
            }
            l
        }
        0x82 => {
            let l = u16::from_be_bytes(r.array("DER length")?) as usize;
            if l < 0x100 {
                return Err(Error::malformed(
                    Item::PckCertificate,
                    "SGX extension: non-minimal length",
                ));
            }
            l
        }
        _ => {
            return Err(Error::malformed(
                Item::PckCertificate,
                "SGX extension: bad DER length",
            ))
        }
    };
    Ok((tag, r.take(len, "DER value")?))
}

fn expect<'a>(r: &mut Reader<'a>, tag: u8, what: &str) -> Result<&'a [u8], Error> {
    let (t, v) = der_tlv(r)?;
    if t != tag {
        return Err(Error::malformed(
            Item::PckCertificate,
            format!("SGX extension {what}: tag 0x{t:02x}, expected 0x{tag:02x}"),
        ));
    }
    Ok(v)
}

fn der_uint(v: &[u8], max: u32, what: &str) -> Result<u32, Error> {
    let bad = || {
        Error::malformed(
            Item::PckCertificate,
            format!("SGX extension {what}: bad INTEGER"),
        )
    };
    match v {
        [] => Err(bad()),
        [b, ..] if b & 0x80 != 0 => Err(bad()),
        [0, b, ..] if b & 0x80 == 0 => Err(bad()),
        _ if v.len() > 5 => Err(bad()),
        _ => {
            let n = v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
            u32::try_from(n).ok().filter(|n| *n <= max).ok_or_else(bad)
        }
    }
}

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], Error> {
    v.try_into().map_err(|_| {
        Error::malformed(
            Item::PckCertificate,
            format!("SGX extension {what}: {} bytes, expected {N}", v.len()),
        )
    })
}

/// Parses the SGX extension (OID 1.2.840.113741.1.13.1): TCB (16 component SVNs, PCESVN,
/// CPUSVN), PCE-ID and FMSPC are required; duplicates are refused; unknown members ignored.
pub(crate) fn parse_sgx_extension(ext: Option<&[u8]>) -> Result<SgxExtension, Error> {
    let it = Item::PckCertificate;
    let ext =
        ext.ok_or_else(|| Error::malformed(it, "no SGX extension (1.2.840.113741.1.13.1)"))?;
    let mut outer = Reader::new(ext, it);
    let seq = expect(&mut outer, 0x30, "outer SEQUENCE")?;
    outer.finish("the SGX extension")?;
    let mut r = Reader::new(seq, it);
    let (mut tcb, mut pce_id, mut fmspc) = (None, None, None);
    let dup = |what: &str| Error::malformed(it, format!("SGX extension: duplicate {what}"));
    while r.remaining() > 0 {
        let member = expect(&mut r, 0x30, "member")?;
        let mut m = Reader::new(member, it);
        let oid = expect(&mut m, 0x06, "member OID")?;
        let Some(suffix) = oid.strip_prefix(SGX_EXT_OID) else {
            return Err(Error::malformed(
                it,
                "SGX extension: member OID outside 1.2.840.113741.1.13.1",
            ));
        };
        match suffix {
            [2] => {
                let body = expect(&mut m, 0x30, "TCB")?;
                if tcb.is_some() {
                    return Err(dup("TCB"));
                }
                tcb = Some(parse_tcb(body)?);
            }
            [3] => {
                let v = expect(&mut m, 0x04, "PCE-ID")?;
                if pce_id.replace(fixed::<2>(v, "PCE-ID")?).is_some() {
                    return Err(dup("PCE-ID"));
                }
            }
            [4] => {
                let v = expect(&mut m, 0x04, "FMSPC")?;
                if fmspc.replace(fixed::<6>(v, "FMSPC")?).is_some() {
                    return Err(dup("FMSPC"));
                }
            }
            _ => {
                // PPID, SGX type, platform instance ID, configuration …: not used here.
                der_tlv(&mut m)?;
            }
        }
        m.finish("an SGX extension member")?;
    }
    let (comp_svn, pce_svn, cpu_svn) =
        tcb.ok_or_else(|| Error::malformed(it, "SGX extension: no TCB"))?;
    Ok(SgxExtension {
        cpu_svn,
        comp_svn,
        pce_svn,
        pce_id: pce_id.ok_or_else(|| Error::malformed(it, "SGX extension: no PCE-ID"))?,
        fmspc: fmspc.ok_or_else(|| Error::malformed(it, "SGX extension: no FMSPC"))?,
    })
}

fn parse_tcb(body: &[u8]) -> Result<([u8; 16], u16, [u8; 16]), Error> {
    let it = Item::PckCertificate;
    let mut r = Reader::new(body, it);
    let mut comps = [None::<u8>; 16];
    let (mut pce, mut cpu) = (None, None);
    while r.remaining() > 0 {
        let member = expect(&mut r, 0x30, "TCB member")?;
        let mut m = Reader::new(member, it);
        let oid = expect(&mut m, 0x06, "TCB member OID")?;
        let n = match oid.strip_prefix(SGX_EXT_OID) {
            Some([2, n]) => *n,
            _ => {
                return Err(Error::malformed(
                    it,
                    "SGX extension: unexpected TCB member OID",
                ))
            }
        };
        match n {
            1..=16 => {
                let v = der_uint(expect(&mut m, 0x02, "TCB component")?, 255, "TCB component")?;
                let slot = &mut comps[usize::from(n - 1)];
                if slot.replace(v as u8).is_some() {
                    return Err(Error::malformed(
                        it,
                        format!("SGX extension: duplicate component {n}"),
                    ));
                }
            }
            17 => {
                let v = der_uint(expect(&mut m, 0x02, "PCESVN")?, 0xffff, "PCESVN")?;
                if pce.replace(v as u16).is_some() {
                    return Err(Error::malformed(it, "SGX extension: duplicate PCESVN"));
                }
            }
            18 => {
                let v = fixed::<16>(expect(&mut m, 0x04, "CPUSVN")?, "CPUSVN")?;
                if cpu.replace(v).is_some() {
                    return Err(Error::malformed(it, "SGX extension: duplicate CPUSVN"));
                }
            }
            _ => {
                return Err(Error::malformed(
                    it,
                    format!("SGX extension: unknown TCB member {n}"),
                ))
            }
        }
        m.finish("a TCB member")?;
    }
    let mut out = [0u8; 16];
    for (i, (o, c)) in out.iter_mut().zip(comps).enumerate() {
        *o = c.ok_or_else(|| {
            Error::malformed(it, format!("SGX extension: no TCB component {}", i + 1))
        })?;
    }
    Ok((
        out,
        pce.ok_or_else(|| Error::malformed(it, "SGX extension: no PCESVN"))?,
        cpu.ok_or_else(|| Error::malformed(it, "SGX extension: no CPUSVN"))?,
    ))
}
