//! EPC capacity: how much Enclave Page Cache this node has, read from CPUID leaf `0x12`, and
//! its publication as the Node's `sgx.intel.com/epc` extended resource (in bytes).
//!
//! # Why CPUID, and which rules
//! The EPC is the protected memory enclaves live in; the scheduler must not place more enclave
//! memory on a node than it has, so the node advertises the total as a capacity that pods
//! request (`sgx.intel.com/epc: 10Mi`), exactly as Intel's device plugins with node feature
//! discovery do. The enumeration follows the Intel SDM (Vol. 2A, CPUID leaf 12H) and Linux's
//! `sgx_page_cache_init` (arch/x86/kernel/cpu/sgx/main.c):
//!
//! 1. `CPUID.(EAX=0)`: the maximum basic leaf must be at least `0x12`.
//! 2. `CPUID.(EAX=7,ECX=0):EBX[2]` (SGX) must be set.
//! 3. `CPUID.(EAX=0x12,ECX=0):EAX[0]` (SGX1) must be set; when SGX is off in the BIOS the
//!    processor still reports bit 2 of leaf 7 but leaf `0x12` reads as zeros.
//! 4. Sub-leaves 2, 3, … each describe one EPC section: `EAX[3:0]` is the sub-leaf type
//!    (0 = invalid, ends the list; 1 = EPC section; others reserved). For a section the
//!    physical base is `EAX[31:12] | EBX[19:0] << 32` and the size is
//!    `ECX[31:12] | EDX[19:0] << 32` — the high bits in EBX/EDX matter on servers whose
//!    sections are 64 GiB and more; `ECX[3:0]` is the section's protection property.
//!
//! **Reserved sub-leaf types**: like the Linux kernel (which logs "Unknown EPC section type"
//! and stops), the scan stops at the first sub-leaf of a reserved type, with a warning, and
//! counts only the sections before it ([`SgxEpc::unknown_subleaf`] records where it stopped).
//! The kernel manages exactly those sections, so this is the EPC pods can really get; counting
//! sections the kernel ignores would let the scheduler over-commit the node.
//!
//! **Reserved bits** inside a section sub-leaf (`EAX[11:4]`, `EBX[31:20]`, `ECX[11:4]`,
//! `EDX[31:20]`) must read as zero; a non-zero value means the layout is not the one this code
//! knows, and the sub-leaf is refused with [`Error::EpcSubleafMalformed`] rather than guessed.
//!
//! # Injectable CPUID
//! Everything reads CPUID through [`CpuidSource`]: [`NativeCpuid`] executes the instruction,
//! [`RecordedCpuid`] replays values recorded in a text file (tests, and machines other than
//! this one).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

use crate::Error;

/// The extended resource the EPC size is published under (bytes), the name Intel's device
/// plugins and AKS use, so pods written for them schedule unchanged.
pub const EPC_RESOURCE: &str = "sgx.intel.com/epc";

/// The SGX CPUID leaf.
pub const SGX_LEAF: u32 = 0x12;

/// The first sub-leaf of leaf `0x12` that enumerates an EPC section.
pub const FIRST_EPC_SUBLEAF: u32 = 2;

/// How many section sub-leaves are read at most. Real processors have one section per socket
/// (Linux allows 8); the cap bounds the work a lying hypervisor can cause, and a list that
/// is not terminated within it is refused ([`Error::TooManyEpcSubleaves`]).
pub const MAX_EPC_SUBLEAVES: u32 = 64;

// 64 sections of at most 2^52 bytes each cannot overflow the u64 total; the checked sum below
// is kept anyway so that raising the cap can never make it wrap silently.
const _: () = assert!((MAX_EPC_SUBLEAVES as u128) << 52 <= u64::MAX as u128);

/// The largest recorded-CPUID file accepted ([`RecordedCpuid::parse`]), in bytes.
pub const MAX_RECORD_BYTES: usize = 128 * 1024;

/// The most entries a recorded-CPUID file may hold.
pub const MAX_RECORD_ENTRIES: usize = 1024;

