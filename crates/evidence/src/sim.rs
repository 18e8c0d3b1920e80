//! The simulated platform: a software quoting enclave with its own PKI, for machines without a
//! TEE. **Simulation: nothing it signs proves anything about hardware.**
//!
//! It has its own root CA ("Coffer Simulated SGX Root CA"), PCK Platform CA and PCK leaf
//! certificate (with the SGX extension: FMSPC, PCE-ID, TCB components, PCESVN, CPUSVN), a TCB
//! Signing certificate, CRLs, TCB info (SGX and TDX) and QE identity documents signed like
//! Intel's, and produces SGX v3 and TDX v4 quotes in the real byte format. They verify through
//! the same [`crate::verify`] with [`SimPlatform::trust_anchors`] and are refused under
//! [`crate::TrustAnchors::intel`] (untrusted root). Every subject name contains
//! "Coffer Simulated".
//!
//! [`SimSnpPlatform`] is the same machine's SEV-SNP side: its own ARK, ASK and VCEK, and
//! attestation reports.
//!
//! Everything is derived deterministically from a 32-byte seed (keys by HKDF-SHA-256, ECDSA
//! signatures by RFC 6979), so [`SimPlatform::to_bytes`] only stores the seed. That file holds
//! private keys: keep it private (0600).

mod snp;

pub use snp::{SimSnpPlatform, SnpReportSpec, SIM_SNP_POLICY, SIM_SNP_TCB};

use hkdf::Hkdf;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::collateral::Collateral;
use crate::error::{Error, Item};
use crate::quote::{
    self, CertDataType, CertificationData, QuoteBody, QuoteHeader, QuoteParts, SgxReportBody,
    TdReport, Tee, INTEL_QE_VENDOR_ID,
};
use crate::tcb::TcbStatus;
use crate::TrustAnchors;

/// FMSPC of the simulated platform (recognisable, not an Intel FMSPC).
pub const SIM_FMSPC: [u8; 6] = [0xc0, 0xff, 0xe0, 0x00, 0x00, 0x00];
const SIM_PCE_ID: [u8; 2] = [0, 0];
const SIM_COMPONENTS: [u8; 16] = [3, 3, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0];
const SIM_PCE_SVN: u16 = 13;
const SIM_QE_SVN: u16 = 8;
const SIM_TEE_TCB_SVN: [u8; 16] = [5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Certificates are valid 2020-01-01T00:00:00Z ..= 2049-12-31T23:59:59Z.
const CERT_NOT_BEFORE: i64 = 1_577_836_800;
const CERT_NOT_AFTER: i64 = 2_524_607_999;
const FORMAT: &str = "coffer-sim-platform";

/// What the simulated SGX enclave reports. `Default` is an all-zero, non-debug enclave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgxQuoteSpec {
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// Sets ATTRIBUTES.DEBUG.
    pub debug: bool,
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// MISCSELECT.
    pub misc_select: u32,
    /// CONFIGSVN.
    pub config_svn: u16,
    /// CONFIGID.
    pub config_id: [u8; 64],
    /// The quoting enclave and its report.
    pub qe: SimQe,
}

impl Default for SgxQuoteSpec {
    fn default() -> Self {
        SgxQuoteSpec {
            mrenclave: [0; 32],
            mrsigner: [0; 32],
            isv_prod_id: 0,
            isv_svn: 0,
            debug: false,
            report_data: [0; 64],
            misc_select: 0,
            config_svn: 0,
            config_id: [0; 64],
            qe: SimQe::default(),
        }
    }
}

/// What the simulated TD reports. `Default` is all-zero measurements, non-debug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuoteSpec {
    /// MRTD.
    pub mrtd: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// Sets TDATTRIBUTES.DEBUG.
    pub debug: bool,
    /// SEAMATTRIBUTES of the TDX module (zero on production modules; tests set it to see it
    /// refused).
    pub seam_attributes: [u8; 8],
    /// The TDX module's minor version (TEE_TCB_SVN byte 1): 0 matches `tdxModule`, 1 the
    /// collateral's module identity `TDX_01`.
    pub module_version: u8,
    /// A TD 1.5 report (quote version 5, body type 3) with this TEE_TCB_SVN2 and MRSERVICETD;
    /// `None`: a TD 1.0 report in a version 4 quote.
    pub td15: Option<([u8; 16], [u8; 48])>,
    /// The quoting enclave and its report.
    pub qe: SimQe,
}

