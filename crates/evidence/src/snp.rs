//! AMD SEV-SNP attestation reports: strict parsing (report versions 2, 3 and 5) and
//! verification against the AMD endorsement chain, ARK → ASK (or ASVK) → VCEK (or VLEK).
//!
//! Like the rest of the crate this is a pure function of bytes and `now`. Layout and checks
//! follow AMD's SEV-SNP ABI specification (publication 56860, "ATTESTATION_REPORT Structure")
//! and the VCEK specification (publication 57230), as implemented by go-sev-guest
//! (`abi/abi.go`, `verify/verify.go`, `validate/validate.go`) and virtee/sev (`src/firmware/guest/
//! types/snp.rs`, `src/certs/snp`). The vectors in `testdata/vectors/snp` come from those
//! projects' test suites and from Confidential Containers' trustee.
//!
//! | check | error |
//! |---|---|
//! | the report is exactly 1184 bytes, version 2, 3 or 5, signature algorithm 1 (ECDSA P-384 / SHA-384), a VCEK or VLEK signer, policy bit 17 set, the reserved byte ranges zero (also the signature's unused bytes; REPORTED_TCB's for the product); policy and PLATFORM_INFO bits later firmware may define are passed on, not refused | [`Error::Malformed`] / [`Error::Unsupported`] |
//! | the ARK's public key is one of AMD's pinned keys (Milan, Genoa, Turin), or the caller's ([`SnpAnchors`]); the ARK is self-signed | [`Error::UntrustedRoot`] / [`Error::BadSignature`] |
//! | ASK (or ASVK) signed by the ARK, VCEK (or VLEK) signed by the ASK; RSASSA-PSS SHA-384, MGF1 SHA-384, salt 48; names linked | [`Error::BadSignature`] / [`Error::Mismatch`] |
//! | a VCEK under an ASK and a VLEK under an ASVK, as the report's signer field says; the VEK's productName (required) and the report's CPUID (v3+) name the ARK's product | [`Error::Mismatch`] |
//! | the three certificates (and the CRL, when given: signed by the ARK, not listing the ASK) valid at `now` | [`Error::Expired`] / [`Error::Revoked`] |
//! | the report signature by the VEK over bytes 0..0x2A0 | [`Error::BadSignature`] |
//! | the VEK's TCB extensions (boot loader, TEE, SNP, microcode; Turin: FMC) equal REPORTED_TCB | [`Error::Mismatch`] |
//! | a VCEK's hwID equals CHIP_ID (unless MASK_CHIP_KEY; Turin: the first 8 bytes, the rest zero) | [`Error::Mismatch`] |
//!
//! The guest policy (debug, migration agent, SMT, ABI), VMPL and minimum TCB are *reported*
//! in [`SnpVerified`], not refused: policy belongs to the caller (the manifest), as for DCAP.

use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED, RSA_PSS_2048_8192_SHA384};
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::signature_algorithm::SignatureAlgorithm;

use crate::error::{Error, Item};
use crate::pki::sha256;

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// The signed part of a report: everything before the signature.
pub const SIGNED_LEN: usize = 0x2A0;
/// The report versions this parser accepts.
pub const SUPPORTED_VERSIONS: [u32; 3] = [2, 3, 5];

/// AMD's root keys, as served by the Key Distribution Service (`/vcek/v1/{product}/cert_chain`).
/// SHA-256 of their SubjectPublicKeyInfo: Milan 9f056bee…89cb9, Genoa 429a69c9…63831,
/// Turin 4f125410…ad08.
const AMD_ARKS: [(Product, &[u8]); 3] = [
    (Product::Milan, include_bytes!("amd/milan_ark.der")),
    (Product::Genoa, include_bytes!("amd/genoa_ark.der")),
    (Product::Turin, include_bytes!("amd/turin_ark.der")),
];

/// AMD EPYC generations with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4).
    Genoa,
    /// 5th generation EPYC (Zen 5): a different TCB_VERSION layout, an FMC SPL, 8-byte chip IDs.
    Turin,
}

impl Product {
    /// The name AMD's KDS and certificates use.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which key signed a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The chip's Versioned Chip Endorsement Key.
    Vcek,
    /// A cloud provider's Versioned Loaded Endorsement Key.
    Vlek,
}

impl Signer {
    /// `"vcek"` or `"vlek"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signer::Vcek => "vcek",
            Signer::Vlek => "vlek",
        }
    }
}

