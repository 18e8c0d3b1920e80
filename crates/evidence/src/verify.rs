//! The verification pipeline and the verified-collateral cache.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cache::{item_key, lock, memo, Lru, Recent};
use crate::collateral::{Collateral, QeIdentity, TcbInfo};
use crate::error::{Error, Item};
use crate::pki::{self, Cert, Crl, Role, SgxExtension, TrustAnchors, Window};
use crate::quote::{CertDataType, Quote, QuoteBody, Tee, INTEL_QE_VENDOR_ID};
use crate::tcb::{self, TcbStatus};

/// What a verified quote proves: which TEE, running what, with which report data, on a
/// platform whose TCB Intel rates `tcb_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// SGX or TDX.
    pub tee: Tee,
    /// Quote format version (3, 4, 5).
    pub quote_version: u16,
    /// The measured identity of the enclave / TD.
    pub measurement: Measurement,
    /// The 64 bytes of report data, now authenticated.
    #[serde(with = "hexser")]
    pub report_data: [u8; 64],
    /// The platform's FMSPC (from the PCK certificate).
    #[serde(with = "hexser")]
    pub fmspc: [u8; 6],
    /// Platform and QE TCB status merged as Intel's QVL does.
    pub tcb_status: TcbStatus,
    /// Advisory IDs of the matched platform, TDX module and QE levels (de-duplicated).
    pub advisory_ids: Vec<String>,
    /// Start of the window in which every checked item is valid (Unix seconds).
    pub collateral_not_before: i64,
    /// End of that window (Unix seconds): re-verify with fresh collateral after it.
    pub collateral_not_after: i64,
    /// `tcbDate` of the matched platform TCB level (RFC 3339, as Intel publishes it).
    pub tcb_date: String,
    /// The collateral's `tcbEvaluationDataNumber` (the lower of TCB info's and QE identity's):
    /// which TCB recovery the collateral reflects; a policy can require a minimum.
    pub tcb_evaluation_data_number: u32,
}

/// The measured identity in a verified quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "tee", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // one value per verification
pub enum Measurement {
    /// An SGX enclave.
    Sgx(SgxMeasurement),
    /// A TDX trust domain.
    Tdx(TdxMeasurement),
}

impl Measurement {
    /// Whether the enclave / TD runs in debug mode (its memory is readable by the host).
    pub fn debug(&self) -> bool {
        match self {
            Measurement::Sgx(m) => m.debug,
            Measurement::Tdx(m) => m.debug,
        }
    }
}

/// SGX enclave identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgxMeasurement {
    /// MRENCLAVE.
    #[serde(with = "hexser")]
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    #[serde(with = "hexser")]
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// ATTRIBUTES (flags ‖ XFRM).
    #[serde(with = "hexser")]
    pub attributes: [u8; 16],
    /// ATTRIBUTES.DEBUG.
    pub debug: bool,
    /// MISCSELECT.
    pub miscselect: u32,
}

/// TDX trust domain identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxMeasurement {
    /// MRTD.
    #[serde(with = "hexser")]
    pub mrtd: [u8; 48],
    /// RTMR0..3.
    #[serde(with = "hexser::rtmr")]
    pub rtmr: [[u8; 48]; 4],
    /// MRCONFIGID.
    #[serde(with = "hexser")]
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    #[serde(with = "hexser")]
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    #[serde(with = "hexser")]
    pub mrownerconfig: [u8; 48],
    /// TDATTRIBUTES.
    #[serde(with = "hexser")]
    pub td_attributes: [u8; 8],
    /// XFAM: the extended CPU features the TD may use.
    #[serde(with = "hexser")]
    pub xfam: [u8; 8],
    /// MRSEAM: the TDX module's measurement.
    #[serde(with = "hexser")]
    pub mrseam: [u8; 48],
    /// TEE_TCB_SVN: the TDX module's SVNs.
    #[serde(with = "hexser")]
    pub tee_tcb_svn: [u8; 16],
    /// MRSERVICETD (TD 1.5 bodies, quote v5): the service TDs bound to this TD; zero when none.
    #[serde(serialize_with = "hexser::option")]
    pub mrservicetd: Option<[u8; 48]>,
    /// TDATTRIBUTES.DEBUG.
    pub debug: bool,
}

