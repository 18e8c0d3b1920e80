//! The Coordinator's PKI: root CA → intermediate CA → workload certificates, all ECDSA P-256.
//!
//! - The **root CA** is generated once and never changes, so clients that pinned it (through
//!   `coffer verify`) keep trusting the Coordinator across manifest updates and restarts.
//! - The **intermediate CA** signs workload certificates and rotates on every manifest change,
//!   so certificates issued under an old manifest can be told apart (and distrusted) by peers.
//! - **Workload certificates** are short-lived (hours, `--cert-hours`), renewable by
//!   re-activation. The Coordinator never sees a workload private key: it signs the CSR of a
//!   key generated inside the TEE.
//! - The **TLS server certificate** is signed by the root, carries the Coordinator's own evidence
//!   (RA-TLS in TCG DICE tagged evidence, see [`coffer_evidence::ratls`]) and names
//!   [`SERVER_NAME`].

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::error::Error;

/// The DNS name in the Coordinator's TLS certificate. Clients verify the server certificate
/// against this name whatever address they dial, so a Coordinator reached by IP or through a
/// port-forward still verifies.
pub const SERVER_NAME: &str = "coffer-coordinator";

/// The TCG DICE tagged-evidence extension (`2.23.133.5.4.9`) the TLS certificate carries:
/// CBOR tag 60000 over `[quote, claims]`, the quote's report data the hash of claims naming the
/// certificate's key ([`coffer_evidence::ratls::dice_report_data`]). Gramine's RA-TLS
/// verifiers read it; Coffer's readers also accept Gramine's legacy extension.
pub use coffer_evidence::ratls::DICE_EVIDENCE_OID;

/// Coffer's simulation marker extension in the RA-TLS certificate (private arc under the RA-TLS
/// one, non-critical): present, with value `SIMULATION`, when the evidence is simulated, so a
/// simulating Coordinator is visible in the certificate itself.
pub use coffer_evidence::ratls::SIMULATION_MARKER_OID;

const ROOT_YEARS: i64 = 20;
const INTERMEDIATE_DAYS: i64 = 3 * 365;

/// The serialisable CA material kept in the sealed store.
#[derive(Clone, Serialize, Deserialize)]
pub struct CaMaterial {
    /// Root key, PKCS#8 DER.
    pub root_key: Vec<u8>,
    /// Root certificate DER.
    pub root_cert: Vec<u8>,
    /// Intermediate key, PKCS#8 DER.
    pub intermediate_key: Vec<u8>,
    /// Intermediate certificate DER.
    pub intermediate_cert: Vec<u8>,
    /// How many times the intermediate has rotated.
    pub generation: u64,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Loaded CA, ready to sign.
pub struct Ca {
    material: CaMaterial,
    root: Issuer<'static, KeyPair>,
    intermediate: Issuer<'static, KeyPair>,
    root_pem: String,
    intermediate_pem: String,
    root_spki: Vec<u8>,
}

fn pki(e: impl std::fmt::Display) -> Error {
    Error::Pki(e.to_string())
}

fn serial() -> SerialNumber {
    let mut s = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s[0] &= 0x7f;
    s[0] |= 0x01;
    SerialNumber::from_slice(&s)
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "Coffer");
    d.push(DnType::CommonName, cn);
    d
}

fn odt(unix: i64) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(pki)
}

fn to_pem(tag: &str, der: &[u8]) -> String {
    pem_encode(tag, der)
}

/// PEM-encodes DER.
pub fn pem_encode(tag: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

/// The DER SubjectPublicKeyInfo of a DER certificate.
pub fn cert_spki(cert_der: &[u8]) -> Result<Vec<u8>, Error> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).map_err(pki)?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

fn ca_params(
    cn: &str,
    not_before: i64,
    not_after: i64,
    path_len: Option<u8>,
) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.not_before = odt(not_before)?;
    p.not_after = odt(not_after)?;
    p.serial_number = Some(serial());
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

impl Ca {
    /// Generates a new root and a first intermediate.
    pub fn generate(now: i64) -> Result<Self, Error> {
        let root_key = KeyPair::generate().map_err(pki)?;
        let mut params = ca_params(
            "Coffer Coordinator Root CA",
            now - 60,
            now + ROOT_YEARS * 365 * 86400,
            Some(1),
        )?;
        params.use_authority_key_identifier_extension = false;
        let root_cert = params.self_signed(&root_key).map_err(pki)?;
        let root_key_der = root_key.serialize_der();
        let (ik, ic) = make_intermediate(root_cert.der(), &root_key_der, 1, now)?;
        Self::load(CaMaterial {
            root_key: root_key_der,
            root_cert: root_cert.der().to_vec(),
            intermediate_key: ik,
            intermediate_cert: ic,
            generation: 1,
        })
    }