/// A TCB_VERSION, decoded for a product (Turin moved the fields and added the FMC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcbVersion {
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes the little-endian u64 of a report for `product`; `None` when bytes that the
    /// layout reserves are not zero.
    pub fn decode(raw: u64, product: Product) -> Option<TcbVersion> {
        let b = raw.to_le_bytes();
        match product {
            Product::Milan | Product::Genoa => (b[2..6] == [0; 4]).then_some(TcbVersion {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }),
            Product::Turin => (b[4..7] == [0; 3]).then_some(TcbVersion {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }),
        }
    }
}

/// A parsed ATTESTATION_REPORT. Every field is as in the report; nothing is verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// 2, 3 or 5.
    pub version: u32,
    /// The guest's SVN (from its ID block).
    pub guest_svn: u32,
    /// The guest policy (see [`Report::debug`] and friends).
    pub policy: u64,
    /// FAMILY_ID from the ID block.
    pub family_id: [u8; 16],
    /// IMAGE_ID from the ID block.
    pub image_id: [u8; 16],
    /// The VMPL the report was requested from.
    pub vmpl: u32,
    /// The TCB the firmware runs now.
    pub current_tcb: u64,
    /// PLATFORM_INFO (SMT enabled, TSME, …).
    pub platform_info: u64,
    /// AUTHOR_KEY_EN.
    pub author_key_en: bool,
    /// MASK_CHIP_KEY: CHIP_ID is zero.
    pub mask_chip_key: bool,
    /// The key that signed the report.
    pub signer: Signer,
    /// Data the guest put in its request (Coffer binds its key and the image here).
    pub report_data: [u8; 64],
    /// The launch digest of the guest.
    pub measurement: [u8; 48],
    /// Data the host provided at launch (Kata: the hash of the initdata / policy).
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key that signed the ID block (zero without one).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key that certified the ID key (zero without one).
    pub author_key_digest: [u8; 48],
    /// The guest's report ID.
    pub report_id: [u8; 32],
    /// The migration agent's report ID.
    pub report_id_ma: [u8; 32],
    /// The TCB the VCEK was derived from.
    pub reported_tcb: u64,
    /// CPUID family, model and stepping (version 3 and later).
    pub cpuid: Option<(u8, u8, u8)>,
    /// The chip's ID (zero when masked; on Turin only the first 8 bytes).
    pub chip_id: [u8; 64],
    /// The committed TCB.
    pub committed_tcb: u64,
    /// Firmware version now: (major, minor, build).
    pub current_version: (u8, u8, u8),
    /// Committed firmware version: (major, minor, build).
    pub committed_version: (u8, u8, u8),
    /// The TCB at launch.
    pub launch_tcb: u64,
    /// Mitigation vectors at launch and now (version 5).
    pub mit_vectors: Option<(u64, u64)>,
    r: [u8; 48],
    s: [u8; 48],
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::malformed(Item::SnpReport, detail)
}

/// Fails unless `b[range]` is all zero; names the field.
fn reserved_zero(b: &[u8], from: usize, to: usize, what: &str) -> Result<(), Error> {
    match b[from..to].iter().position(|&x| x != 0) {
        None => Ok(()),
        Some(i) => Err(malformed(format!(
            "{what} (bytes {from:#x}..{to:#x}) must be zero; byte {:#x} is {:#04x}",
            from + i,
            b[from + i]
        ))),
    }
}

/// The big-endian 48-byte value of a 72-byte little-endian signature component whose high
/// bytes must be zero.
fn sig_component(b: &[u8], off: usize, what: &str) -> Result<[u8; 48], Error> {
    reserved_zero(b, off + 48, off + 72, what)?;
    let mut out = arr::<48>(b, off);
    out.reverse();
    Ok(out)
}