/// The longest line [`RecordedCpuid::to_text`] writes (six `0x` + 8 digit values, 5 spaces,
/// a newline) — and the header. Whatever was parsed must render within the parser's own
/// limit, or a recording could not be saved and reloaded (checked by the `cpuid_epc` fuzz
/// harness's round trip).
const RECORD_LINE_MAX: usize = 6 * 10 + 5 + 1;
const _: () = assert!(MAX_RECORD_ENTRIES * RECORD_LINE_MAX + 64 <= MAX_RECORD_BYTES);

/// The four registers one `CPUID` execution returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidRegs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Where CPUID values come from. Injectable so the EPC logic is tested on values recorded
/// from machines this one is not (CPUID roots are injectable for tests, like device roots).
pub trait CpuidSource {
    /// `CPUID` with `EAX = leaf`, `ECX = subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidRegs;
}

/// The processor this process runs on, through raw-cpuid's safe wrapper of the instruction.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeCpuid;

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
impl CpuidSource for NativeCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidRegs {
        let r = raw_cpuid::native_cpuid::cpuid_count(leaf, subleaf);
        CpuidRegs {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
}

/// CPUID values replayed from a recording.
///
/// The text format, one entry a line, `#` starts a comment:
/// ```text
/// # leaf     subleaf  eax        ebx        ecx        edx   (hexadecimal, 0x optional)
/// 0x00000012 0x2      0x70200001 0x00000000 0x05d80001 0x00000000
/// ```
/// A (leaf, sub-leaf) that is not recorded reads as all zeros, which is what the hardware
/// returns for the invalid sub-leaves of leaf `0x12` that end the EPC list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedCpuid {
    entries: BTreeMap<(u32, u32), CpuidRegs>,
}