    /// Loads stored material.
    pub fn load(material: CaMaterial) -> Result<Self, Error> {
        let root_key = KeyPair::try_from(material.root_key.as_slice()).map_err(pki)?;
        let root =
            Issuer::from_ca_cert_der(&material.root_cert.clone().into(), root_key).map_err(pki)?;
        let int_key = KeyPair::try_from(material.intermediate_key.as_slice()).map_err(pki)?;
        let intermediate =
            Issuer::from_ca_cert_der(&material.intermediate_cert.clone().into(), int_key)
                .map_err(pki)?;
        Ok(Self {
            root_pem: to_pem("CERTIFICATE", &material.root_cert),
            intermediate_pem: to_pem("CERTIFICATE", &material.intermediate_cert),
            root_spki: cert_spki(&material.root_cert)?,
            material,
            root,
            intermediate,
        })
    }

    /// A new CA with the same root and a fresh intermediate (manifest change).
    pub fn rotated(&self, now: i64) -> Result<Self, Error> {
        let generation = self.material.generation + 1;
        let (ik, ic) = make_intermediate(
            &self.material.root_cert,
            &self.material.root_key,
            generation,
            now,
        )?;
        Self::load(CaMaterial {
            root_key: self.material.root_key.clone(),
            root_cert: self.material.root_cert.clone(),
            intermediate_key: ik,
            intermediate_cert: ic,
            generation,
        })
    }

    /// The material to store.
    pub fn material(&self) -> &CaMaterial {
        &self.material
    }

    /// Root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.material.root_cert
    }

    /// Root's DER SubjectPublicKeyInfo (what the Coordinator's quote binds).
    pub fn root_spki(&self) -> &[u8] {
        &self.root_spki
    }

    /// Intermediate certificate, PEM.
    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Signs a workload certificate for `key` (from a verified CSR), valid `hours` from `now`.
    pub fn sign_workload(
        &self,
        key: &CsrKey,
        workload: &str,
        instance: &uuid::Uuid,
        dns_names: &[String],
        now: i64,
        hours: u32,
    ) -> Result<(Vec<u8>, i64), Error> {
        let not_after = now + i64::from(hours) * 3600;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(workload);
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, instance.to_string());
        p.not_before = odt(now - 60)?;
        p.not_after = odt(not_after)?;
        p.serial_number = Some(serial());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let mut sans = Vec::new();
        for n in dns_names {
            if let Ok(name) = n.clone().try_into() {
                sans.push(SanType::DnsName(name));
            }
        }
        if let Ok(uri) = format!("urn:uuid:{instance}").try_into() {
            sans.push(SanType::URI(uri));
        }
        p.subject_alt_names = sans;
        let cert = p.signed_by(key, &self.intermediate).map_err(pki)?;
        Ok((cert.der().to_vec(), not_after))
    }

    /// Workload certificate PEM followed by the intermediate (the chain a workload presents).
    pub fn chain_pem(&self, leaf_der: &[u8]) -> String {
        let mut s = to_pem("CERTIFICATE", leaf_der);
        s.push_str(&self.intermediate_pem);
        s
    }

    /// Issues a TLS server certificate (signed by the root) for `key`, with the RA-TLS quote
    /// extension and, in simulation, the simulation marker.
    pub fn server_cert(
        &self,
        key: &KeyPair,
        quotes: &RaTlsQuotes,
        simulation: bool,
        now: i64,
    ) -> Result<Vec<u8>, Error> {
        let p = server_params(quotes, &key_spki(key), simulation, now)?;
        Ok(p.signed_by(key, &self.root).map_err(pki)?.der().to_vec())
    }

    /// Signs a certificate secret of the manifest with the root: such certificates live as
    /// long as their `validity_days`, across manifest updates, so they chain to the one CA that
    /// does not rotate.
    pub fn sign_with_root(
        &self,
        params: &CertificateParams,
        key: &impl PublicKeyData,
    ) -> Result<Vec<u8>, Error> {
        Ok(params
            .signed_by(key, &self.root)
            .map_err(pki)?
            .der()
            .to_vec())
    }

    /// Issues a plain TLS server certificate (no RA-TLS quote) for in-cluster services such as
    /// the admission webhook, signed by the root so clients pin the same root as for the
    /// Coordinator. Valid 30 days from `now`; `dns_names` must be checked by the caller.
    pub fn service_cert(
        &self,
        key: &KeyPair,
        dns_names: &[String],
        now: i64,
    ) -> Result<Vec<u8>, Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(dns_names.first().map_or("coffer-service", |s| s.as_str()));
        p.not_before = odt(now - 60)?;
        p.not_after = odt(now + 30 * 86400)?;
        p.serial_number = Some(serial());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let mut sans = Vec::with_capacity(dns_names.len());
        for n in dns_names {
            sans.push(SanType::DnsName(n.clone().try_into().map_err(pki)?));
        }
        p.subject_alt_names = sans;
        Ok(p.signed_by(key, &self.root).map_err(pki)?.der().to_vec())
    }

    /// Intermediate certificate, DER.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.material.intermediate_cert
    }
}