mod hexser {
    use serde::Serializer;
    pub(super) fn serialize<S: Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub(super) fn option<S: Serializer, const N: usize>(
        v: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }
    pub(super) mod rtmr {
        use serde::ser::SerializeSeq;
        use serde::Serializer;
        pub(in super::super) fn serialize<S: Serializer>(
            v: &[[u8; 48]; 4],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(4))?;
            for r in v {
                seq.serialize_element(&hex::encode(r))?;
            }
            seq.end()
        }
    }
}

/// Collateral whose signatures, chains and formats were checked (time is checked per call).
/// Its items are shared: the root CRL, TCB signing chain, QE identity and PCK CRL are the same
/// for every FMSPC, so a [`Verifier`] verifies each of them once.
#[derive(Debug)]
pub(crate) struct VerifiedCollateral {
    tcb_info: Arc<TcbInfo>,
    qe_identity: Arc<QeIdentity>,
    root_crl: Arc<Crl>,
    pck_crl: Arc<Crl>,
    /// PCK CA ‖ root.
    pck_crl_chain: Arc<Vec<Cert>>,
    windows: Vec<Window>,
}

impl VerifiedCollateral {
    fn pck_ca(&self) -> &Cert {
        &self.pck_crl_chain[0]
    }

    fn root_key(&self) -> &[u8] {
        &self.pck_crl_chain[1].key
    }
}

/// A platform (PCK chain + QE report + attestation key) whose signatures were checked.
#[derive(Debug)]
pub(crate) struct VerifiedPlatform {
    chain: Vec<Cert>,
    ext: SgxExtension,
    windows: Vec<Window>,
}

const TCB_CHAIN: [Role; 2] = [
    Role {
        item: Item::TcbSigningCertificate,
        cn_phrase: "SGX TCB Signing",
        ca: false,
    },
    Role {
        item: Item::RootCaCertificate,
        cn_phrase: "SGX Root CA",
        ca: true,
    },
];
const PCK_CRL_CHAIN: [Role; 2] = [
    Role {
        item: Item::PckCaCertificate,
        cn_phrase: "SGX PCK",
        ca: true,
    },
    Role {
        item: Item::RootCaCertificate,
        cn_phrase: "SGX Root CA",
        ca: true,
    },
];
const PCK_CHAIN: [Role; 3] = [
    Role {
        item: Item::PckCertificate,
        cn_phrase: "SGX PCK Certificate",
        ca: false,
    },
    Role {
        item: Item::PckCaCertificate,
        cn_phrase: "SGX PCK",
        ca: true,
    },
    Role {
        item: Item::RootCaCertificate,
        cn_phrase: "SGX Root CA",
        ca: true,
    },
];

/// Verified collateral items, keyed by [`item_key`] of the bytes (and issuer key) each was
/// verified from.
#[derive(Debug)]
struct ItemCache {
    chains: Mutex<Lru<Vec<Cert>>>,
    crls: Mutex<Lru<Crl>>,
    tcb_infos: Mutex<Lru<TcbInfo>>,
    qe_identities: Mutex<Lru<QeIdentity>>,
}

impl ItemCache {
    fn new() -> ItemCache {
        ItemCache {
            chains: Mutex::new(Lru::new(CACHE_CAP)),
            crls: Mutex::new(Lru::new(CACHE_CAP)),
            tcb_infos: Mutex::new(Lru::new(CACHE_CAP)),
            qe_identities: Mutex::new(Lru::new(CACHE_CAP)),
        }
    }

    fn clear(&self) {
        lock(&self.chains).clear();
        lock(&self.crls).clear();
        lock(&self.tcb_infos).clear();
        lock(&self.qe_identities).clear();
    }
}