impl Report {
    /// Parses a report strictly (see the [module docs](self)).
    pub fn parse(b: &[u8]) -> Result<Report, Error> {
        if b.len() != REPORT_LEN {
            return Err(malformed(format!(
                "{} bytes, an attestation report has {REPORT_LEN}",
                b.len()
            )));
        }
        let version = le32(b, 0x00);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Error::Unsupported {
                item: Item::SnpReport,
                detail: format!("report version {version}; supported: 2, 3, 5"),
            });
        }
        let algo = le32(b, 0x34);
        if algo != 1 {
            return Err(Error::Unsupported {
                item: Item::SnpReport,
                detail: format!("signature algorithm {algo}; supported: 1 (ECDSA P-384 SHA-384)"),
            });
        }
        let policy = le64(b, 0x08);
        if policy & (1 << 17) == 0 {
            return Err(malformed("policy bit 17 (reserved, must be one) is zero"));
        }
        let info = le32(b, 0x48);
        if info & !0x1f != 0 {
            return Err(malformed(format!(
                "signer info {info:#x} sets reserved bits (only 0..4 are defined)"
            )));
        }
        let signer = match (info >> 2) & 0x7 {
            0 => Signer::Vcek,
            1 => Signer::Vlek,
            7 => {
                return Err(Error::Unsupported {
                    item: Item::SnpReport,
                    detail: "the report is not signed (SIGNING_KEY 7)".into(),
                })
            }
            k => return Err(malformed(format!("SIGNING_KEY {k} is reserved"))),
        };
        reserved_zero(b, 0x4C, 0x50, "reserved after the signer info")?;
        let cpuid = if version >= 3 {
            reserved_zero(b, 0x18B, 0x1A0, "reserved after CPUID")?;
            Some((b[0x188], b[0x189], b[0x18A]))
        } else {
            reserved_zero(b, 0x188, 0x1A0, "reserved after REPORTED_TCB")?;
            None
        };
        reserved_zero(b, 0x1EB, 0x1EC, "reserved after CURRENT_MAJOR")?;
        reserved_zero(b, 0x1EF, 0x1F0, "reserved after COMMITTED_MAJOR")?;
        let mit_vectors = if version >= 5 {
            Some((le64(b, 0x1F8), le64(b, 0x200)))
        } else {
            reserved_zero(b, 0x1F8, 0x208, "reserved after LAUNCH_TCB")?;
            None
        };
        reserved_zero(b, 0x208, SIGNED_LEN, "reserved before the signature")?;
        let r = sig_component(b, SIGNED_LEN, "signature R above 48 bytes")?;
        let s = sig_component(b, SIGNED_LEN + 72, "signature S above 48 bytes")?;
        reserved_zero(b, SIGNED_LEN + 144, REPORT_LEN, "signature padding")?;
        let mask_chip_key = info & 0b10 != 0;
        let chip_id = arr::<64>(b, 0x1A0);
        if mask_chip_key && chip_id != [0; 64] {
            return Err(malformed("MASK_CHIP_KEY is set but CHIP_ID is not zero"));
        }
        Ok(Report {
            version,
            guest_svn: le32(b, 0x04),
            policy,
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: le32(b, 0x30),
            current_tcb: le64(b, 0x38),
            platform_info: le64(b, 0x40),
            author_key_en: info & 1 != 0,
            mask_chip_key,
            signer,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: le64(b, 0x180),
            cpuid,
            chip_id,
            committed_tcb: le64(b, 0x1E0),
            current_version: (b[0x1EA], b[0x1E9], b[0x1E8]),
            committed_version: (b[0x1EE], b[0x1ED], b[0x1EC]),
            launch_tcb: le64(b, 0x1F0),
            mit_vectors,
            r,
            s,
        })
    }

    /// Policy bit 19: the hypervisor may debug the guest (read and write its memory).
    pub fn debug(&self) -> bool {
        self.policy & (1 << 19) != 0
    }

    /// Policy bit 18: a migration agent may be associated with the guest.
    pub fn migrate_ma(&self) -> bool {
        self.policy & (1 << 18) != 0
    }

    /// Policy bit 16: the guest may run with SMT enabled.
    pub fn smt_allowed(&self) -> bool {
        self.policy & (1 << 16) != 0
    }

    /// The minimum firmware ABI (major, minor) the guest policy requires.
    pub fn abi_min(&self) -> (u8, u8) {
        ((self.policy >> 8) as u8, self.policy as u8)
    }

    /// The product the report's CPUID fields name (version 3 and later).
    pub fn product_from_cpuid(&self) -> Option<Product> {
        let (family, model, _) = self.cpuid?;
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

/// The endorsement chain of a report, as AMD's KDS serves it (DER certificates).
#[derive(Debug, Clone, Copy)]
pub struct SnpCollateral<'a> {
    /// The VCEK or VLEK certificate.
    pub vek: &'a [u8],
    /// The ASK (for a VCEK) or ASVK (for a VLEK) certificate.
    pub ask: &'a [u8],
    /// The ARK certificate.
    pub ark: &'a [u8],
    /// The product's CRL from KDS (`/vcek/v1/{product}/crl`), when the caller has one.
    pub crl: Option<&'a [u8]>,
}