/// The quotes of an RA-TLS server certificate.
#[derive(Debug, Clone)]
pub struct RaTlsQuotes {
    /// Over [`coffer_evidence::ratls::dice_report_data`] of the key: the TCG DICE extension.
    pub dice: Vec<u8>,
    /// Over [`coffer_api::workload_report_data`] of the key: Gramine's legacy extension, for
    /// launchers already inside converted images, which read only that one (with the quote in
    /// one more OCTET STRING, as Coffer wrote it before). Its report data differs, so it is a
    /// second quote.
    pub legacy: Option<Vec<u8>>,
}

fn server_params(
    quotes: &RaTlsQuotes,
    spki: &[u8],
    simulation: bool,
    now: i64,
) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(SERVER_NAME);
    p.not_before = odt(now - 60)?;
    p.not_after = odt(now + 30 * 86400)?;
    p.serial_number = Some(serial());
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p.subject_alt_names = vec![
        SanType::DnsName(SERVER_NAME.to_string().try_into().map_err(pki)?),
        SanType::DnsName("localhost".to_string().try_into().map_err(pki)?),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    // TCG DICE tagged evidence, as Gramine ≥ 1.8 writes it; readers also accept Gramine's
    // legacy extension.
    p.custom_extensions.push(CustomExtension::from_oid_content(
        coffer_evidence::ratls::DICE_EVIDENCE_OID,
        coffer_evidence::ratls::dice_extension_value(&quotes.dice, spki),
    ));
    if let Some(legacy) = &quotes.legacy {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            coffer_evidence::ratls::RATLS_QUOTE_OID,
            der_octet_string(legacy),
        ));
    }
    if simulation {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            SIMULATION_MARKER_OID,
            der_octet_string(b"SIMULATION"),
        ));
    }
    Ok(p)
}

/// A self-signed RA-TLS server certificate, used in recovery mode when the root CA is sealed.
pub fn self_signed_server_cert(
    key: &KeyPair,
    quotes: &RaTlsQuotes,
    simulation: bool,
    now: i64,
) -> Result<Vec<u8>, Error> {
    let mut p = server_params(quotes, &key_spki(key), simulation, now)?;
    p.distinguished_name = dn("coffer-coordinator (recovery mode)");
    p.use_authority_key_identifier_extension = false;
    Ok(p.self_signed(key).map_err(pki)?.der().to_vec())
}

/// DER OCTET STRING wrapping.
fn der_octet_string(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = data.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let len = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | len.len() as u8);
        out.extend_from_slice(len);
    }
    out.extend_from_slice(data);
    out
}

fn make_intermediate(
    root_cert: &[u8],
    root_key: &[u8],
    generation: u64,
    now: i64,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let rk = KeyPair::try_from(root_key).map_err(pki)?;
    let root = Issuer::from_ca_cert_der(&root_cert.to_vec().into(), rk).map_err(pki)?;
    let key = KeyPair::generate().map_err(pki)?;
    let params = ca_params(
        &format!("Coffer Coordinator Intermediate CA #{generation}"),
        now - 60,
        now + INTERMEDIATE_DAYS * 86400,
        Some(0),
    )?;
    let cert = params.signed_by(&key, &root).map_err(pki)?;
    Ok((key.serialize_der(), cert.der().to_vec()))
}

/// The public key of a verified CSR: a P-256 point, as rcgen needs it to issue a certificate.
#[derive(Debug, Clone)]
pub struct CsrKey {
    point: Vec<u8>,
    spki_der: Vec<u8>,
}