/// Verifies every collateral item: six signatures (TCB signing certificate, root CA CRL, TCB
/// info, QE identity, PCK CA certificate, PCK CRL) when `cache` is `None` or knows none of
/// them; with a cache, only the items it has not seen.
fn verify_collateral(
    c: &Collateral,
    anchors: &TrustAnchors,
    cache: Option<&ItemCache>,
) -> Result<VerifiedCollateral, Error> {
    let chain = |pem: &str, roles: &'static [Role], tag: &str| {
        memo(
            cache.map(|c| &c.chains),
            || item_key(tag, &[pem.as_bytes()]),
            || pki::verify_chain(pem, roles, anchors, None),
        )
    };
    let crl = |der: &[u8], item: Item, issuer: &Cert| {
        memo(
            cache.map(|c| &c.crls),
            || item_key(&format!("{item}"), &[der, &issuer.key, &issuer.subject]),
            || Crl::parse_verified(der, item, issuer),
        )
    };
    let tcb_chain = chain(&c.tcb_info_issuer_chain, &TCB_CHAIN, "tcb-chain")?;
    let root = &tcb_chain[1];
    let root_crl = crl(&c.root_ca_crl, Item::RootCaCrl, root)?;
    root_crl.check(root, Item::RootCaCertificate)?;
    root_crl.check(&tcb_chain[0], Item::TcbSigningCertificate)?;
    let tcb_info = memo(
        cache.map(|c| &c.tcb_infos),
        || {
            let (info, sig) = (c.tcb_info.as_bytes(), &c.tcb_info_signature[..]);
            item_key("tcb-info", &[info, sig, &tcb_chain[0].key])
        },
        || {
            if !pki::verify_raw(
                &tcb_chain[0].key,
                c.tcb_info.as_bytes(),
                &c.tcb_info_signature,
            ) {
                return Err(Error::BadSignature {
                    item: Item::TcbInfo,
                });
            }
            TcbInfo::from_json(&c.tcb_info)
        },
    )?;

    let qe_chain = if c.qe_identity_issuer_chain == c.tcb_info_issuer_chain {
        tcb_chain.clone()
    } else {
        let qe_chain = chain(&c.qe_identity_issuer_chain, &TCB_CHAIN, "tcb-chain")?;
        same_root(&qe_chain[1], root)?;
        root_crl.check(&qe_chain[0], Item::TcbSigningCertificate)?;
        qe_chain
    };
    let qe_identity = memo(
        cache.map(|c| &c.qe_identities),
        || {
            let (ident, sig) = (c.qe_identity.as_bytes(), &c.qe_identity_signature[..]);
            item_key("qe-identity", &[ident, sig, &qe_chain[0].key])
        },
        || {
            if !pki::verify_raw(
                &qe_chain[0].key,
                c.qe_identity.as_bytes(),
                &c.qe_identity_signature,
            ) {
                return Err(Error::BadSignature {
                    item: Item::QeIdentity,
                });
            }
            QeIdentity::from_json(&c.qe_identity)
        },
    )?;

    let pck_crl_chain = chain(&c.pck_crl_issuer_chain, &PCK_CRL_CHAIN, "pck-crl-chain")?;
    same_root(&pck_crl_chain[1], root)?;
    root_crl.check(&pck_crl_chain[0], Item::PckCaCertificate)?;
    let pck_crl = crl(&c.pck_crl, Item::PckCrl, &pck_crl_chain[0])?;

    let mut windows = pki::windows_of(&tcb_chain, &TCB_CHAIN);
    if !Arc::ptr_eq(&qe_chain, &tcb_chain) {
        windows.extend(pki::windows_of(&qe_chain, &TCB_CHAIN));
    }
    windows.extend(pki::windows_of(&pck_crl_chain, &PCK_CRL_CHAIN));
    windows.push(root_crl.window);
    windows.push(pck_crl.window);
    windows.push(Window {
        item: Item::TcbInfo,
        not_before: tcb_info.issue_date,
        not_after: tcb_info.next_update,
        end_exclusive: false,
    });
    windows.push(Window {
        item: Item::QeIdentity,
        not_before: qe_identity.issue_date,
        not_after: qe_identity.next_update,
        end_exclusive: false,
    });
    Ok(VerifiedCollateral {
        tcb_info,
        qe_identity,
        root_crl,
        pck_crl,
        pck_crl_chain,
        windows,
    })
}

fn same_root(a: &Cert, b: &Cert) -> Result<(), Error> {
    if a.key != b.key {
        return Err(Error::mismatch(
            "root CA",
            "collateral chains end in different roots".to_string(),
        ));
    }
    Ok(())
}