/// The certificates in a KDS download: PEM (one or more blocks, as `cert_chain` serves ASK
/// then ARK) or a single DER certificate (as the VCEK endpoint serves it).
pub fn certificates(bytes: &[u8], item: Item) -> Result<Vec<Vec<u8>>, Error> {
    let text = std::str::from_utf8(bytes).ok();
    match text {
        Some(t) if t.trim_start().starts_with("-----BEGIN") => {
            crate::pki::parse_pem_chain(t.trim_start(), item)
        }
        _ => Ok(vec![bytes.to_vec()]),
    }
}

/// The root keys an ARK may have, each for a product.
#[derive(Debug, Clone)]
pub struct SnpAnchors {
    /// (product, SHA-256 of the ARK's SubjectPublicKeyInfo).
    keys: Vec<(Product, [u8; 32])>,
}

impl SnpAnchors {
    /// AMD's ARKs for Milan, Genoa and Turin.
    pub fn amd() -> SnpAnchors {
        let keys = AMD_ARKS
            .iter()
            .filter_map(|(p, der)| {
                let (_, c) = X509Certificate::from_der(der).ok()?;
                Some((*p, sha256(c.tbs_certificate.subject_pki.raw)))
            })
            .collect();
        SnpAnchors { keys }
    }

    /// An ARK given by the caller (DER), for `product`: the simulated platform's, or a test
    /// root. Never mixed with [`SnpAnchors::amd`] in one verification.
    pub fn from_ark(product: Product, ark_der: &[u8]) -> Result<SnpAnchors, Error> {
        let (_, c) = X509Certificate::from_der(ark_der)
            .map_err(|e| Error::malformed(Item::TrustAnchors, format!("ARK certificate: {e}")))?;
        Ok(SnpAnchors {
            keys: vec![(product, sha256(c.tbs_certificate.subject_pki.raw))],
        })
    }

    /// An ARK given by the caller (DER), its product read from its subject (`ARK-Milan`,
    /// `ARK-Genoa`, `ARK-Turin`, as AMD names them): a test root or a simulated machine's.
    pub fn from_ark_der(ark_der: &[u8]) -> Result<SnpAnchors, Error> {
        let (_, c) = X509Certificate::from_der(ark_der)
            .map_err(|e| Error::malformed(Item::TrustAnchors, format!("ARK certificate: {e}")))?;
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default();
        let product = [Product::Milan, Product::Genoa, Product::Turin]
            .into_iter()
            .find(|p| cn == format!("ARK-{p}"))
            .ok_or_else(|| {
                Error::malformed(
                    Item::TrustAnchors,
                    format!("ARK subject CN {cn:?} is not ARK-Milan, ARK-Genoa or ARK-Turin"),
                )
            })?;
        SnpAnchors::from_ark(product, ark_der)
    }

    fn product_of(&self, spki: &[u8]) -> Option<Product> {
        let h = sha256(spki);
        self.keys.iter().find(|(_, k)| *k == h).map(|(p, _)| *p)
    }
}

/// A report that verified, with what the caller's policy decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpVerified {
    /// The report as parsed.
    pub report: Report,
    /// The product the ARK is for.
    pub product: Product,
    /// REPORTED_TCB, decoded (equal to the VEK certificate's TCB).
    pub reported_tcb: TcbVersion,
    /// Whether a CRL was checked.
    pub crl_checked: bool,
}

/// OID arc of AMD's VCEK extensions (1.3.6.1.4.1.3704.1).
const AMD_ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 3704, 1];

/// Whether `oid` is AMD's extension `tail` (under [`AMD_ARC`]).
fn is_amd_oid(oid: &Oid<'_>, tail: &[u64]) -> bool {
    oid.iter()
        .is_some_and(|arcs| arcs.eq(AMD_ARC.iter().chain(tail).copied()))
}

/// A certificate of the chain, parsed and checked for what every one of them must be.
struct ChainCert<'a> {
    item: Item,
    cert: X509Certificate<'a>,
}