impl RecordedCpuid {
    /// Parses a recording. The text is untrusted: its size ([`MAX_RECORD_BYTES`]) and number
    /// of entries ([`MAX_RECORD_ENTRIES`]) are bounded, every line must hold exactly six
    /// hexadecimal 32-bit values, and a (leaf, sub-leaf) recorded twice is refused (which of
    /// two answers would be the hardware's?). Errors name the line.
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        let bad = |line: usize, reason: String| Error::CpuidRecord { line, reason };
        if text.len() > MAX_RECORD_BYTES {
            return Err(bad(
                0,
                format!(
                    "{} bytes, more than the {MAX_RECORD_BYTES} accepted",
                    text.len()
                ),
            ));
        }
        let text =
            std::str::from_utf8(text).map_err(|e| bad(0, format!("not UTF-8 text ({e})")))?;
        let mut entries = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut values = [0u32; 6];
            let mut fields = content.split_ascii_whitespace();
            for (slot, name) in values
                .iter_mut()
                .zip(["leaf", "subleaf", "eax", "ebx", "ecx", "edx"])
            {
                let field = fields
                    .next()
                    .ok_or_else(|| bad(line, format!("missing {name}: expected six values")))?;
                *slot = parse_hex_u32(field)
                    .ok_or_else(|| bad(line, format!("{name} {field:?} is not a hex u32")))?;
            }
            if fields.next().is_some() {
                return Err(bad(line, "more than six values".into()));
            }
            let [leaf, subleaf, eax, ebx, ecx, edx] = values;
            if entries.len() >= MAX_RECORD_ENTRIES {
                return Err(bad(line, format!("more than {MAX_RECORD_ENTRIES} entries")));
            }
            let regs = CpuidRegs { eax, ebx, ecx, edx };
            if entries.insert((leaf, subleaf), regs).is_some() {
                return Err(bad(
                    line,
                    format!("leaf {leaf:#x} sub-leaf {subleaf:#x} recorded twice"),
                ));
            }
        }
        Ok(Self { entries })
    }

    /// Reads and parses a recording file; the read itself is bounded by
    /// [`MAX_RECORD_BYTES`] so a huge or endless file (a FIFO, `/dev/zero`) is refused early.
    pub fn load(path: &Path) -> Result<Self, Error> {
        use std::io::Read;
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        Self::parse(&bytes).map_err(|e| match e {
            Error::CpuidRecord { line, reason } => Error::CpuidRecord {
                line,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// Records what `source` answers for every (leaf, sub-leaf) [`read_epc`] looks at, so a
    /// recording of a real SGX machine can be made with this crate and replayed in tests.
    pub fn record(source: &dyn CpuidSource) -> Self {
        let mut entries = BTreeMap::new();
        let mut take = |leaf, subleaf| {
            let regs = source.cpuid(leaf, subleaf);
            entries.insert((leaf, subleaf), regs);
            regs
        };
        let max_leaf = take(0, 0).eax;
        if max_leaf >= 7 {
            take(7, 0);
        }
        if max_leaf >= SGX_LEAF {
            take(SGX_LEAF, 0);
            take(SGX_LEAF, 1);
            for subleaf in FIRST_EPC_SUBLEAF..FIRST_EPC_SUBLEAF + MAX_EPC_SUBLEAVES {
                if take(SGX_LEAF, subleaf).eax & 0xf == 0 {
                    break;
                }
            }
        }
        Self { entries }
    }

    /// Adds or replaces one entry (for building recordings in code).
    pub fn insert(&mut self, leaf: u32, subleaf: u32, regs: CpuidRegs) {
        self.entries.insert((leaf, subleaf), regs);
    }

    /// The recording in the text format [`RecordedCpuid::parse`] reads.
    pub fn to_text(&self) -> String {
        let mut out = String::from("# leaf subleaf eax ebx ecx edx\n");
        for ((leaf, subleaf), r) in &self.entries {
            out.push_str(&format!(
                "{leaf:#010x} {subleaf:#x} {:#010x} {:#010x} {:#010x} {:#010x}\n",
                r.eax, r.ebx, r.ecx, r.edx
            ));
        }
        out
    }
}

impl CpuidSource for RecordedCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidRegs {
        self.entries
            .get(&(leaf, subleaf))
            .copied()
            .unwrap_or_default()
    }
}

/// A hex u32 with an optional `0x`/`0X` prefix, at most 8 digits, nothing else (no sign).
fn parse_hex_u32(field: &str) -> Option<u32> {
    let digits = field
        .strip_prefix("0x")
        .or_else(|| field.strip_prefix("0X"))
        .unwrap_or(field);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// The protection property of an EPC section (`ECX[3:0]` of its sub-leaf). Encodings as the
/// recent SDM lists them (older editions list only `0001b` and `0010b`). Open: a value the SDM
/// reserves is kept and shown, not rejected, because the kernel uses such a section all the
/// same (it does not look at the property); `0000b` is refused (it means "no section").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpcProtection {
    /// `0001b`: confidentiality, integrity and replay protection (the client parts' MEE).
    ConfidentialityIntegrityReplay,
    /// `0010b`: confidentiality protection only (scalable Xeon with TME-MK based EPC).
    ConfidentialityOnly,
    /// `0011b`: confidentiality and integrity protection.
    ConfidentialityIntegrity,
    /// Any other non-zero encoding (reserved in the SDM), kept as read.
    Reserved(u8),
}

impl EpcProtection {
    fn from_bits(bits: u8) -> Self {
        match bits {
            1 => Self::ConfidentialityIntegrityReplay,
            2 => Self::ConfidentialityOnly,
            3 => Self::ConfidentialityIntegrity,
            other => Self::Reserved(other),
        }
    }
}

impl fmt::Display for EpcProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfidentialityIntegrityReplay => {
                f.write_str("confidentiality, integrity and replay protection")
            }
            Self::ConfidentialityOnly => f.write_str("confidentiality protection only"),
            Self::ConfidentialityIntegrity => {
                f.write_str("confidentiality and integrity protection")
            }
            Self::Reserved(bits) => write!(f, "reserved property {bits:#x}"),
        }
    }
}

/// One EPC section as enumerated by a sub-leaf of leaf `0x12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpcSection {
    /// The sub-leaf it came from (2, 3, …).
    pub subleaf: u32,
    /// Physical base address (4 KiB aligned by construction).
    pub base: u64,
    /// Size in bytes (4 KiB multiple by construction, never zero).
    pub size: u64,
    /// Protection property.
    pub protection: EpcProtection,
}