/// Verifies the platform part of a quote: its PCK chain to the pinned root (the PCK CA's
/// signature is not checked again when it is `vc`'s, already verified), the QE report's
/// signature by the PCK leaf, and the QE report's binding of the attestation key.
fn verify_platform(
    q: &Quote,
    anchors: &TrustAnchors,
    vc: &VerifiedCollateral,
) -> Result<VerifiedPlatform, Error> {
    let pem = pck_chain_of(q)?;
    let known = Some((vc.pck_ca(), vc.root_key()));
    let chain = pki::verify_chain(pem, &PCK_CHAIN, anchors, known)?;
    let ext = pki::parse_sgx_extension(chain[0].sgx_ext.as_deref())?;
    if !pki::verify_raw(&chain[0].key, q.qe_report_bytes(), q.qe_report_signature()) {
        return Err(Error::BadSignature {
            item: Item::QeReport,
        });
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(q.attestation_key());
    ctx.update(q.qe_auth_data());
    let expected = ctx.finish();
    if q.qe_report().report_data.get(..32) != Some(expected.as_ref()) {
        return Err(Error::QeReportDataMismatch);
    }
    let windows = pki::windows_of(&chain, &PCK_CHAIN);
    Ok(VerifiedPlatform {
        chain,
        ext,
        windows,
    })
}

/// The quote's PCK chain. Like Intel's QvE, only certification data type 5 (the PEM chain) is
/// accepted: the other types (PPID, encrypted or not) name a platform without proving it.
fn pck_chain_of(q: &Quote) -> Result<&str, Error> {
    let t = q.certification_data().cert_type;
    if t != CertDataType::PCK_CERT_CHAIN {
        return Err(Error::unsupported(
            Item::Quote,
            format!(
                "certification data type {t}: only type 5 (PCK certificate chain) is accepted, \
                 as by Intel's QvE; configure the quote provider to embed the PCK chain"
            ),
        ));
    }
    q.pck_chain_pem().ok_or_else(|| {
        Error::malformed(
            Item::PckCertificate,
            "certification data type 5 is not PEM text",
        )
    })
}

/// Of the windows that exclude `now`, names the one that expired first (or, before every
/// window, the one that starts last), so the error points at the item to refresh.
fn check_windows<'a>(windows: impl Iterator<Item = &'a Window>, now: i64) -> Result<(), Error> {
    let mut expired: Option<&Window> = None;
    let mut early: Option<&Window> = None;
    for w in windows {
        if w.check(now).is_ok() {
            continue;
        }
        if now < w.not_before {
            if early.is_none_or(|e| w.not_before > e.not_before) {
                early = Some(w);
            }
        } else if expired.is_none_or(|e| w.not_after < e.not_after) {
            expired = Some(w);
        }
    }
    match expired.or(early) {
        Some(w) => w.check(now),
        None => Ok(()),
    }
}

fn masked_eq(a: &[u8], b: &[u8], mask: &[u8]) -> bool {
    a.len() == b.len()
        && a.len() == mask.len()
        && a.iter().zip(b).zip(mask).all(|((x, y), m)| x & m == y & m)
}