fn parse_cert<'a>(der: &'a [u8], item: Item) -> Result<ChainCert<'a>, Error> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::malformed(item, e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::malformed(
            item,
            format!("{} bytes after the certificate", rest.len()),
        ));
    }
    // The outer algorithm is not signed: it must equal the signed one.
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(Error::malformed(
            item,
            "outer signature algorithm differs from the signed one",
        ));
    }
    if cert.signature_value.unused_bits != 0 {
        return Err(Error::malformed(
            item,
            "signature BIT STRING has unused bits",
        ));
    }
    Ok(ChainCert { item, cert })
}

impl ChainCert<'_> {
    fn cn(&self) -> String {
        self.cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// Checks that `issuer` signed this certificate with RSASSA-PSS SHA-384 (salt 48), as AMD
    /// signs every certificate of the chain.
    fn signed_by(&self, issuer: &ChainCert<'_>) -> Result<(), Error> {
        if self.cert.issuer().as_raw() != issuer.cert.subject().as_raw() {
            return Err(Error::Mismatch {
                check: "certificate issuer name",
                detail: format!(
                    "the {} names issuer {:?}, the {} is {:?}",
                    self.item,
                    self.cert.issuer().to_string(),
                    issuer.item,
                    issuer.cert.subject().to_string()
                ),
            });
        }
        check_pss_sha384(&self.cert.signature_algorithm, self.item)?;
        let key = &issuer
            .cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data;
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, key)
            .verify(
                self.cert.tbs_certificate.as_ref(),
                &self.cert.signature_value.data,
            )
            .map_err(|_| Error::BadSignature { item: self.item })
    }

    fn valid_at(&self, now: i64) -> Result<(), Error> {
        let v = self.cert.validity();
        let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
        if now < nb || now > na {
            return Err(Error::Expired {
                item: self.item,
                now,
                not_before: nb,
                not_after: na,
            });
        }
        Ok(())
    }

    /// The DER content of AMD extension `tail` (under 1.3.6.1.4.1.3704.1).
    fn amd_ext(&self, tail: &[u64]) -> Option<&[u8]> {
        self.cert
            .extensions()
            .iter()
            .find(|e| is_amd_oid(&e.oid, tail))
            .map(|e| e.value)
    }

    /// An SPL extension: a DER INTEGER from 0 to 255.
    fn spl(&self, tail: &[u64], name: &str) -> Result<Option<u8>, Error> {
        let Some(v) = self.amd_ext(tail) else {
            return Ok(None);
        };
        let bad = || {
            Error::malformed(
                self.item,
                format!("{name} extension is not an INTEGER 0..255"),
            )
        };
        match v {
            [0x02, 0x01, x] if *x < 0x80 => Ok(Some(*x)),
            [0x02, 0x02, 0x00, x] if *x >= 0x80 => Ok(Some(*x)),
            _ => Err(bad()),
        }
    }
}

/// AMD signs every certificate and CRL with RSASSA-PSS SHA-384, MGF1 SHA-384, salt 48.
fn check_pss_sha384(
    alg: &x509_parser::x509::AlgorithmIdentifier<'_>,
    item: Item,
) -> Result<(), Error> {
    let sha384 = Oid::from(&[2u64, 16, 840, 1, 101, 3, 4, 2, 2][..])
        .map_err(|_| Error::malformed(item, "OID"))?;
    match SignatureAlgorithm::try_from(alg) {
        Ok(SignatureAlgorithm::RSASSA_PSS(p))
            if *p.hash_algorithm_oid() == sha384
                && p.salt_length() == 48
                && p.mask_gen_algorithm().is_ok_and(|m| m.hash == sha384) =>
        {
            Ok(())
        }
        _ => Err(Error::Unsupported {
            item,
            detail: "signature algorithm: AMD signs with RSASSA-PSS SHA-384, MGF1 SHA-384, salt 48"
                .into(),
        }),
    }
}