/// What the simulated quoting enclave puts in a quote; `Default` is Intel's vendor ID and a
/// production QE that matches the simulated QE identity. Tests change it to see it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimQe {
    /// QE vendor ID in the quote header.
    pub vendor_id: [u8; 16],
    /// Sets the QE report's ATTRIBUTES.DEBUG.
    pub debug: bool,
}

impl Default for SimQe {
    fn default() -> Self {
        SimQe {
            vendor_id: INTEL_QE_VENDOR_ID,
            debug: false,
        }
    }
}

impl Default for TdxQuoteSpec {
    fn default() -> Self {
        TdxQuoteSpec {
            mrtd: [0; 48],
            rtmr: [[0; 48]; 4],
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            report_data: [0; 64],
            debug: false,
            seam_attributes: [0; 8],
            module_version: 0,
            td15: None,
            qe: SimQe::default(),
        }
    }
}

/// Knobs for simulated collateral (tests of callers' policy: out-of-date platforms, revoked
/// PCK certificates, short validity).
#[derive(Debug, Clone)]
pub struct SimCollateralOptions {
    /// Status of the TCB level the platform matches.
    pub platform_status: TcbStatus,
    /// Advisory IDs of that level.
    pub platform_advisories: Vec<String>,
    /// Status of the QE identity level the QE matches (UpToDate, OutOfDate or Revoked).
    pub qe_status: TcbStatus,
    /// List the PCK leaf certificate in the PCK CRL.
    pub revoke_pck: bool,
    /// Publish only TCB levels above the simulated platform's (PCK components + 1), so no
    /// platform level matches.
    pub platform_below_all_levels: bool,
    /// Publish only QE levels above the simulated QE's ISVSVN.
    pub qe_below_all_levels: bool,
    /// TCB info / QE identity / CRLs are issued at `now - valid_before` …
    pub valid_before_secs: i64,
    /// … and valid until `now + valid_after_secs`.
    pub valid_after_secs: i64,
    /// TDX: publish a `tdxModule` whose MRSIGNERSEAM is not the module's, beside a module
    /// identity that is right (the identity must be what counts).
    pub stale_tdx_module: bool,
    /// Serial numbers the root CA CRL lists (see [`SERIALS`]).
    pub root_crl_revokes: Vec<u64>,
    /// Issue both CRLs without nextUpdate.
    pub crls_without_next_update: bool,
    /// Issue both CRLs without the Authority Key Identifier extension.
    pub crls_without_authority_key_id: bool,
    /// Edits the TCB info JSON before it is signed, so tests can publish any content under a
    /// valid signature.
    pub edit_tcb_info: Option<fn(&mut serde_json::Value)>,
    /// Edits the QE identity JSON before it is signed.
    pub edit_qe_identity: Option<fn(&mut serde_json::Value)>,
}

/// Serial numbers of the simulated certificates: root CA, PCK CA, PCK leaf, TCB signing.
pub const SERIALS: SimSerials = SimSerials {
    root_ca: 0x1001,
    pck_ca: 0x2001,
    pck: PCK_SERIAL,
    tcb_signing: 0x3001,
};

/// See [`SERIALS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimSerials {
    /// The root CA's.
    pub root_ca: u64,
    /// The PCK CA's.
    pub pck_ca: u64,
    /// The PCK leaf's.
    pub pck: u64,
    /// The TCB signing certificate's.
    pub tcb_signing: u64,
}