/// Checks that need no cache: time, revocation, the quote signature, QE identity, TCB info
/// match, TCB level; builds the result.
fn finish(
    q: &Quote,
    vc: &VerifiedCollateral,
    vp: &VerifiedPlatform,
    now: i64,
) -> Result<Verified, Error> {
    // Chain consistency with this collateral.
    if vp.chain[2].key != vc.root_key() {
        return Err(Error::mismatch(
            "root CA",
            "the PCK chain and the collateral end in different roots",
        ));
    }
    let pck_ca = vc.pck_ca();
    if vp.chain[1].key != pck_ca.key || vp.chain[1].subject != pck_ca.subject {
        return Err(Error::mismatch(
            "PCK CRL issuer",
            format!(
                "the PCK certificate is issued by {:?} but the PCK CRL by {:?}",
                vp.chain[1].subject_cn, pck_ca.subject_cn
            ),
        ));
    }
    // The quote signature (attestation key, SEC1 uncompressed).
    let mut key = [0u8; 65];
    key[0] = 0x04;
    key[1..].copy_from_slice(q.attestation_key());
    if !pki::verify_raw(&key, q.signed_bytes(), q.signature()) {
        return Err(Error::BadSignature {
            item: Item::QuoteSignature,
        });
    }
    check_windows(vc.windows.iter().chain(vp.windows.iter()), now)?;
    vc.root_crl.check(&vp.chain[1], Item::PckCaCertificate)?;
    vc.pck_crl.check(&vp.chain[0], Item::PckCertificate)?;

    if q.header().qe_vendor_id != INTEL_QE_VENDOR_ID {
        return Err(Error::mismatch(
            "QE vendor ID",
            format!("{} is not Intel's", hex::encode(q.header().qe_vendor_id)),
        ));
    }
    let tee = q.tee();
    // QE identity.
    let qi = &vc.qe_identity;
    let want_qe = match tee {
        Tee::Sgx => "QE",
        Tee::Tdx => "TD_QE",
    };
    if qi.id != want_qe {
        return Err(Error::mismatch(
            "QE identity id",
            format!("{tee} quote needs {want_qe:?}, collateral has {:?}", qi.id),
        ));
    }
    let qe = q.qe_report();
    if qe.mr_signer != qi.mrsigner {
        return Err(Error::mismatch(
            "QE identity MRSIGNER",
            format!(
                "QE report {} != {}",
                hex::encode(qe.mr_signer),
                hex::encode(qi.mrsigner)
            ),
        ));
    }
    if qe.isv_prod_id != qi.isv_prod_id {
        return Err(Error::mismatch(
            "QE identity ISVPRODID",
            format!("QE report {} != {}", qe.isv_prod_id, qi.isv_prod_id),
        ));
    }
    if !masked_eq(
        &qe.misc_select.to_le_bytes(),
        &qi.miscselect,
        &qi.miscselect_mask,
    ) {
        return Err(Error::mismatch(
            "QE identity MISCSELECT",
            format!("QE report {:08x} under mask", qe.misc_select),
        ));
    }
    if !masked_eq(&qe.attributes, &qi.attributes, &qi.attributes_mask) {
        return Err(Error::mismatch(
            "QE identity ATTRIBUTES",
            format!("QE report {} under mask", hex::encode(qe.attributes)),
        ));
    }
    if qe.debug() {
        return Err(Error::mismatch(
            "QE identity",
            "the quoting enclave runs in debug mode",
        ));
    }
    let qe_level =
        tcb::select_qe_level(&qi.tcb_levels, qe.isv_svn).ok_or_else(|| Error::TcbNotMatched {
            detail: format!("no QE identity level for QE ISVSVN {}", qe.isv_svn),
        })?;
    let qe_status = tcb::qe_status(qe_level);

    // TCB info.
    let ti = &vc.tcb_info;
    let want_id = match tee {
        Tee::Sgx => "SGX",
        Tee::Tdx => "TDX",
    };
    if ti.id != want_id {
        return Err(Error::mismatch(
            "TCB info id",
            format!(
                "{tee} quote needs {want_id:?} TCB info, collateral has {:?}",
                ti.id
            ),
        ));
    }
    if ti.fmspc != vp.ext.fmspc {
        return Err(Error::mismatch(
            "FMSPC",
            format!(
                "PCK certificate {} != TCB info {}",
                hex::encode(vp.ext.fmspc),
                hex::encode(ti.fmspc)
            ),
        ));
    }
    if ti.pce_id != vp.ext.pce_id {
        return Err(Error::mismatch(
            "PCE-ID",
            format!(
                "PCK certificate {} != TCB info {}",
                hex::encode(vp.ext.pce_id),
                hex::encode(ti.pce_id)
            ),
        ));
    }
    let sgx_level = tcb::select_sgx_level(&ti.tcb_levels, &vp.ext.comp_svn, vp.ext.pce_svn)
        .ok_or_else(|| Error::TcbNotMatched {
            detail: format!(
                "no TCB info level for PCK TCB components {} PCESVN {}",
                hex::encode(vp.ext.comp_svn),
                vp.ext.pce_svn
            ),
        })?;
    let mut advisories: Vec<String> = Vec::new();
    let add = |adv: &mut Vec<String>, ids: &[String]| {
        for id in ids {
            if !adv.contains(id) {
                adv.push(id.clone());
            }
        }
    };
    let (measurement, report_data, platform_status, tcb_date) = match q.body() {
        QuoteBody::Sgx(b) => {
            add(&mut advisories, &sgx_level.advisory_ids);
            let m = Measurement::Sgx(SgxMeasurement {
                mrenclave: b.mr_enclave,
                mrsigner: b.mr_signer,
                isv_prod_id: b.isv_prod_id,
                isv_svn: b.isv_svn,
                attributes: b.attributes,
                debug: b.debug(),
                miscselect: b.misc_select,
            });
            (
                m,
                b.report_data,
                sgx_level.status,
                sgx_level.tcb_date.clone(),
            )
        }
        QuoteBody::Td(b) => {
            let module = ti
                .tdx_module
                .as_ref()
                .ok_or_else(|| Error::malformed(Item::TcbInfo, "TDX TCB info without tdxModule"))?;
            let module_level = tcb::select_module_level(ti, &b.tee_tcb_svn)?;
            // A module identity for this module version replaces the `tdxModule` values, as
            // in Intel's QVL (`TdxModuleCheck`); `tdxModule` counts only without one.
            match &module_level {
                Some((identity, _)) => check_module(&identity.module, b)?,
                None => check_module(module, b)?,
            }
            let tdx_level = tcb::select_tdx_level(
                &ti.tcb_levels,
                &vp.ext.comp_svn,
                vp.ext.pce_svn,
                &b.tee_tcb_svn,
            )
            .ok_or_else(|| Error::TcbNotMatched {
                detail: format!(
                    "no TCB info level for TEE_TCB_SVN {} with PCK TCB components {} PCESVN {}",
                    hex::encode(b.tee_tcb_svn),
                    hex::encode(vp.ext.comp_svn),
                    vp.ext.pce_svn
                ),
            })?;
            add(&mut advisories, &tdx_level.advisory_ids);
            let mut status = tdx_level.status;
            let mut module_status = None;
            if let Some((_, level)) = module_level {
                add(&mut advisories, &level.advisory_ids);
                status = tcb::converge_tdx_module(status, level.status);
                module_status = Some(level.status);
            }
            if let Some(svn2) = &b.tee_tcb_svn2 {
                if let Some(r) = tcb::td_relaunch(&tcb::RelaunchInput {
                    info: ti,
                    qe: qe_status,
                    sgx_status: sgx_level.status,
                    tdx_status: status,
                    module_status,
                    tee_tcb_svn2: svn2,
                })? {
                    status = r;
                }
            }
            let m = Measurement::Tdx(TdxMeasurement {
                mrtd: b.mr_td,
                rtmr: b.rtmr,
                mrconfigid: b.mr_config_id,
                mrowner: b.mr_owner,
                mrownerconfig: b.mr_owner_config,
                td_attributes: b.td_attributes,
                xfam: b.xfam,
                mrseam: b.mr_seam,
                tee_tcb_svn: b.tee_tcb_svn,
                mrservicetd: b.mr_service_td,
                debug: b.debug(),
            });
            (m, b.report_data, status, tdx_level.tcb_date.clone())
        }
    };
    add(&mut advisories, &qe_level.advisory_ids);
    let tcb_status = tcb::converge_qe(platform_status, qe_status);

    let windows = vc.windows.iter().chain(vp.windows.iter());
    let collateral_not_before = windows
        .clone()
        .map(|w| w.not_before)
        .max()
        .unwrap_or(i64::MIN);
    let collateral_not_after = windows.map(|w| w.not_after).min().unwrap_or(i64::MAX);
    Ok(Verified {
        tee,
        quote_version: q.version(),
        measurement,
        report_data,
        fmspc: vp.ext.fmspc,
        tcb_status,
        advisory_ids: advisories,
        collateral_not_before,
        collateral_not_after,
        tcb_date,
        tcb_evaluation_data_number: ti
            .tcb_evaluation_data_number
            .min(qi.tcb_evaluation_data_number),
    })
}

