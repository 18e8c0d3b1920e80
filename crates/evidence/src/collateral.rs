//! Intel PCS collateral: the container (dcap-qvl JSON shape), TCB info v2/v3 and QE identity v2.
//!
//! TCB info and QE identity are kept as the exact strings Intel signed; they are parsed only
//! after their signature verified (see [`crate::verify`]), and never re-serialised.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Item};
use crate::tcb::TcbStatus;

/// Largest collateral JSON accepted (real collateral is 15–40 KB; CRLs can grow).
pub const MAX_COLLATERAL_LEN: usize = 4 << 20;

/// Verification collateral for one quote, in the JSON shape of the `dcap-qvl` crate
/// (`QuoteCollateralV3`): PEM chains as strings, CRLs as hex DER, TCB info and QE identity as the
/// exact JSON text Intel signed, signatures as hex raw r ‖ s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collateral {
    /// PCK CRL issuer chain (PCK CA ‖ root), PEM.
    pub pck_crl_issuer_chain: String,
    /// Root CA CRL, DER (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub root_ca_crl: Vec<u8>,
    /// PCK CA CRL, DER (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub pck_crl: Vec<u8>,
    /// TCB info issuer chain (TCB Signing ‖ root), PEM.
    pub tcb_info_issuer_chain: String,
    /// The `tcbInfo` JSON object exactly as signed.
    pub tcb_info: String,
    /// ECDSA P-256 signature over `tcb_info`, raw r ‖ s (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub tcb_info_signature: Vec<u8>,
    /// QE identity issuer chain (TCB Signing ‖ root), PEM.
    pub qe_identity_issuer_chain: String,
    /// The `enclaveIdentity` JSON object exactly as signed.
    pub qe_identity: String,
    /// ECDSA P-256 signature over `qe_identity`, raw r ‖ s (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub qe_identity_signature: Vec<u8>,
}