impl Default for SimCollateralOptions {
    fn default() -> Self {
        SimCollateralOptions {
            platform_status: TcbStatus::UpToDate,
            platform_advisories: Vec::new(),
            qe_status: TcbStatus::UpToDate,
            revoke_pck: false,
            platform_below_all_levels: false,
            qe_below_all_levels: false,
            valid_before_secs: 3600,
            valid_after_secs: 30 * 24 * 3600,
            stale_tdx_module: false,
            root_crl_revokes: Vec::new(),
            crls_without_next_update: false,
            crls_without_authority_key_id: false,
            edit_tcb_info: None,
            edit_qe_identity: None,
        }
    }
}

/// A simulated SGX/TDX platform. `Debug` shows no key material.
#[derive(Clone)]
pub struct SimPlatform {
    seed: [u8; 32],
    root_key: SigningKey,
    pck_ca_key: SigningKey,
    pck_key: SigningKey,
    tcb_key: SigningKey,
    att_key: SigningKey,
    root_cert: Vec<u8>,
    pck_ca_cert: Vec<u8>,
    pck_cert: Vec<u8>,
    tcb_cert: Vec<u8>,
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPlatform")
            .field(
                "root_key_sha256",
                &hex::encode(crate::pki::sha256(&point(&self.root_key))),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    format: String,
    version: u32,
    seed: String,
}

fn derive_key(seed: &[u8; 32], label: &str) -> SigningKey {
    let hk = Hkdf::<Sha256>::new(Some(b"coffer-sim-platform/v1"), seed);
    let mut counter = 0u32;
    loop {
        let mut okm = [0u8; 32];
        let info = format!("{label}/{counter}");
        // 32 bytes is far below HKDF-SHA-256's output limit.
        if hk.expand(info.as_bytes(), &mut okm).is_ok() {
            if let Ok(k) = SigningKey::from_slice(&okm) {
                return k;
            }
        }
        counter += 1;
    }
}

fn point(k: &SigningKey) -> Vec<u8> {
    k.verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

fn sign_der(k: &SigningKey, msg: &[u8]) -> Vec<u8> {
    let s: Signature = k.sign(msg);
    s.to_der().as_bytes().to_vec()
}

fn sign_raw(k: &SigningKey, msg: &[u8]) -> [u8; 64] {
    let s: Signature = k.sign(msg);
    let mut out = [0u8; 64];
    out.copy_from_slice(&s.to_bytes());
    out
}

mod der {
    pub(super) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = content.len();
        if n < 0x80 {
            v.push(n as u8);
        } else if n < 0x100 {
            v.extend_from_slice(&[0x81, n as u8]);
        } else {
            v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(content);
        v
    }
    pub(super) fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }
    pub(super) fn set(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x31, &parts.concat())
    }
    pub(super) fn oid(bytes: &[u8]) -> Vec<u8> {
        tlv(0x06, bytes)
    }
    pub(super) fn uint(n: u64) -> Vec<u8> {
        let b = n.to_be_bytes();
        let i = b.iter().position(|&x| x != 0).unwrap_or(7);
        let mut c = b[i..].to_vec();
        if c[0] & 0x80 != 0 {
            c.insert(0, 0);
        }
        tlv(0x02, &c)
    }
    pub(super) fn octet(b: &[u8]) -> Vec<u8> {
        tlv(0x04, b)
    }
    pub(super) fn bits(b: &[u8]) -> Vec<u8> {
        let mut c = vec![0u8];
        c.extend_from_slice(b);
        tlv(0x03, &c)
    }
    pub(super) fn time(t: i64) -> Vec<u8> {
        let d = time::OffsetDateTime::from_unix_timestamp(t.clamp(0, 253_402_300_799))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let (y, m, dd) = (d.year(), u8::from(d.month()), d.day());
        let (h, mi, s) = (d.hour(), d.minute(), d.second());
        if (1950..2050).contains(&y) {
            let s = format!("{:02}{m:02}{dd:02}{h:02}{mi:02}{s:02}Z", y % 100);
            tlv(0x17, s.as_bytes())
        } else {
            let s = format!("{y:04}{m:02}{dd:02}{h:02}{mi:02}{s:02}Z");
            tlv(0x18, s.as_bytes())
        }
    }
    pub(super) fn name(cn: &str) -> Vec<u8> {
        let attr = |oid_bytes: &[u8], tag: u8, v: &str| {
            set(&[seq(&[oid(oid_bytes), tlv(tag, v.as_bytes())])])
        };
        seq(&[
            attr(&[0x55, 0x04, 0x03], 0x0c, cn),
            attr(&[0x55, 0x04, 0x0a], 0x0c, "Coffer Simulated"),
            attr(&[0x55, 0x04, 0x06], 0x13, "ZZ"),
        ])
    }
    pub(super) const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
}