/// What leaf `0x12` says about this processor's SGX and EPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SgxEpc {
    /// SGX2 instructions (EAUG, EMODPR, …: dynamic enclave memory) are supported.
    pub sgx2: bool,
    /// log2 of the largest enclave in 64-bit mode (`CPUID.(0x12,0):EDX[15:8]`).
    pub max_enclave_size_64_log2: u8,
    /// The EPC sections, in sub-leaf order.
    pub sections: Vec<EpcSection>,
    /// Sum of the section sizes in bytes: the `sgx.intel.com/epc` capacity.
    pub total_bytes: u64,
    /// Where the scan stopped at a reserved sub-leaf type, as `(sub-leaf, type)`; `None` when
    /// the list ended normally with an invalid (type 0) sub-leaf.
    pub unknown_subleaf: Option<(u32, u8)>,
}

/// Reads SGX support and the EPC sections from `cpu` (rules in the [module docs](self)).
///
/// Errors: [`Error::SgxNotSupported`] (no SGX bit in leaf 7, or leaf 7 absent),
/// [`Error::SgxLeafAbsent`] (maximum basic leaf below `0x12`), [`Error::SgxDisabled`]
/// (SGX1 not reported: off in the BIOS), [`Error::NoEpcSections`],
/// [`Error::EpcSubleafMalformed`], [`Error::TooManyEpcSubleaves`], [`Error::EpcOverflow`].
pub fn read_epc(cpu: &dyn CpuidSource) -> Result<SgxEpc, Error> {
    let max_leaf = cpu.cpuid(0, 0).eax;
    if max_leaf < 7 {
        return Err(Error::SgxNotSupported);
    }
    if cpu.cpuid(7, 0).ebx & (1 << 2) == 0 {
        return Err(Error::SgxNotSupported);
    }
    if max_leaf < SGX_LEAF {
        return Err(Error::SgxLeafAbsent { max_leaf });
    }
    let caps = cpu.cpuid(SGX_LEAF, 0);
    if caps.eax & 1 == 0 {
        return Err(Error::SgxDisabled);
    }
    let sgx2 = caps.eax & 0b10 != 0;
    let max_enclave_size_64_log2 = ((caps.edx >> 8) & 0xff) as u8;

    let mut sections = Vec::new();
    let mut unknown_subleaf = None;
    let mut terminated = false;
    for subleaf in FIRST_EPC_SUBLEAF..FIRST_EPC_SUBLEAF + MAX_EPC_SUBLEAVES {
        let r = cpu.cpuid(SGX_LEAF, subleaf);
        match (r.eax & 0xf) as u8 {
            0 => {
                terminated = true;
                break;
            }
            1 => sections.push(decode_section(subleaf, r)?),
            other => {
                tracing::warn!(
                    subleaf,
                    subleaf_type = other,
                    "CPUID leaf 0x12 sub-leaf has a reserved type; counting only the EPC \
                     sections before it, as the Linux kernel does"
                );
                unknown_subleaf = Some((subleaf, other));
                terminated = true;
                break;
            }
        }
    }
    if !terminated {
        return Err(Error::TooManyEpcSubleaves {
            max: MAX_EPC_SUBLEAVES,
        });
    }
    if sections.is_empty() {
        return Err(Error::NoEpcSections);
    }
    check_disjoint(&sections)?;
    let total_bytes = sections
        .iter()
        .try_fold(0u64, |sum, s| sum.checked_add(s.size))
        .ok_or(Error::EpcOverflow)?;
    Ok(SgxEpc {
        sgx2,
        max_enclave_size_64_log2,
        sections,
        total_bytes,
        unknown_subleaf,
    })
}