impl Collateral {
    /// Parses collateral JSON (bounded in size; hex fields strictly hex).
    pub fn from_json(bytes: &[u8]) -> Result<Collateral, Error> {
        if bytes.len() > MAX_COLLATERAL_LEN {
            return Err(Error::malformed(
                Item::Collateral,
                format!(
                    "{} bytes is larger than the {MAX_COLLATERAL_LEN}-byte limit",
                    bytes.len()
                ),
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| Error::malformed(Item::Collateral, e.to_string()))
    }

    /// The JSON text (what [`Collateral::from_json`] reads).
    pub fn to_json(&self) -> String {
        // Serialising plain strings and byte vectors cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Splits an Intel PCS response body such as `{"tcbInfo":{…},"signature":"…"}` into the exact
/// text of the signed object (`field`) and the signature hex, without re-serialising anything
/// (the signature covers the bytes as served).
pub fn split_signed_json<'a>(body: &'a str, field: &str) -> Result<(&'a str, &'a str), Error> {
    let bad = |d: &str| Error::malformed(Item::Collateral, format!("PCS body: {d}"));
    let b = body.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(bad("not a JSON object"));
    }
    i += 1;
    let mut signed = None;
    let mut signature = None;
    loop {
        i = skip_ws(b, i);
        if b.get(i) == Some(&b'}') {
            i += 1;
            break;
        }
        let (key_end, key) = scan_string(b, i).ok_or_else(|| bad("bad member name"))?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err(bad("missing ':'"));
        }
        i = skip_ws(b, i + 1);
        let end = scan_value(b, i, 0).ok_or_else(|| bad("bad value"))?;
        let value = body.get(i..end).ok_or_else(|| bad("bad value"))?;
        if key == field.as_bytes() {
            signed = Some(value);
        } else if key == b"signature" {
            let v = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| bad("signature is not a string"))?;
            signature = Some(v);
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return Err(bad("expected ',' or '}'")),
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(bad("trailing data after the object"));
    }
    match (signed, signature) {
        (Some(s), Some(sig)) if s.starts_with('{') => Ok((s, sig)),
        (None, _) => Err(bad(&format!("no \"{field}\" object"))),
        _ => Err(bad("no \"signature\" string")),
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Returns (end, content) of the JSON string starting at `i`.
fn scan_string(b: &[u8], i: usize) -> Option<(usize, &[u8])> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some((j + 1, b.get(i + 1..j)?)),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// End index of the JSON value starting at `i` (structure only; serde validates content later).
fn scan_value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > 64 {
        return None;
    }
    match b.get(i)? {
        b'"' => scan_string(b, i).map(|(e, _)| e),
        b'{' | b'[' => {
            let close = if b[i] == b'{' { b'}' } else { b']' };
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Some(j + 1);
            }
            loop {
                if close == b'}' {
                    j = skip_ws(b, scan_string(b, j)?.0);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(b, j + 1);
                }
                j = skip_ws(b, scan_value(b, j, depth + 1)?);
                match b.get(j)? {
                    b',' => j = skip_ws(b, j + 1),
                    c if *c == close => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            let mut j = i;
            while matches!(b.get(j), Some(c) if !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// A TCB info document (`tcbInfo`, version 2 or 3, SGX or TDX), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcbInfo {
    /// "SGX" or "TDX" (version 2 documents have no id and are SGX).
    pub id: String,
    /// 2 or 3.
    pub version: u32,
    /// issueDate (Unix seconds).
    pub issue_date: i64,
    /// nextUpdate (Unix seconds).
    pub next_update: i64,
    /// FMSPC.
    pub fmspc: [u8; 6],
    /// PCE ID.
    pub pce_id: [u8; 2],
    /// TCB type (0 is the only defined one).
    pub tcb_type: u32,
    /// TCB evaluation data number.
    pub tcb_evaluation_data_number: u32,
    /// TCB levels, sorted highest first (as Intel's QVL orders them; JSON order is not trusted).
    pub tcb_levels: Vec<TcbLevel>,
    /// TDX: the TDX module's signer and attributes.
    pub tdx_module: Option<TdxModule>,
    /// TDX: per-major-version module identities.
    pub tdx_module_identities: Vec<TdxModuleIdentity>,
}

/// One platform TCB level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcbLevel {
    /// The 16 SGX TCB component SVNs.
    pub sgx_components: [u16; 16],
    /// PCE SVN.
    pub pce_svn: u16,
    /// TDX: the 16 TDX TCB component SVNs.
    pub tdx_components: Option<[u16; 16]>,
    /// tcbDate as written.
    pub tcb_date: String,
    /// The level's status.
    pub status: TcbStatus,
    /// Advisory IDs.
    pub advisory_ids: Vec<String>,
}

/// TDX module signer and attributes (`tdxModule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxModule {
    /// Expected MRSIGNERSEAM.
    pub mrsigner: [u8; 48],
    /// Expected SEAMATTRIBUTES under the mask.
    pub attributes: [u8; 8],
    /// Mask for SEAMATTRIBUTES.
    pub attributes_mask: [u8; 8],
}

/// A TDX module identity (`tdxModuleIdentities[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxModuleIdentity {
    /// "TDX_01", "TDX_03" …: the module major version.
    pub id: String,
    /// Signer and attributes.
    pub module: TdxModule,
    /// Levels by module ISVSVN, highest first.
    pub tcb_levels: Vec<IsvSvnLevel>,
}

/// A TCB level keyed by one ISVSVN (QE identity and TDX module identity levels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsvSvnLevel {
    /// Minimum ISVSVN of the level.
    pub isv_svn: u16,
    /// tcbDate as written.
    pub tcb_date: String,
    /// Status.
    pub status: TcbStatus,
    /// Advisory IDs.
    pub advisory_ids: Vec<String>,
}

/// A QE identity document (`enclaveIdentity` version 2), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeIdentity {
    /// "QE", "TD_QE" or "QVE".
    pub id: String,
    /// 2 (TD_QE also 3).
    pub version: u32,
    /// issueDate (Unix seconds).
    pub issue_date: i64,
    /// nextUpdate (Unix seconds).
    pub next_update: i64,
    /// TCB evaluation data number.
    pub tcb_evaluation_data_number: u32,
    /// MISCSELECT bytes as in the report.
    pub miscselect: [u8; 4],
    /// MISCSELECT mask.
    pub miscselect_mask: [u8; 4],
    /// ATTRIBUTES.
    pub attributes: [u8; 16],
    /// ATTRIBUTES mask.
    pub attributes_mask: [u8; 16],
    /// MRSIGNER of the QE.
    pub mrsigner: [u8; 32],
    /// ISVPRODID of the QE.
    pub isv_prod_id: u16,
    /// Levels by ISVSVN, highest first.
    pub tcb_levels: Vec<IsvSvnLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTcbInfo {
    id: Option<String>,
    version: u32,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tcb_type: u32,
    tcb_evaluation_data_number: u32,
    tcb_levels: Vec<RawTcbLevel>,
    tdx_module: Option<RawTdxModule>,
    #[serde(default)]
    tdx_module_identities: Vec<RawModuleIdentity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTcbLevel {
    tcb: RawTcb,
    #[serde(default)]
    tcb_date: String,
    tcb_status: String,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawComp {
    svn: u16,
}

/// Typed (not `serde_json::Value`): parsing TCB info is on the hot path of every verification.
#[derive(Deserialize)]
struct RawTcb {
    sgxtcbcomponents: Option<Vec<RawComp>>,
    tdxtcbcomponents: Option<Vec<RawComp>>,
    pcesvn: u16,
    sgxtcbcomp01svn: Option<u16>,
    sgxtcbcomp02svn: Option<u16>,
    sgxtcbcomp03svn: Option<u16>,
    sgxtcbcomp04svn: Option<u16>,
    sgxtcbcomp05svn: Option<u16>,
    sgxtcbcomp06svn: Option<u16>,
    sgxtcbcomp07svn: Option<u16>,
    sgxtcbcomp08svn: Option<u16>,
    sgxtcbcomp09svn: Option<u16>,
    sgxtcbcomp10svn: Option<u16>,
    sgxtcbcomp11svn: Option<u16>,
    sgxtcbcomp12svn: Option<u16>,
    sgxtcbcomp13svn: Option<u16>,
    sgxtcbcomp14svn: Option<u16>,
    sgxtcbcomp15svn: Option<u16>,
    sgxtcbcomp16svn: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTdxModule {
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawModuleIdentity {
    id: String,
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
    tcb_levels: Vec<RawIsvLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIsvTcb {
    isvsvn: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIsvLevel {
    tcb: RawIsvTcb,
    #[serde(default)]
    tcb_date: String,
    tcb_status: String,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawQeIdentity {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    tcb_evaluation_data_number: u32,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<RawIsvLevel>,
}

const MAX_DOC_LEN: usize = 1 << 20;

impl TcbInfo {
    /// Parses the `tcbInfo` object (the signed text). Checks field formats, versions 2/3, 16
    /// components per level, known statuses; sorts levels highest first.
    pub fn from_json(text: &str) -> Result<TcbInfo, Error> {
        let it = Item::TcbInfo;
        if text.len() > MAX_DOC_LEN {
            return Err(Error::malformed(it, "larger than 1 MiB"));
        }
        let unsupported =
            |version: u32| Error::unsupported(it, format!("version {version} (supported: 2, 3)"));
        let raw: RawTcbInfo = serde_json::from_str(text).map_err(|e| {
            // Another version may have another shape: say so rather than name a field.
            #[derive(Deserialize)]
            struct Version {
                version: u32,
            }
            match serde_json::from_str::<Version>(text) {
                Ok(v) if !(2..=3).contains(&v.version) => unsupported(v.version),
                _ => Error::malformed(it, e.to_string()),
            }
        })?;
        if !(2..=3).contains(&raw.version) {
            return Err(unsupported(raw.version));
        }
        let id = match (raw.id, raw.version) {
            (Some(id), _) => id,
            (None, 2) => "SGX".to_string(),
            (None, _) => return Err(Error::malformed(it, "missing id")),
        };
        if id != "SGX" && id != "TDX" {
            return Err(Error::unsupported(
                it,
                format!("id {id:?} (supported: SGX, TDX)"),
            ));
        }
        if raw.tcb_type != 0 {
            return Err(Error::unsupported(it, format!("tcbType {}", raw.tcb_type)));
        }
        let tdx = id == "TDX";
        if tdx && raw.version < 3 {
            return Err(Error::malformed(
                it,
                "a TDX TCB info must be version 3 or later",
            ));
        }
        let mut levels = Vec::with_capacity(raw.tcb_levels.len());
        for (i, l) in raw.tcb_levels.into_iter().enumerate() {
            levels.push(
                parse_level(l, raw.version, tdx)
                    .map_err(|d| Error::malformed(it, format!("tcbLevels[{i}]: {d}")))?,
            );
        }
        if levels.is_empty() {
            return Err(Error::malformed(it, "no TCB levels"));
        }
        levels.sort_by(|a, b| {
            (b.sgx_components, b.pce_svn, b.tdx_components).cmp(&(
                a.sgx_components,
                a.pce_svn,
                a.tdx_components,
            ))
        });
        // Two levels for the same TCB would make the status depend on their order; Intel's
        // QVL refuses such a TCB info.
        if levels.windows(2).any(|w| {
            (w[0].sgx_components, w[0].pce_svn, w[0].tdx_components)
                == (w[1].sgx_components, w[1].pce_svn, w[1].tdx_components)
        }) {
            return Err(Error::malformed(it, "two tcbLevels for the same TCB"));
        }
        let tdx_module = raw
            .tdx_module
            .map(|m| parse_module(&m.mrsigner, &m.attributes, &m.attributes_mask))
            .transpose()?;
        let mut ids = Vec::with_capacity(raw.tdx_module_identities.len());
        for m in raw.tdx_module_identities {
            ids.push(TdxModuleIdentity {
                module: parse_module(&m.mrsigner, &m.attributes, &m.attributes_mask)?,
                tcb_levels: parse_isv_levels(m.tcb_levels, it, MODULE_STATUSES)?,
                id: m.id,
            });
        }
        Ok(TcbInfo {
            id,
            version: raw.version,
            issue_date: parse_time(&raw.issue_date, it, "issueDate")?,
            next_update: parse_time(&raw.next_update, it, "nextUpdate")?,
            fmspc: hex_array(&raw.fmspc, it, "fmspc")?,
            pce_id: hex_array(&raw.pce_id, it, "pceId")?,
            tcb_type: raw.tcb_type,
            tcb_evaluation_data_number: raw.tcb_evaluation_data_number,
            tcb_levels: levels,
            tdx_module,
            tdx_module_identities: ids,
        })
    }
}

fn parse_module(mrsigner: &str, attr: &str, mask: &str) -> Result<TdxModule, Error> {
    let it = Item::TcbInfo;
    Ok(TdxModule {
        mrsigner: hex_array(mrsigner, it, "tdxModule mrsigner")?,
        attributes: hex_array(attr, it, "tdxModule attributes")?,
        attributes_mask: hex_array(mask, it, "tdxModule attributesMask")?,
    })
}

fn parse_level(l: RawTcbLevel, version: u32, tdx: bool) -> Result<TcbLevel, String> {
    let status: TcbStatus = l.tcb_status.parse()?;
    let t = &l.tcb;
    let pce_svn = t.pcesvn;
    let comps = |v: &Option<Vec<RawComp>>, key: &str| -> Result<Option<[u16; 16]>, String> {
        let Some(arr) = v else { return Ok(None) };
        if arr.len() != 16 {
            return Err(format!("{key} has {} entries, expected 16", arr.len()));
        }
        let mut out = [0u16; 16];
        for (o, c) in out.iter_mut().zip(arr) {
            *o = c.svn;
        }
        Ok(Some(out))
    };
    let sgx_components = if version == 2 {
        let v2 = [
            t.sgxtcbcomp01svn,
            t.sgxtcbcomp02svn,
            t.sgxtcbcomp03svn,
            t.sgxtcbcomp04svn,
            t.sgxtcbcomp05svn,
            t.sgxtcbcomp06svn,
            t.sgxtcbcomp07svn,
            t.sgxtcbcomp08svn,
            t.sgxtcbcomp09svn,
            t.sgxtcbcomp10svn,
            t.sgxtcbcomp11svn,
            t.sgxtcbcomp12svn,
            t.sgxtcbcomp13svn,
            t.sgxtcbcomp14svn,
            t.sgxtcbcomp15svn,
            t.sgxtcbcomp16svn,
        ];
        let mut out = [0u16; 16];
        for (i, (o, v)) in out.iter_mut().zip(v2).enumerate() {
            *o = v.ok_or_else(|| format!("missing sgxtcbcomp{:02}svn", i + 1))?;
        }
        out
    } else {
        comps(&t.sgxtcbcomponents, "sgxtcbcomponents")?.ok_or("missing sgxtcbcomponents")?
    };
    let tdx_components = comps(&t.tdxtcbcomponents, "tdxtcbcomponents")?;
    if tdx && tdx_components.is_none() {
        return Err("missing tdxtcbcomponents".into());
    }
    Ok(TcbLevel {
        sgx_components,
        pce_svn,
        tdx_components,
        tcb_date: l.tcb_date,
        status,
        advisory_ids: l.advisory_ids,
    })
}

/// The statuses a TDX module identity's level may have (Intel's TDX module identity spec).
const MODULE_STATUSES: &[TcbStatus] = &[
    TcbStatus::UpToDate,
    TcbStatus::OutOfDate,
    TcbStatus::Revoked,
];

/// Every status (QE identity levels).
const ANY_STATUS: &[TcbStatus] = &[];

/// ISVSVN levels (QE identity, TDX module identity), each SVN once; `allowed` (empty: any)
/// limits the statuses.
fn parse_isv_levels(
    levels: Vec<RawIsvLevel>,
    it: Item,
    allowed: &[TcbStatus],
) -> Result<Vec<IsvSvnLevel>, Error> {
    let mut out = Vec::with_capacity(levels.len());
    for (i, l) in levels.into_iter().enumerate() {
        let status: TcbStatus = l
            .tcb_status
            .parse()
            .map_err(|d| Error::malformed(it, format!("tcbLevels[{i}]: {d}")))?;
        if !allowed.is_empty() && !allowed.contains(&status) {
            return Err(Error::malformed(
                it,
                format!("tcbLevels[{i}]: status {status} is not allowed for this kind of level"),
            ));
        }
        out.push(IsvSvnLevel {
            isv_svn: l.tcb.isvsvn,
            tcb_date: l.tcb_date,
            status,
            advisory_ids: l.advisory_ids,
        });
    }
    if out.is_empty() {
        return Err(Error::malformed(it, "no TCB levels"));
    }
    out.sort_by_key(|l| std::cmp::Reverse(l.isv_svn));
    if out.windows(2).any(|w| w[0].isv_svn == w[1].isv_svn) {
        return Err(Error::malformed(it, "two tcbLevels for the same ISVSVN"));
    }
    Ok(out)
}

impl QeIdentity {
    /// Parses the `enclaveIdentity` object (the signed text), version 2 (TD_QE also 3).
    pub fn from_json(text: &str) -> Result<QeIdentity, Error> {
        let it = Item::QeIdentity;
        if text.len() > MAX_DOC_LEN {
            return Err(Error::malformed(it, "larger than 1 MiB"));
        }
        let raw: RawQeIdentity =
            serde_json::from_str(text).map_err(|e| Error::malformed(it, e.to_string()))?;
        let ok_version = raw.version == 2 || (raw.version == 3 && raw.id == "TD_QE");
        if !ok_version {
            return Err(Error::unsupported(
                it,
                format!(
                    "{} version {} (supported: 2; TD_QE also 3)",
                    raw.id, raw.version
                ),
            ));
        }
        Ok(QeIdentity {
            issue_date: parse_time(&raw.issue_date, it, "issueDate")?,
            next_update: parse_time(&raw.next_update, it, "nextUpdate")?,
            tcb_evaluation_data_number: raw.tcb_evaluation_data_number,
            miscselect: hex_array(&raw.miscselect, it, "miscselect")?,
            miscselect_mask: hex_array(&raw.miscselect_mask, it, "miscselectMask")?,
            attributes: hex_array(&raw.attributes, it, "attributes")?,
            attributes_mask: hex_array(&raw.attributes_mask, it, "attributesMask")?,
            mrsigner: hex_array(&raw.mrsigner, it, "mrsigner")?,
            isv_prod_id: raw.isvprodid,
            tcb_levels: parse_isv_levels(raw.tcb_levels, it, ANY_STATUS)?,
            id: raw.id,
            version: raw.version,
        })
    }
}

pub(crate) fn parse_time(s: &str, it: Item, what: &str) -> Result<i64, Error> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| Error::malformed(it, format!("{what} {s:?}: {e}")))
}

pub(crate) fn hex_array<const N: usize>(s: &str, it: Item, what: &str) -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)
        .map_err(|e| Error::malformed(it, format!("{what}: expected {N} bytes of hex: {e}")))?;
    Ok(out)
}

/// Hex string (either case) in JSON; also reads an array of byte values (what dcap-qvl's
/// `serde_bytes` fields look like when written by serde_json).
mod hex_bytes {
    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a hex string or an array of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
                hex::decode(s).map_err(|e| E::custom(format!("invalid hex: {e}")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = a.next_element::<u8>()? {
                    if out.len() >= super::MAX_COLLATERAL_LEN {
                        return Err(A::Error::custom("byte array too long"));
                    }
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulated platform's TDX TCB info, edited by `f`, parsed again.
    fn edited_tdx_tcb_info(f: impl Fn(&mut serde_json::Value)) -> Result<TcbInfo, Error> {
        let sim = crate::sim::SimPlatform::from_seed([9; 32]);
        let c = sim.collateral_for(crate::Tee::Tdx, 1_750_000_000);
        let mut v: serde_json::Value = serde_json::from_str(&c.tcb_info).unwrap();
        f(&mut v);
        TcbInfo::from_json(&v.to_string())
    }

    #[test]
    fn duplicate_levels_and_module_statuses_are_refused() {
        assert!(edited_tdx_tcb_info(|_| {}).is_ok());
        let e = edited_tdx_tcb_info(|v| {
            let first = v["tcbLevels"][0].clone();
            v["tcbLevels"].as_array_mut().unwrap().push(first);
        })
        .unwrap_err();
        assert!(e.to_string().contains("same TCB"), "{e}");
        let e = edited_tdx_tcb_info(|v| {
            let levels = &mut v["tdxModuleIdentities"][0]["tcbLevels"];
            let first = levels[0].clone();
            levels.as_array_mut().unwrap().push(first);
        })
        .unwrap_err();
        assert!(e.to_string().contains("same ISVSVN"), "{e}");
        let e = edited_tdx_tcb_info(|v| {
            v["tdxModuleIdentities"][0]["tcbLevels"][0]["tcbStatus"] = "SWHardeningNeeded".into();
        })
        .unwrap_err();
        assert!(e.to_string().contains("not allowed"), "{e}");
    }

    #[test]
    fn another_version_is_named_whatever_its_shape() {
        for shape in [
            |v: &mut serde_json::Value| v["version"] = 4.into(),
            |v: &mut serde_json::Value| {
                v["version"] = 4.into();
                v.as_object_mut().unwrap().remove("tcbLevels");
            },
        ] {
            let e = edited_tdx_tcb_info(shape).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{e}");
            assert!(e.to_string().contains("version 4"), "{e}");
        }
        let e = edited_tdx_tcb_info(|v| {
            v.as_object_mut().unwrap().remove("tcbLevels");
        })
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Malformed, "{e}");
    }

    #[test]
    fn split_signed_json_keeps_exact_bytes() {
        let body = r#" {"tcbInfo":{"a": [1, {"b":"}"}],"c":"x\"y"}, "signature" : "abcd"} "#;
        let (s, sig) = split_signed_json(body, "tcbInfo").unwrap();
        assert_eq!(s, r#"{"a": [1, {"b":"}"}],"c":"x\"y"}"#);
        assert_eq!(sig, "abcd");
        assert!(split_signed_json(r#"{"tcbInfo":{}}"#, "tcbInfo").is_err());
        assert!(split_signed_json(r#"{"signature":"00"}"#, "tcbInfo").is_err());
        assert!(split_signed_json(r#"{"tcbInfo":{},"signature":"00"} x"#, "tcbInfo").is_err());
        assert!(split_signed_json(r#"{"tcbInfo":{"#, "tcbInfo").is_err());
    }

    #[test]
    fn collateral_hex_fields_accept_hex_and_byte_arrays() {
        let j = r#"{"pck_crl_issuer_chain":"","root_ca_crl":"0aFF","pck_crl":[1,2],
            "tcb_info_issuer_chain":"","tcb_info":"{}","tcb_info_signature":"",
            "qe_identity_issuer_chain":"","qe_identity":"{}","qe_identity_signature":""}"#;
        let c = Collateral::from_json(j.as_bytes()).unwrap();
        assert_eq!(c.root_ca_crl, vec![0x0a, 0xff]);
        assert_eq!(c.pck_crl, vec![1, 2]);
        let back = Collateral::from_json(c.to_json().as_bytes()).unwrap();
        assert_eq!(back, c);
        let bad = j.replace("0aFF", "0aF");
        assert_eq!(
            Collateral::from_json(bad.as_bytes()).unwrap_err().kind(),
            crate::ErrorKind::Malformed
        );
    }
}