const SGX_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];

fn sgx_oid(suffix: &[u8]) -> Vec<u8> {
    let mut o = SGX_OID.to_vec();
    o.extend_from_slice(suffix);
    der::oid(&o)
}

fn sgx_extension(ppid: &[u8; 16]) -> Vec<u8> {
    use der::*;
    let mut tcb = Vec::new();
    for (i, c) in SIM_COMPONENTS.iter().enumerate() {
        tcb.push(seq(&[sgx_oid(&[2, i as u8 + 1]), uint(u64::from(*c))]));
    }
    tcb.push(seq(&[sgx_oid(&[2, 17]), uint(u64::from(SIM_PCE_SVN))]));
    tcb.push(seq(&[sgx_oid(&[2, 18]), octet(&SIM_COMPONENTS)]));
    seq(&[
        seq(&[sgx_oid(&[1]), octet(ppid)]),
        seq(&[sgx_oid(&[2]), seq(&tcb)]),
        seq(&[sgx_oid(&[3]), octet(&SIM_PCE_ID)]),
        seq(&[sgx_oid(&[4]), octet(&SIM_FMSPC)]),
        seq(&[sgx_oid(&[5]), tlv(0x0a, &[0])]),
    ])
}

struct CertSpec<'a> {
    serial: u64,
    subject: &'a str,
    issuer: &'a str,
    key: &'a SigningKey,
    signer: &'a SigningKey,
    ca: bool,
    sgx_ext: Option<Vec<u8>>,
}

fn build_cert(s: &CertSpec<'_>) -> Vec<u8> {
    use der::*;
    let spki = seq(&[
        seq(&[
            oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        ]),
        bits(&point(s.key)),
    ]);
    let bool_true = tlv(0x01, &[0xff]);
    let basic = if s.ca {
        seq(std::slice::from_ref(&bool_true))
    } else {
        seq(&[])
    };
    let key_usage = if s.ca {
        tlv(0x03, &[0x01, 0x06])
    } else {
        tlv(0x03, &[0x06, 0xc0])
    };
    let mut exts = vec![
        seq(&[oid(&[0x55, 0x1d, 0x13]), bool_true.clone(), octet(&basic)]),
        seq(&[oid(&[0x55, 0x1d, 0x0f]), bool_true, octet(&key_usage)]),
    ];
    if let Some(e) = &s.sgx_ext {
        exts.push(seq(&[oid(SGX_OID), octet(e)]));
    }
    let tbs = seq(&[
        tlv(0xa0, &uint(2)),
        uint(s.serial),
        seq(&[oid(ECDSA_SHA256)]),
        name(s.issuer),
        seq(&[time(CERT_NOT_BEFORE), time(CERT_NOT_AFTER)]),
        name(s.subject),
        spki,
        tlv(0xa3, &seq(&exts)),
    ]);
    let sig = sign_der(s.signer, &tbs);
    seq(&[tbs, seq(&[oid(ECDSA_SHA256)]), bits(&sig)])
}