/// Verifies `report` (raw bytes) under `collateral` and `anchors` at `now` (Unix seconds).
pub fn verify_snp(
    report: &[u8],
    collateral: &SnpCollateral<'_>,
    anchors: &SnpAnchors,
    now: i64,
) -> Result<SnpVerified, Error> {
    let parsed = Report::parse(report)?;
    let ark = parse_cert(collateral.ark, Item::ArkCertificate)?;
    let ask = parse_cert(collateral.ask, Item::AskCertificate)?;
    let vek = parse_cert(collateral.vek, Item::VekCertificate)?;

    // The root: a pinned key, self-signed.
    let product = anchors
        .product_of(ark.cert.tbs_certificate.subject_pki.raw)
        .ok_or_else(|| Error::UntrustedRoot {
            item: Item::ArkCertificate,
            detail: format!(
                "the ARK's key (subject {:?}) is not a pinned AMD root key",
                ark.cert.subject().to_string()
            ),
        })?;
    ark.signed_by(&ark)?;
    ask.signed_by(&ark)?;
    vek.signed_by(&ask)?;

    // The signer the report names, under the intermediate that certifies that kind of key.
    let (want_ask, want_vek) = match parsed.signer {
        Signer::Vcek => (format!("SEV-{product}"), "SEV-VCEK"),
        Signer::Vlek => (format!("SEV-VLEK-{product}"), "SEV-VLEK"),
    };
    if ask.cn() != want_ask || vek.cn() != want_vek {
        return Err(Error::Mismatch {
            check: "SNP signing key",
            detail: format!(
                "the report is signed by its {}, which needs a {want_vek} certificate under \
                 {want_ask}; got {:?} under {:?}",
                parsed.signer.as_str().to_uppercase(),
                vek.cn(),
                ask.cn()
            ),
        });
    }
    let name = vek
        .amd_ext(&[2])
        .and_then(ia5)
        .ok_or_else(|| Error::malformed(Item::VekCertificate, "no productName extension"))?;
    if !name.starts_with(product.as_str()) {
        return Err(Error::Mismatch {
            check: "SNP product",
            detail: format!("the VEK is for product {name:?}, the ARK for {product}"),
        });
    }
    if let Some(p) = parsed.product_from_cpuid() {
        if p != product {
            return Err(Error::Mismatch {
                check: "SNP product",
                detail: format!("the report's CPUID names {p}, the ARK is {product}'s"),
            });
        }
    }

    for c in [&ark, &ask, &vek] {
        c.valid_at(now)?;
    }
    let crl_checked = match collateral.crl {
        None => false,
        Some(der) => {
            // The ARK's CRL lists what the ARK issued: the ASK (VCEK serials are all 0).
            check_crl(der, &ark, &ask, now)?;
            true
        }
    };

    // The report's signature by the VEK.
    let mut sig = [0u8; 96];
    sig[..48].copy_from_slice(&parsed.r);
    sig[48..].copy_from_slice(&parsed.s);
    let key = &vek.cert.tbs_certificate.subject_pki.subject_public_key.data;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
        .verify(&report[..SIGNED_LEN], &sig)
        .map_err(|_| Error::BadSignature {
            item: Item::SnpReportSignature,
        })?;

    // The VEK was derived for REPORTED_TCB.
    let reported_tcb = TcbVersion::decode(parsed.reported_tcb, product).ok_or_else(|| {
        malformed(format!(
            "REPORTED_TCB {:#018x} sets bytes {product} reserves",
            parsed.reported_tcb
        ))
    })?;
    let cert_tcb = TcbVersion {
        fmc: if product == Product::Turin {
            vek.spl(&[3, 9], "fmcSPL")?
        } else {
            None
        },
        bootloader: vek.spl(&[3, 1], "blSPL")?.unwrap_or(0),
        tee: vek.spl(&[3, 2], "teeSPL")?.unwrap_or(0),
        snp: vek.spl(&[3, 3], "snpSPL")?.unwrap_or(0),
        microcode: vek.spl(&[3, 8], "ucodeSPL")?.unwrap_or(0),
    };
    let has_spls = [[3, 1], [3, 2], [3, 3], [3, 8]]
        .iter()
        .all(|t| vek.amd_ext(t).is_some());
    if !has_spls || cert_tcb != reported_tcb {
        return Err(Error::Mismatch {
            check: "SNP REPORTED_TCB",
            detail: format!(
                "the report says {reported_tcb:?}, the VEK certificate {cert_tcb:?}{}",
                if has_spls {
                    ""
                } else {
                    " (SPL extensions missing)"
                }
            ),
        });
    }

    // A VCEK is the chip's own key: its hwID is the report's CHIP_ID.
    if parsed.signer == Signer::Vcek && !parsed.mask_chip_key {
        let hwid = vek
            .amd_ext(&[4])
            .map(octets)
            .ok_or_else(|| Error::malformed(Item::VekCertificate, "no hwID extension"))?;
        let want: &[u8] = match product {
            Product::Turin => {
                if parsed.chip_id[8..] != [0; 56] {
                    return Err(malformed(
                        "a Turin CHIP_ID has only 8 bytes; the rest is not zero",
                    ));
                }
                &parsed.chip_id[..8]
            }
            _ => &parsed.chip_id,
        };
        if hwid != want {
            return Err(Error::Mismatch {
                check: "SNP CHIP_ID",
                detail: format!(
                    "the report's CHIP_ID {} is not the VCEK's hwID {}",
                    hex::encode(want),
                    hex::encode(hwid)
                ),
            });
        }
    }

    Ok(SnpVerified {
        report: parsed,
        product,
        reported_tcb,
        crl_checked,
    })
}