fn check_module(m: &crate::collateral::TdxModule, b: &crate::quote::TdReport) -> Result<(), Error> {
    // Intel's QVL refuses any non-zero SEAMATTRIBUTES (a debug or otherwise non-production TDX
    // module), whatever the collateral's mask says.
    if b.seam_attributes != [0; 8] {
        return Err(Error::mismatch(
            "TDX module SEAMATTRIBUTES",
            format!(
                "{} is not zero: not a production TDX module",
                hex::encode(b.seam_attributes)
            ),
        ));
    }
    if m.mrsigner != b.mr_signer_seam {
        return Err(Error::mismatch(
            "TDX module MRSIGNERSEAM",
            format!(
                "{} != TCB info {}",
                hex::encode(b.mr_signer_seam),
                hex::encode(m.mrsigner)
            ),
        ));
    }
    if !masked_eq(&b.seam_attributes, &m.attributes, &m.attributes_mask) {
        return Err(Error::mismatch(
            "TDX module SEAMATTRIBUTES",
            format!(
                "{} under mask {}",
                hex::encode(b.seam_attributes),
                hex::encode(m.attributes_mask)
            ),
        ));
    }
    Ok(())
}

/// Verifies `quote` against `collateral` with chains ending in `anchors`, at `now_unix`
/// (seconds). Nothing is cached and nothing is hashed for a cache: nine ECDSA verifications
/// (six for the collateral, three for the platform and quote). See the crate docs for the list
/// of checks; use [`Verifier`] to verify many quotes.
pub fn verify(
    quote: &[u8],
    collateral: &Collateral,
    anchors: &TrustAnchors,
    now_unix: i64,
) -> Result<Verified, Error> {
    let q = Quote::parse(quote)?;
    let vc = verify_collateral(collateral, anchors, None)?;
    let vp = verify_platform(&q, anchors, &vc)?;
    finish(&q, &vc, &vp, now_unix)
}