fn build_crl(
    issuer: &str,
    key: &SigningKey,
    this: i64,
    next: Option<i64>,
    revoked: &[u64],
    authority_key_id: bool,
) -> Vec<u8> {
    use der::*;
    let mut parts = vec![uint(1), seq(&[oid(ECDSA_SHA256)]), name(issuer), time(this)];
    parts.extend(next.map(time));
    if !revoked.is_empty() {
        let entries: Vec<Vec<u8>> = revoked
            .iter()
            .map(|s| seq(&[uint(*s), time(this)]))
            .collect();
        parts.push(seq(&entries));
    }
    // CRL Number and Authority Key Identifier: the two extensions Intel's QVL requires.
    let mut exts = vec![seq(&[oid(&[0x55, 0x1d, 0x14]), octet(&uint(1))])];
    if authority_key_id {
        let key_id = &Sha256::digest(point(key))[..20];
        exts.push(seq(&[
            oid(&[0x55, 0x1d, 0x23]),
            octet(&seq(&[tlv(0x80, key_id)])),
        ]));
    }
    parts.push(tlv(0xa0, &seq(&exts)));
    let tbs = seq(&parts);
    let sig = sign_der(key, &tbs);
    seq(&[tbs, seq(&[oid(ECDSA_SHA256)]), bits(&sig)])
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

fn rfc3339(t: i64) -> String {
    crate::error::fmt_time(t)
}

const ROOT_CN: &str = "Coffer Simulated SGX Root CA";
const PCK_CA_CN: &str = "Coffer Simulated SGX PCK Platform CA";
const PCK_CN: &str = "Coffer Simulated SGX PCK Certificate";
const TCB_CN: &str = "Coffer Simulated SGX TCB Signing";
const PCK_SERIAL: u64 = 0x5001;

impl SimPlatform {
    /// Derives the whole platform (keys, certificates) from `seed`.
    pub fn from_seed(seed: [u8; 32]) -> SimPlatform {
        let root_key = derive_key(&seed, "root-ca");
        let pck_ca_key = derive_key(&seed, "pck-ca");
        let pck_key = derive_key(&seed, "pck");
        let tcb_key = derive_key(&seed, "tcb-signing");
        let att_key = derive_key(&seed, "attestation");
        let mut ppid = [0u8; 16];
        ppid.copy_from_slice(&Sha256::digest([&seed[..], b"ppid"].concat())[..16]);
        let root_cert = build_cert(&CertSpec {
            serial: SERIALS.root_ca,
            subject: ROOT_CN,
            issuer: ROOT_CN,
            key: &root_key,
            signer: &root_key,
            ca: true,
            sgx_ext: None,
        });
        let pck_ca_cert = build_cert(&CertSpec {
            serial: SERIALS.pck_ca,
            subject: PCK_CA_CN,
            issuer: ROOT_CN,
            key: &pck_ca_key,
            signer: &root_key,
            ca: true,
            sgx_ext: None,
        });
        let pck_cert = build_cert(&CertSpec {
            serial: PCK_SERIAL,
            subject: PCK_CN,
            issuer: PCK_CA_CN,
            key: &pck_key,
            signer: &pck_ca_key,
            ca: false,
            sgx_ext: Some(sgx_extension(&ppid)),
        });
        let tcb_cert = build_cert(&CertSpec {
            serial: SERIALS.tcb_signing,
            subject: TCB_CN,
            issuer: ROOT_CN,
            key: &tcb_key,
            signer: &root_key,
            ca: false,
            sgx_ext: None,
        });
        SimPlatform {
            seed,
            root_key,
            pck_ca_key,
            pck_key,
            tcb_key,
            att_key,
            root_cert,
            pck_ca_cert,
            pck_cert,
            tcb_cert,
        }
    }

    /// The persisted form (JSON with the seed). Holds private key material: store it 0600.
    pub fn to_bytes(&self) -> Vec<u8> {
        let p = Persisted {
            format: FORMAT.into(),
            version: 1,
            seed: hex::encode(self.seed),
        };
        serde_json::to_vec_pretty(&p).unwrap_or_default()
    }

    /// Reads what [`SimPlatform::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<SimPlatform, Error> {
        if bytes.len() > 64 * 1024 {
            return Err(Error::malformed(Item::SimPlatform, "larger than 64 KiB"));
        }
        let p: Persisted = serde_json::from_slice(bytes)
            .map_err(|e| Error::malformed(Item::SimPlatform, e.to_string()))?;
        if p.format != FORMAT || p.version != 1 {
            return Err(Error::unsupported(
                Item::SimPlatform,
                format!(
                    "format {:?} version {} (expected {FORMAT:?} 1)",
                    p.format, p.version
                ),
            ));
        }
        let seed = crate::collateral::hex_array(&p.seed, Item::SimPlatform, "seed")?;
        Ok(SimPlatform::from_seed(seed))
    }

    /// The same machine's SEV-SNP side: its ARK, ASK, VCEK and reports, derived from the same
    /// seed (RSA key generation: about a second; keep the result).
    pub fn snp(&self) -> SimSnpPlatform {
        SimSnpPlatform::from_seed(self.seed)
    }

    /// The simulated root CA certificate (PEM).
    pub fn root_ca_pem(&self) -> String {
        pem(&self.root_cert)
    }

    /// Anchors that pin the simulated root CA's key.
    pub fn trust_anchors(&self) -> TrustAnchors {
        TrustAnchors::pinned(point(&self.root_key), self.root_cert.clone())
    }

    /// The PCK chain (leaf, PCK CA, root) as PEM, as carried in the quotes.
    pub fn pck_chain_pem(&self) -> String {
        [
            pem(&self.pck_cert),
            pem(&self.pck_ca_cert),
            pem(&self.root_cert),
        ]
        .concat()
    }

    /// SGX collateral valid from `now - 1 h` to `now + 30 days` (TCB info "SGX", QE identity
    /// "QE"). Same as `collateral_for(Tee::Sgx, now)`.
    pub fn collateral(&self, now_unix: i64) -> Collateral {
        self.collateral_for(Tee::Sgx, now_unix)
    }

    /// Collateral for `tee`'s quotes (TDX needs TCB info "TDX" and QE identity "TD_QE").
    pub fn collateral_for(&self, tee: Tee, now_unix: i64) -> Collateral {
        self.collateral_with(tee, now_unix, &SimCollateralOptions::default())
    }

    /// Collateral with chosen statuses, revocation and validity.
    pub fn collateral_with(&self, tee: Tee, now: i64, o: &SimCollateralOptions) -> Collateral {
        let issue = now.saturating_sub(o.valid_before_secs);
        let next = now.saturating_add(o.valid_after_secs);
        let tcb_chain = [pem(&self.tcb_cert), pem(&self.root_cert)].concat();
        let comps = |c: &[u8]| -> Vec<serde_json::Value> {
            c.iter().map(|s| serde_json::json!({ "svn": s })).collect()
        };
        let bump = u8::from(o.platform_below_all_levels);
        let top_comps: Vec<u8> = SIM_COMPONENTS.iter().map(|c| c + bump).collect();
        let low_comps = [bump; 16];
        let mut top = serde_json::json!({
            "tcb": { "sgxtcbcomponents": comps(&top_comps), "pcesvn": SIM_PCE_SVN },
            "tcbDate": rfc3339(CERT_NOT_BEFORE),
            "tcbStatus": o.platform_status.as_str(),
            "advisoryIDs": o.platform_advisories,
        });
        let mut low = serde_json::json!({
            "tcb": { "sgxtcbcomponents": comps(&low_comps), "pcesvn": 1 },
            "tcbDate": rfc3339(CERT_NOT_BEFORE - 86400 * 365),
            "tcbStatus": "OutOfDate",
        });
        let (id, qe_id, qe_prod) = match tee {
            Tee::Sgx => ("SGX", "QE", 1),
            Tee::Tdx => ("TDX", "TD_QE", 2),
        };
        let mut info = serde_json::json!({
            "id": id,
            "version": 3,
            "issueDate": rfc3339(issue),
            "nextUpdate": rfc3339(next),
            "fmspc": hex::encode_upper(SIM_FMSPC),
            "pceId": hex::encode_upper(SIM_PCE_ID),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
        });
        if tee == Tee::Tdx {
            top["tcb"]["tdxtcbcomponents"] = comps(&SIM_TEE_TCB_SVN).into();
            low["tcb"]["tdxtcbcomponents"] = comps(&[0; 16]).into();
            let module = serde_json::json!({
                "mrsigner": hex::encode_upper([0u8; 48]),
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
            });
            info["tdxModule"] = module.clone();
            if o.stale_tdx_module {
                info["tdxModule"]["mrsigner"] = hex::encode_upper([0x11u8; 48]).into();
            }
            let mut ident = module;
            ident["id"] = "TDX_01".into();
            ident["tcbLevels"] = serde_json::json!([
                { "tcb": { "isvsvn": 4 }, "tcbDate": rfc3339(CERT_NOT_BEFORE), "tcbStatus": "UpToDate" }
            ]);
            info["tdxModuleIdentities"] = serde_json::json!([ident]);
        }
        info["tcbLevels"] = serde_json::json!([top, low]);
        if let Some(edit) = o.edit_tcb_info {
            edit(&mut info);
        }
        let tcb_info = info.to_string();
        let qe_bump = if o.qe_below_all_levels {
            SIM_QE_SVN + 1
        } else {
            0
        };
        let mut qe = serde_json::json!({
            "id": qe_id,
            "version": 2,
            "issueDate": rfc3339(issue),
            "nextUpdate": rfc3339(next),
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": hex::encode_upper(sim_qe_mrsigner()),
            "isvprodid": qe_prod,
            "tcbLevels": [
                { "tcb": { "isvsvn": qe_bump + SIM_QE_SVN }, "tcbDate": rfc3339(CERT_NOT_BEFORE), "tcbStatus": o.qe_status.as_str() },
                { "tcb": { "isvsvn": qe_bump }, "tcbDate": rfc3339(CERT_NOT_BEFORE - 86400 * 365), "tcbStatus": "OutOfDate" },
            ],
        });
        if let Some(edit) = o.edit_qe_identity {
            edit(&mut qe);
        }
        let qe = qe.to_string();
        let revoked: &[u64] = if o.revoke_pck { &[PCK_SERIAL] } else { &[] };
        let crl_next = (!o.crls_without_next_update).then_some(next);
        Collateral {
            pck_crl_issuer_chain: [pem(&self.pck_ca_cert), pem(&self.root_cert)].concat(),
            root_ca_crl: build_crl(
                ROOT_CN,
                &self.root_key,
                issue,
                crl_next,
                &o.root_crl_revokes,
                !o.crls_without_authority_key_id,
            ),
            pck_crl: build_crl(
                PCK_CA_CN,
                &self.pck_ca_key,
                issue,
                crl_next,
                revoked,
                !o.crls_without_authority_key_id,
            ),
            tcb_info_issuer_chain: tcb_chain.clone(),
            tcb_info_signature: sign_raw(&self.tcb_key, tcb_info.as_bytes()).to_vec(),
            tcb_info,
            qe_identity_issuer_chain: tcb_chain,
            qe_identity_signature: sign_raw(&self.tcb_key, qe.as_bytes()).to_vec(),
            qe_identity: qe,
        }
    }

    fn header(&self, version: u16, tee_type: u32, qe: &SimQe) -> QuoteHeader {
        let mut user_data = [0u8; 20];
        user_data[..16].copy_from_slice(&Sha256::digest([&self.seed[..], b"qe-id"].concat())[..16]);
        QuoteHeader {
            version,
            att_key_type: quote::ATT_KEY_TYPE_ECDSA_P256,
            tee_type,
            qe_svn: if version == 3 { SIM_QE_SVN } else { 0 },
            pce_svn: if version == 3 { SIM_PCE_SVN } else { 0 },
            qe_vendor_id: qe.vendor_id,
            user_data,
        }
    }

    fn finish_quote(
        &self,
        header: QuoteHeader,
        body: QuoteBody,
        tee: Tee,
        sim_qe: &SimQe,
    ) -> Vec<u8> {
        let signed = QuoteParts {
            header: &header,
            body: &body,
        }
        .signed_region();
        let att_pub = point(&self.att_key);
        let mut att = [0u8; 64];
        att.copy_from_slice(&att_pub[1..]);
        let auth: Vec<u8> = (0u8..32).collect();
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&Sha256::digest([&att[..], &auth[..]].concat()));
        let qe = SgxReportBody {
            cpu_svn: SIM_COMPONENTS,
            misc_select: 0,
            isv_ext_prod_id: [0; 16],
            attributes: {
                let mut a = [0u8; 16];
                a[0] = 0x11 | if sim_qe.debug { 0x02 } else { 0 };
                a[8] = 0xe7;
                a
            },
            mr_enclave: Sha256::digest(b"Coffer Simulated QE").into(),
            mr_signer: sim_qe_mrsigner(),
            config_id: [0; 64],
            isv_prod_id: if tee == Tee::Sgx { 1 } else { 2 },
            isv_svn: SIM_QE_SVN,
            config_svn: 0,
            isv_family_id: [0; 16],
            report_data: rd,
        }
        .to_bytes();
        let qe_sig = sign_raw(&self.pck_key, &qe);
        let sig = sign_raw(&self.att_key, &signed);
        let mut chain = self.pck_chain_pem().into_bytes();
        chain.push(0);
        let cert = CertificationData {
            cert_type: CertDataType::PCK_CERT_CHAIN,
            data: chain,
        };
        quote::assemble(
            signed,
            header.version >= 4,
            &sig,
            &att,
            &qe,
            &qe_sig,
            &auth,
            &cert,
        )
    }

    /// An SGX quote (DCAP v3 bytes) for the enclave described by `spec`.
    pub fn sgx_quote(&self, spec: &SgxQuoteSpec) -> Vec<u8> {
        let mut attributes = [0u8; 16];
        attributes[0] = 0x05 | if spec.debug { 0x02 } else { 0 }; // INIT | MODE64 [| DEBUG]
        attributes[8] = 0x03; // XFRM: x87, SSE
        let body = QuoteBody::Sgx(SgxReportBody {
            cpu_svn: SIM_COMPONENTS,
            misc_select: spec.misc_select,
            isv_ext_prod_id: [0; 16],
            attributes,
            mr_enclave: spec.mrenclave,
            mr_signer: spec.mrsigner,
            config_id: spec.config_id,
            isv_prod_id: spec.isv_prod_id,
            isv_svn: spec.isv_svn,
            config_svn: spec.config_svn,
            isv_family_id: [0; 16],
            report_data: spec.report_data,
        });
        let header = self.header(3, quote::TEE_TYPE_SGX, &spec.qe);
        self.finish_quote(header, body, Tee::Sgx, &spec.qe)
    }

    /// A TDX quote for the TD described by `spec`: v4 with a TD 1.0 body, or v5 with a TD 1.5
    /// body when `spec.td15` is set.
    pub fn tdx_quote(&self, spec: &TdxQuoteSpec) -> Vec<u8> {
        let mut td_attributes = [0u8; 8];
        td_attributes[0] = u8::from(spec.debug);
        td_attributes[3] = 0x10; // SEPT_VE_DISABLE
        let mut mr_seam = [0u8; 48];
        mr_seam[..32].copy_from_slice(&Sha256::digest(b"Coffer Simulated TDX module"));
        let mut tee_tcb_svn = SIM_TEE_TCB_SVN;
        tee_tcb_svn[1] = spec.module_version;
        let body = QuoteBody::Td(TdReport {
            tee_tcb_svn,
            mr_seam,
            mr_signer_seam: [0; 48],
            seam_attributes: spec.seam_attributes,
            td_attributes,
            xfam: [0xe7, 0x02, 0x06, 0, 0, 0, 0, 0],
            mr_td: spec.mrtd,
            mr_config_id: spec.mrconfigid,
            mr_owner: spec.mrowner,
            mr_owner_config: spec.mrownerconfig,
            rtmr: spec.rtmr,
            report_data: spec.report_data,
            tee_tcb_svn2: spec.td15.map(|(svn2, _)| svn2),
            mr_service_td: spec.td15.map(|(_, st)| st),
        });
        let version = if spec.td15.is_some() { 5 } else { 4 };
        let header = self.header(version, quote::TEE_TYPE_TDX, &spec.qe);
        self.finish_quote(header, body, Tee::Tdx, &spec.qe)
    }
}

/// MRSIGNER of the simulated quoting enclave.
fn sim_qe_mrsigner() -> [u8; 32] {
    Sha256::digest(b"Coffer Simulated QE signer").into()
}