/// Decodes a type-1 sub-leaf, refusing non-zero reserved bits and an empty section.
fn decode_section(subleaf: u32, r: CpuidRegs) -> Result<EpcSection, Error> {
    let malformed = |reason: String| Error::EpcSubleafMalformed { subleaf, reason };
    for (name, value, reserved_mask) in [
        ("EAX[11:4]", r.eax, 0x0000_0ff0u32),
        ("EBX[31:20]", r.ebx, 0xfff0_0000),
        ("ECX[11:4]", r.ecx, 0x0000_0ff0),
        ("EDX[31:20]", r.edx, 0xfff0_0000),
    ] {
        if value & reserved_mask != 0 {
            return Err(malformed(format!(
                "reserved bits {name} are {:#x}, not zero",
                value & reserved_mask
            )));
        }
    }
    let base = section_metric(r.eax, r.ebx);
    let size = section_metric(r.ecx, r.edx);
    let property = (r.ecx & 0xf) as u8;
    if property == 0 {
        // The SDM: property 0000b means EDX:ECX are all zero, i.e. no usable section.
        return Err(malformed(
            "section property is 0 (no EPC in this section)".into(),
        ));
    }
    if size == 0 {
        return Err(malformed("section size is 0".into()));
    }
    Ok(EpcSection {
        subleaf,
        base,
        size,
        protection: EpcProtection::from_bits(property),
    })
}

/// Bits 31:12 of `low` and bits 19:0 of `high` as bits 51:32: the SDM's split of a 52-bit
/// physical address or size across two registers (the kernel's `sgx_calc_section_metric`).
fn section_metric(low: u32, high: u32) -> u64 {
    u64::from(low & 0xffff_f000) | (u64::from(high & 0x000f_ffff) << 32)
}