/// Entries per cache (items of each kind, platforms, collateral sets).
const CACHE_CAP: usize = 256;

/// A verifier that remembers what it verified, so repeated work costs no signature:
///
/// - **collateral sets**, most recently used first: found by identity when passed as the same
///   `Arc` ([`Verifier::verify_shared`]), else by equal bytes ([`Verifier::verify`]), which
///   reads each byte once and is cheaper than hashing them;
/// - **collateral items** (chains, CRLs, TCB info, QE identity), keyed by SHA-256 of their
///   bytes and issuer key: a new FMSPC's collateral shares its root CRL, TCB signing chain, QE
///   identity and PCK CRL with every other, so it costs one signature (its TCB info);
/// - **platforms** (PCK chain, QE report signature and attestation-key binding), keyed by the
///   chain's DER certificates, not its PEM text, so a re-encoded chain is the same platform;
///   the most recent ones also by the quote's bytes, found before anything is decoded.
///
/// Items and platforms are kept least-recently-used, [`CACHE_CAP`] of each; sets and recent
/// platforms, [`SET_CAP`].
/// Cached items still have their validity checked at every call's `now`, revocation is
/// re-checked against the collateral of the call, and the quote signature is always verified.
/// Thread-safe; share it behind an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    anchors: TrustAnchors,
    items: ItemCache,
    sets: Mutex<Recent<Arc<Collateral>, VerifiedCollateral>>,
    recent: Mutex<Recent<RawPlatform, VerifiedPlatform>>,
    platforms: Mutex<Lru<VerifiedPlatform>>,
}

/// Collateral sets remembered whole (a Coordinator holds one per FMSPC and TEE kind), and
/// platforms remembered by their bytes.
const SET_CAP: usize = 16;

/// Whether two collateral sets are the same bytes. The signatures differ between any two TCB
/// infos or QE identities, so sets of other platforms are told apart in the first bytes.
fn same_collateral(a: &Collateral, b: &Collateral) -> bool {
    a.tcb_info_signature == b.tcb_info_signature
        && a.qe_identity_signature == b.qe_identity_signature
        && a == b
}

impl Verifier {
    /// A verifier for chains ending in `anchors`, with empty caches.
    pub fn new(anchors: TrustAnchors) -> Verifier {
        Verifier {
            anchors,
            items: ItemCache::new(),
            sets: Mutex::new(Recent::new(SET_CAP)),
            recent: Mutex::new(Recent::new(SET_CAP)),
            platforms: Mutex::new(Lru::new(CACHE_CAP)),
        }
    }

    /// The pinned anchors.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Same checks and result as [`verify`]; signatures of already-verified collateral items
    /// and platforms are not checked again.
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: &Collateral,
        now_unix: i64,
    ) -> Result<Verified, Error> {
        let vc = match self.known_set(collateral, None) {
            Some(vc) => vc,
            None => self.verify_set(Arc::new(collateral.clone()))?,
        };
        self.verify_platform_and_quote(quote, &vc, now_unix)
    }

    /// [`Verifier::verify`] for collateral the caller shares: while the caller keeps this
    /// `Arc`, its verified form is found by identity, without reading it. Sound because an
    /// `Arc` we also hold cannot be mutated in place.
    pub fn verify_shared(
        &self,
        quote: &[u8],
        collateral: &Arc<Collateral>,
        now_unix: i64,
    ) -> Result<Verified, Error> {
        let vc = match self.known_set(collateral, Some(collateral)) {
            Some(vc) => vc,
            None => self.verify_set(collateral.clone())?,
        };
        self.verify_platform_and_quote(quote, &vc, now_unix)
    }

    /// The verified form of a remembered set: the `shared` one itself, or one of equal bytes.
    fn known_set(
        &self,
        collateral: &Collateral,
        shared: Option<&Arc<Collateral>>,
    ) -> Option<Arc<VerifiedCollateral>> {
        lock(&self.sets).find(|known| {
            shared.is_some_and(|s| Arc::ptr_eq(known, s)) || same_collateral(known, collateral)
        })
    }

    /// Verifies a set not remembered (its items may be) and remembers it.
    fn verify_set(&self, collateral: Arc<Collateral>) -> Result<Arc<VerifiedCollateral>, Error> {
        let vc = Arc::new(verify_collateral(
            &collateral,
            &self.anchors,
            Some(&self.items),
        )?);
        lock(&self.sets).put(collateral, vc.clone());
        Ok(vc)
    }

    fn verify_platform_and_quote(
        &self,
        quote: &[u8],
        vc: &VerifiedCollateral,
        now_unix: i64,
    ) -> Result<Verified, Error> {
        let q = Quote::parse(quote)?;
        let pem = pck_chain_of(&q)?;
        // The lock is let go before a miss verifies and remembers the platform.
        let known = lock(&self.recent).find(|raw| raw.is_in(&q));
        let vp = match known {
            Some(vp) => vp,
            None => {
                let chain = pki::parse_pem_chain(pem, Item::PckCertificate)?;
                let vp = memo(
                    Some(&self.platforms),
                    || {
                        let mut parts: Vec<&[u8]> = vec![
                            &q.attestation_key()[..],
                            q.qe_report_bytes(),
                            &q.qe_report_signature()[..],
                            q.qe_auth_data(),
                        ];
                        parts.extend(chain.iter().map(Vec::as_slice));
                        item_key("platform", &parts)
                    },
                    || verify_platform(&q, &self.anchors, vc),
                )?;
                lock(&self.recent).put(RawPlatform::of(&q), vp.clone());
                vp
            }
        };
        finish(&q, vc, &vp, now_unix)
    }

    /// Drops every cached item.
    pub fn clear_cache(&self) {
        self.items.clear();
        lock(&self.sets).clear();
        lock(&self.recent).clear();
        lock(&self.platforms).clear();
    }
}