/// The bytes of an hwID extension: the raw value (older VCEKs) or a DER OCTET STRING.
fn octets(v: &[u8]) -> &[u8] {
    match v {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        _ => v,
    }
}

/// An IA5String extension value (productName).
fn ia5(v: &[u8]) -> Option<String> {
    match v {
        [0x16, len, rest @ ..] if usize::from(*len) == rest.len() => {
            std::str::from_utf8(rest).ok().map(str::to_string)
        }
        _ => None,
    }
}

fn check_crl(der: &[u8], ark: &ChainCert<'_>, ask: &ChainCert<'_>, now: i64) -> Result<(), Error> {
    let (rest, crl) = CertificateRevocationList::from_der(der)
        .map_err(|e| Error::malformed(Item::SnpCrl, e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::malformed(Item::SnpCrl, "bytes after the CRL"));
    }
    if crl.issuer().as_raw() != ark.cert.subject().as_raw() {
        return Err(Error::Mismatch {
            check: "SNP CRL issuer",
            detail: format!(
                "the CRL is issued by {:?}, not the ARK",
                crl.issuer().to_string()
            ),
        });
    }
    if crl.signature_algorithm != crl.tbs_cert_list.signature {
        return Err(Error::malformed(
            Item::SnpCrl,
            "outer signature algorithm differs from the signed one",
        ));
    }
    check_pss_sha384(&crl.signature_algorithm, Item::SnpCrl)?;
    let key = &ark.cert.tbs_certificate.subject_pki.subject_public_key.data;
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, key)
        .verify(crl.tbs_cert_list.as_ref(), &crl.signature_value.data)
        .map_err(|_| Error::BadSignature { item: Item::SnpCrl })?;
    let this = crl.last_update().timestamp();
    if now < this {
        return Err(Error::Expired {
            item: Item::SnpCrl,
            now,
            not_before: this,
            not_after: crl.next_update().map_or(i64::MAX, |t| t.timestamp()),
        });
    }
    if let Some(next) = crl.next_update() {
        if now > next.timestamp() {
            return Err(Error::Expired {
                item: Item::SnpCrl,
                now,
                not_before: this,
                not_after: next.timestamp(),
            });
        }
    }
    let serial = ask.cert.tbs_certificate.raw_serial();
    if crl
        .iter_revoked_certificates()
        .any(|r| r.raw_serial() == serial)
    {
        return Err(Error::Revoked {
            item: ask.item,
            serial: hex::encode(serial),
            by: Item::SnpCrl,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcb_versions_per_product() {
        // go-sev-guest's vector: bl 2, tee 0, snp 5, ucode 68.
        let t = TcbVersion::decode(0x4405000000000002, Product::Milan).unwrap();
        assert_eq!(
            (t.bootloader, t.tee, t.snp, t.microcode, t.fmc),
            (2, 0, 5, 68, None)
        );
        assert!(TcbVersion::decode(0x4405000000010002, Product::Milan).is_none());
        let t = TcbVersion::decode(0x0900000004030201, Product::Turin).unwrap();
        assert_eq!(
            (t.fmc, t.bootloader, t.tee, t.snp, t.microcode),
            (Some(1), 2, 3, 4, 9)
        );
    }

    #[test]
    fn amd_anchors_are_the_three_arks() {
        let a = SnpAnchors::amd();
        assert_eq!(a.keys.len(), 3);
        assert_eq!(
            hex::encode(a.keys[0].1),
            "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9"
        );
    }

    #[test]
    fn short_and_unknown_reports_are_refused() {
        assert!(matches!(
            Report::parse(&[0u8; 100]),
            Err(Error::Malformed { .. })
        ));
        let mut r = vec![0u8; REPORT_LEN];
        r[0] = 4;
        assert!(matches!(Report::parse(&r), Err(Error::Unsupported { .. })));
    }
}