/// Two sections claiming the same physical memory would count it twice: refused.
fn check_disjoint(sections: &[EpcSection]) -> Result<(), Error> {
    let mut sorted: Vec<&EpcSection> = sections.iter().collect();
    sorted.sort_by_key(|s| s.base);
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            // base < 2^52 and size < 2^52: the end cannot overflow a u64.
            if a.base + a.size > b.base {
                return Err(Error::EpcSubleafMalformed {
                    subleaf: b.subleaf,
                    reason: format!(
                        "section at {:#x} overlaps the section of sub-leaf {} ({:#x}..{:#x})",
                        b.base,
                        a.subleaf,
                        a.base,
                        a.base + a.size
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The JSON patch that sets the EPC capacity, as the Kubernetes documentation advertises an
/// extended resource ("Advertise Extended Resources for a Node": an `add` of
/// `/status/capacity/<name>` with `/` escaped as `~1`, sent to the node's `status`
/// subresource). `add` replaces an existing value, so re-publishing is idempotent. The value
/// is the byte count as a plain decimal quantity string.
pub fn epc_capacity_patch(epc_bytes: u64) -> json_patch::Patch {
    json_patch::Patch(vec![json_patch::PatchOperation::Add(
        json_patch::AddOperation {
            path: json_patch::jsonptr::PointerBuf::from_tokens([
                "status",
                "capacity",
                EPC_RESOURCE,
            ]),
            value: serde_json::Value::String(epc_bytes.to_string()),
        },
    )])
}

/// Publishes `epc_bytes` as the Node's `sgx.intel.com/epc` capacity: `PATCH
/// /api/v1/nodes/{node_name}/status` with `Content-Type: application/json-patch+json` and the
/// body of [`epc_capacity_patch`]. The kubelet then mirrors capacity into allocatable, and the
/// scheduler counts pods' `sgx.intel.com/epc` requests against it.
///
/// The node name is validated as a Kubernetes object name first, so it cannot reshape the
/// request path. Errors name the node and the API server's answer ([`Error::NodeApi`]).
pub async fn publish_epc(
    client: kube::Client,
    node_name: &str,
    epc_bytes: u64,
) -> Result<(), Error> {
    validate_node_name(node_name)?;
    let nodes: Api<Node> = Api::all(client);
    let patch: Patch<()> = Patch::Json(epc_capacity_patch(epc_bytes));
    nodes
        .patch_status(node_name, &PatchParams::default(), &patch)
        .await
        .map_err(|source| Error::NodeApi {
            node: node_name.to_owned(),
            action: "patching the status of",
            source: Box::new(source),
        })?;
    tracing::info!(
        node = node_name,
        epc_bytes,
        "published {EPC_RESOURCE} capacity"
    );
    Ok(())
}

/// Reads the Node's current `sgx.intel.com/epc` capacity in bytes: `None` when it is absent
/// (a re-registered Node has lost it) or not a quantity this crate reads exactly.
///
/// `GET /api/v1/nodes/{name}` (the Node object, which carries its status): that needs `get`
/// on `nodes`, which the chart's ClusterRole grants, where the `status` subresource would need
/// `get` on `nodes/status` as well.
pub async fn published_epc(client: kube::Client, node_name: &str) -> Result<Option<u64>, Error> {
    validate_node_name(node_name)?;
    let nodes: Api<Node> = Api::all(client);
    let node = nodes
        .get(node_name)
        .await
        .map_err(|source| Error::NodeApi {
            node: node_name.to_owned(),
            action: "reading",
            source: Box::new(source),
        })?;
    Ok(node
        .status
        .and_then(|s| s.capacity)
        .and_then(|c| c.get(EPC_RESOURCE).map(|q| parse_quantity_bytes(&q.0)))
        .flatten())
}

/// A Kubernetes node name is a DNS subdomain: at most 253 characters of lowercase
/// alphanumerics, `-` and `.`, starting and ending alphanumeric.
pub fn validate_node_name(name: &str) -> Result<(), Error> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() > 253
        || !bytes.iter().all(|&b| ok_char(b))
        || !edge_ok(bytes.first())
        || !edge_ok(bytes.last())
    {
        return Err(Error::InvalidNodeName {
            name: name.chars().take(300).collect(),
        });
    }
    Ok(())
}

/// Parses a Kubernetes quantity as an exact byte count: an integer with an optional binary
/// (`Ki`…`Ei`) or decimal (`k`…`E`) suffix, the forms the API server canonicalises an integer
/// capacity to. Anything else (fractions, exponents, overflow) gives `None`, which the agent
/// treats as "not what we published" and re-publishes.
pub fn parse_quantity_bytes(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_metric_takes_high_bits() {
        assert_eq!(section_metric(0x0000_0001, 0x10), 64 << 30);
        assert_eq!(section_metric(0x05d8_0001, 0), 0x05d8_0000);
        assert_eq!(
            section_metric(0xffff_ffff, 0xffff_ffff),
            (1 << 52) - (1 << 12)
        );
    }

    #[test]
    fn hex_fields() {
        assert_eq!(parse_hex_u32("0x12"), Some(0x12));
        assert_eq!(parse_hex_u32("ffffffff"), Some(u32::MAX));
        assert_eq!(parse_hex_u32("0x100000000"), None);
        assert_eq!(parse_hex_u32("+1"), None);
        assert_eq!(parse_hex_u32("0x"), None);
        assert_eq!(parse_hex_u32("12g"), None);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_bytes("98041856"), Some(98_041_856));
        assert_eq!(parse_quantity_bytes("128Gi"), Some(128 << 30));
        assert_eq!(parse_quantity_bytes("128M"), Some(128_000_000));
        assert_eq!(parse_quantity_bytes("1.5Gi"), None);
        assert_eq!(parse_quantity_bytes("16Ei"), None);
        assert_eq!(parse_quantity_bytes(""), None);
        assert_eq!(parse_quantity_bytes("Mi"), None);
    }

    #[test]
    fn node_names() {
        assert!(validate_node_name("aks-sgx-12345678-vmss000000").is_ok());
        assert!(validate_node_name("node1.example.com").is_ok());
        for bad in ["", "Node", "a/b", "a?b", "-a", "a-", &"a".repeat(254)] {
            assert!(
                matches!(validate_node_name(bad), Err(Error::InvalidNodeName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn patch_shape() {
        let json = serde_json::to_string(&epc_capacity_patch(42)).unwrap_or_default();
        assert_eq!(
            json,
            r#"[{"op":"add","path":"/status/capacity/sgx.intel.com~1epc","value":"42"}]"#
        );
    }
}