/// A platform as a quote carries it, byte for byte: recently verified platforms are found by
/// these bytes before anything is decoded or hashed.
#[derive(Debug)]
struct RawPlatform {
    qe_report_signature: [u8; 64],
    attestation_key: [u8; 64],
    qe_report: Vec<u8>,
    qe_auth_data: Vec<u8>,
    certification_data: Vec<u8>,
}

impl RawPlatform {
    fn of(q: &Quote) -> RawPlatform {
        RawPlatform {
            qe_report_signature: *q.qe_report_signature(),
            attestation_key: *q.attestation_key(),
            qe_report: q.qe_report_bytes().to_vec(),
            qe_auth_data: q.qe_auth_data().to_vec(),
            certification_data: q.certification_data().data.clone(),
        }
    }

    /// Whether `q` carries this platform. The QE report signature differs between any two
    /// platforms, so it is compared first.
    fn is_in(&self, q: &Quote) -> bool {
        self.qe_report_signature == *q.qe_report_signature()
            && self.attestation_key == *q.attestation_key()
            && self.qe_report == q.qe_report_bytes()
            && self.qe_auth_data == q.qe_auth_data()
            && self.certification_data == q.certification_data().data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(item: Item, nb: i64, na: i64) -> Window {
        Window {
            item,
            not_before: nb,
            not_after: na,
            end_exclusive: false,
        }
    }

    #[test]
    fn the_item_that_expired_first_is_named() {
        let ws = [
            w(Item::TcbInfo, 10, 100),
            w(Item::PckCrl, 20, 50),
            w(Item::QeIdentity, 5, 80),
        ];
        assert!(check_windows(ws.iter(), 30).is_ok());
        assert_eq!(
            check_windows(ws.iter(), 60).unwrap_err().item(),
            Some(Item::PckCrl)
        );
        assert_eq!(
            check_windows(ws.iter(), 90).unwrap_err().item(),
            Some(Item::PckCrl)
        );
        assert_eq!(
            check_windows(ws.iter(), 15).unwrap_err().item(),
            Some(Item::PckCrl)
        );
        assert_eq!(
            check_windows(ws.iter(), 7).unwrap_err().item(),
            Some(Item::PckCrl)
        );
        assert_eq!(
            check_windows(ws.iter(), 1).unwrap_err().item(),
            Some(Item::PckCrl)
        );
        assert_eq!(
            check_windows(ws.iter(), 1).unwrap_err().kind(),
            crate::ErrorKind::Expired
        );
    }

    #[test]
    fn crl_next_update_is_exclusive() {
        let c = Window {
            item: Item::RootCaCrl,
            not_before: 0,
            not_after: 10,
            end_exclusive: true,
        };
        assert!(c.check(9).is_ok());
        assert!(c.check(10).is_err());
        assert!(w(Item::TcbInfo, 0, 10).check(10).is_ok());
    }
}