impl CsrKey {
    /// DER SubjectPublicKeyInfo (what the workload's report data binds).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Largest CSR accepted (a P-256 CSR is ~400 bytes; generous for extensions).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// Parses a PEM CSR, checks its self-signature and that its key is ECDSA P-256.
pub fn parse_csr(csr_pem: &str) -> Result<CsrKey, Error> {
    if csr_pem.len() > MAX_CSR_BYTES {
        return Err(Error::BadRequest(format!(
            "CSR larger than {MAX_CSR_BYTES} bytes"
        )));
    }
    let der = pem_decode(csr_pem, "CERTIFICATE REQUEST")
        .ok_or_else(|| Error::BadRequest("csr_pem is not a PEM `CERTIFICATE REQUEST`".into()))?;
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::BadRequest(format!("CSR is not valid DER PKCS#10: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::BadRequest("CSR has trailing bytes".into()));
    }
    csr.verify_signature()
        .map_err(|_| Error::BadRequest("CSR self-signature does not verify".into()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if alg != OID_EC_PUBLIC_KEY || curve.as_deref() != Some(OID_P256) {
        return Err(Error::BadRequest("CSR key must be ECDSA P-256".into()));
    }
    Ok(CsrKey {
        point: spki.subject_public_key.data.to_vec(),
        spki_der: spki.raw.to_vec(),
    })
}

/// Decodes one PEM block with the given tag; `None` if absent or malformed.
pub fn pem_decode(text: &str, tag: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {tag}-----");
    let end = format!("-----END {tag}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text.get(start..)?.find(&end)? + start;
    let body: String = text
        .get(start..stop)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Builds a CSR (PEM) for `key`: what a launcher does, used by tests, benches and the CLI.
pub fn make_csr(key: &KeyPair, cn: &str) -> Result<String, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.serialize_request(key).map_err(pki)?.pem().map_err(pki)
}

/// DER SubjectPublicKeyInfo of an rcgen key pair.
pub fn key_spki(key: &KeyPair) -> Vec<u8> {
    key.subject_public_key_info()
}

/// Extracts the RA-TLS quote and the simulation marker from a DER certificate.
pub fn ratls_quote(cert_der: &[u8]) -> Result<(Vec<u8>, bool), Error> {
    let r = coffer_evidence::ratls::read(cert_der).map_err(pki)?;
    Ok((r.quote, r.simulation))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn chain_signs_and_rotates() {
        let ca = Ca::generate(NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = make_csr(&key, "w").unwrap();
        let parsed = parse_csr(&csr).unwrap();
        assert_eq!(parsed.spki_der(), key_spki(&key).as_slice());
        let id = uuid::Uuid::new_v4();
        let (leaf, not_after) = ca
            .sign_workload(&parsed, "web", &id, &["web".into()], NOW, 4)
            .unwrap();
        assert_eq!(not_after, NOW + 4 * 3600);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
        let (_, int) =
            x509_parser::certificate::X509Certificate::from_der(&ca.material.intermediate_cert)
                .unwrap();
        cert.verify_signature(Some(int.public_key())).unwrap();
        let rotated = ca.rotated(NOW).unwrap();
        assert_eq!(rotated.root_der(), ca.root_der());
        assert_ne!(
            rotated.material.intermediate_cert,
            ca.material.intermediate_cert
        );
        let reloaded = Ca::load(rotated.material().clone()).unwrap();
        assert_eq!(reloaded.intermediate_pem(), rotated.intermediate_pem());
    }

    #[test]
    fn tampered_csr_is_refused() {
        let key = KeyPair::generate().unwrap();
        let csr = make_csr(&key, "w").unwrap();
        let mut der = pem_decode(&csr, "CERTIFICATE REQUEST").unwrap();
        let n = der.len();
        der[n - 5] ^= 1; // inside the signature
        let bad = pem_encode("CERTIFICATE REQUEST", &der);
        let err = parse_csr(&bad).unwrap_err();
        assert!(err.to_string().contains("self-signature"), "{err}");
    }

    #[test]
    fn rsa_csr_is_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let csr = make_csr(&key, "w").unwrap();
        let err = parse_csr(&csr).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn server_cert_carries_quote() {
        let ca = Ca::generate(NOW).unwrap();
        let key = KeyPair::generate().unwrap();
        let quotes = RaTlsQuotes {
            dice: vec![7u8; 300],
            legacy: Some(vec![8u8; 300]),
        };
        let der = ca.server_cert(&key, &quotes, true, NOW).unwrap();
        let (q, sim) = ratls_quote(&der).unwrap();
        assert_eq!(q, vec![7u8; 300], "the DICE quote is preferred");
        assert!(sim);
        // An older reader finds Gramine's legacy extension with the other quote, wrapped as
        // Coffer wrote it before.
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let legacy = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.2.840.113741.1337.6")
            .unwrap();
        let (_, inner) = x509_parser::der_parser::der::parse_der_octetstring(legacy.value).unwrap();
        assert_eq!(inner.as_slice().unwrap(), &[8u8; 300][..]);
        let r = coffer_evidence::ratls::read(&der).unwrap();
        assert_eq!(r.format, coffer_evidence::ratls::RaTlsFormat::Dice);
        assert_eq!(
            r.expected_report_data,
            coffer_evidence::ratls::dice_report_data(&key_spki(&key))
        );
    }
}
