//! Confidential-VM launch measurements, predicted offline, so a manifest can pin a guest
//! before it ever runs.
//!
//! **TDX**: MRTD from TDVF, and RTMR1–2 from the kernel, initrd and command line; see
//! [`mrtd`] and [`tdx_rtmrs`] (RTMR0 depends on QEMU's ACPI tables and is not predicted).
//!
//! **SEV-SNP.** The launch digest (the report's MEASUREMENT) chains one SHA-384 per page the
//! host hands the AMD secure processor (SNP firmware ABI, `SNP_LAUNCH_UPDATE`, PAGE_INFO):
//!
//! 1. every 4 KiB page of the OVMF image, mapped to end at 4 GiB, as a *normal* page measured
//!    by its contents;
//! 2. the sections of OVMF's SEV metadata (`ASEV`), in order: zero pages for pre-validated
//!    memory and the SVSM calling area, the secrets page, the CPUID page, and the kernel
//!    hashes page — QEMU's table of SHA-256 of kernel, initrd and command line, placed where
//!    OVMF's SEV hash table GUID says — when a kernel is given (zero pages otherwise);
//! 3. one VMSA page per vCPU (the boot processor starts at the reset vector, the others at
//!    OVMF's SEV-ES reset block), holding the initial register state QEMU and KVM give a vCPU
//!    of that CPUID signature, and the guest features.
//!
//! This follows AMD's SNP firmware ABI and QEMU's and OVMF's layouts as the `sev-snp-measure`
//! tool (virtee) implements them; the tests check every result against that tool, an
//! independent implementation, on Debian's OVMF builds.
//!
//! ```no_run
//! # fn main() -> Result<(), coffer_vm_measure::Error> {
//! use coffer_vm_measure::{snp_launch_digest, vcpu_type, Ovmf, SnpGuest};
//! let firmware = std::fs::read("/usr/share/OVMF/OVMF_CODE_4M.fd").unwrap();
//! let ovmf = Ovmf::parse(&firmware)?;
//! let digest = snp_launch_digest(&ovmf, &SnpGuest {
//!     vcpus: 4,
//!     vcpu_signature: vcpu_type("EPYC-Milan").unwrap(),
//!     guest_features: 0x1,
//!     kernel: None,
//! })?;
//! println!("{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

use sha2::{Digest, Sha256, Sha384};

mod tdx;
pub use tdx::{
    authenticode, mrtd, qemu_patched_kernel, tdx_rtmrs, PageOrder, Tdvf, TdvfSection,
    TdvfSectionKind, TdxBoot, TdxRtmrs,
};

const PAGE: usize = 4096;
const FOUR_GIB: u64 = 1 << 32;
/// The VMSA's GPA in the measurement: "-1", page-aligned, bits above 51 cleared.
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// The boot processor's reset vector.
const BSP_EIP: u32 = 0xFFFF_FFF0;
/// The most vCPUs a guest is measured with (KVM's limit is lower).
pub const MAX_VCPUS: u32 = 4096;

/// Why a measurement cannot be computed. Each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The firmware is not an OVMF image this computation can use.
    #[error("firmware: {0}")]
    Firmware(String),
    /// The guest description cannot be launched as given.
    #[error("guest: {0}")]
    Guest(String),
    /// The kernel is not an image this computation can use.
    #[error("kernel: {0}")]
    Kernel(String),
}

/// A GUID as OVMF stores it (the first three fields little-endian).
fn guid(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'-')
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => 0,
        })
        .collect();
    let mut be = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate().take(16) {
        be[i] = pair[0] << 4 | pair.get(1).copied().unwrap_or(0);
    }
    let mut le = be;
    le[0..4].reverse();
    le[4..6].reverse();
    le[6..8].reverse();
    le
}

const FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const SEV_HASH_TABLE_RV_GUID: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
const SEV_ES_RESET_BLOCK_GUID: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
const SEV_METADATA_GUID: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";
const HASH_TABLE_HEADER_GUID: &str = "9438d606-4f22-4cc9-b479-a793d411fd21";
const KERNEL_ENTRY_GUID: &str = "4de79437-abd2-427f-b835-d5b172d2045b";
const INITRD_ENTRY_GUID: &str = "44baf731-3a2f-4bd7-9af1-41e29169781d";
const CMDLINE_ENTRY_GUID: &str = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a";

/// A section of OVMF's SEV metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// What the section is.
    pub kind: SectionKind,
}

/// The kinds of SEV metadata section OVMF declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// Memory OVMF expects pre-validated (measured as zero pages).
    Memory,
    /// The SNP secrets page.
    Secrets,
    /// The CPUID page.
    Cpuid,
    /// The SVSM calling area (zero pages).
    SvsmCallingArea,
    /// Where QEMU puts the kernel, initrd and command-line hashes.
    KernelHashes,
}

/// An OVMF image with its GUIDed footer table and SEV metadata parsed.
#[derive(Debug, Clone)]
pub struct Ovmf<'a> {
    data: &'a [u8],
    table: Vec<([u8; 16], &'a [u8])>,
    sections: Vec<Section>,
    has_metadata: bool,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Ovmf<'a> {
    /// Parses `data` (an `OVMF.fd` or `OVMF_CODE*.fd`): a whole number of pages, at most
    /// 4 GiB, with OVMF's footer table and SEV metadata.
    pub fn parse(data: &'a [u8]) -> Result<Ovmf<'a>, Error> {
        let bad = |m: String| Error::Firmware(m);
        if data.is_empty() || data.len() % PAGE != 0 || data.len() as u64 > FOUR_GIB {
            return Err(bad(format!(
                "{} bytes is not a whole number of 4 KiB pages below 4 GiB",
                data.len()
            )));
        }
        // The footer entry (u16 size, GUID) ends 32 bytes before the end of the image.
        let footer_at = data.len() - 32 - 18;
        let footer = &data[footer_at..footer_at + 18];
        if footer[2..] != guid(FOOTER_GUID) {
            return Err(bad(
                "no OVMF footer table (GUID 96b582de-…): not an OVMF build with SEV support".into(),
            ));
        }
        let table_len = usize::from(u16::from_le_bytes([footer[0], footer[1]]))
            .checked_sub(18)
            .filter(|n| *n <= footer_at)
            .ok_or_else(|| bad("the footer table's size is out of range".into()))?;
        let mut rest = &data[footer_at - table_len..footer_at];
        let mut table = Vec::new();
        while rest.len() >= 18 {
            let head = &rest[rest.len() - 18..];
            let size = usize::from(u16::from_le_bytes([head[0], head[1]]));
            if size < 18 || size > rest.len() {
                return Err(bad(format!("a footer table entry has size {size}")));
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&head[2..]);
            table.push((id, &rest[rest.len() - size..rest.len() - 18]));
            rest = &rest[..rest.len() - size];
        }
        let mut ovmf = Ovmf {
            data,
            table,
            sections: Vec::new(),
            has_metadata: false,
        };
        // Without SEV metadata there are no sections to measure: the digest covers the
        // firmware and the VMSAs (see `has_sev_metadata`).
        let Some(meta) = ovmf.entry(SEV_METADATA_GUID) else {
            return Ok(ovmf);
        };
        ovmf.has_metadata = true;
        let meta = u32_at(meta, 0)
            .ok_or_else(|| bad("the SEV metadata table entry is too short".into()))?;
        let start = data
            .len()
            .checked_sub(meta as usize)
            .ok_or_else(|| bad("the SEV metadata offset is beyond the image".into()))?;
        let header = data
            .get(start..start + 16)
            .ok_or_else(|| bad("the SEV metadata header is beyond the image".into()))?;
        if &header[..4] != b"ASEV" || u32_at(header, 8) != Some(1) {
            return Err(bad(
                "the SEV metadata is not an `ASEV` version 1 header".into()
            ));
        }
        let count = u32_at(header, 12).unwrap_or(0) as usize;
        let items = data
            .get(start + 16..start + 16 + count.saturating_mul(12))
            .ok_or_else(|| bad(format!("{count} SEV metadata sections run past the image")))?;
        for item in items.chunks(12) {
            let (gpa, size, kind) = (
                u32_at(item, 0).unwrap_or(0),
                u32_at(item, 4).unwrap_or(0),
                u32_at(item, 8).unwrap_or(0),
            );
            let kind = match kind {
                1 => SectionKind::Memory,
                2 => SectionKind::Secrets,
                3 => SectionKind::Cpuid,
                4 => SectionKind::SvsmCallingArea,
                0x10 => SectionKind::KernelHashes,
                k => return Err(bad(format!("unknown SEV metadata section type {k:#x}"))),
            };
            if size as usize % PAGE != 0 || gpa as usize % PAGE != 0 {
                return Err(bad(format!(
                    "SEV metadata section at {gpa:#x} ({size} bytes) is not page-aligned"
                )));
            }
            ovmf.sections.push(Section { gpa, size, kind });
        }
        Ok(ovmf)
    }

    fn entry(&self, id: &str) -> Option<&'a [u8]> {
        let id = guid(id);
        self.table.iter().find(|(g, _)| *g == id).map(|(_, d)| *d)
    }

    /// Whether the build declares SEV metadata (`ASEV`: the pages SNP needs pre-validated,
    /// the secrets and CPUID pages). Builds without it (Debian's OVMF) are measured as the
    /// firmware and the VMSAs alone, as `sev-snp-measure` does; QEMU does not launch them as
    /// SNP guests.
    pub fn has_sev_metadata(&self) -> bool {
        self.has_metadata
    }

    /// The SEV metadata sections, in order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Where the image is mapped: it ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    /// Where application processors start (OVMF's SEV-ES reset block), if declared.
    pub fn ap_reset_eip(&self) -> Option<u32> {
        self.entry(SEV_ES_RESET_BLOCK_GUID)
            .and_then(|e| u32_at(e, 0))
    }

    fn hash_table_gpa(&self) -> Option<u32> {
        self.entry(SEV_HASH_TABLE_RV_GUID)
            .and_then(|e| u32_at(e, 0))
            .filter(|g| *g != 0)
    }
}

/// SHA-256 of the kernel, initrd and command line that QEMU puts in the kernel hashes page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel image.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of nothing, without one).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line with its terminating NUL (a lone NUL without one).
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// Hashes as QEMU computes them for `-kernel`, `-initrd` and `-append`.
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> KernelHashes {
        let mut cmdline = append.unwrap_or_default().as_bytes().to_vec();
        cmdline.push(0);
        KernelHashes {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or_default()).into(),
            cmdline: Sha256::digest(&cmdline).into(),
        }
    }

    /// QEMU's SEV hash table (header GUID, length, then command line, initrd and kernel
    /// entries of GUID, length, hash), padded to a multiple of 16 bytes.
    pub fn table(&self) -> Vec<u8> {
        let entry = |id: &str, hash: &[u8; 32]| {
            let mut e = guid(id).to_vec();
            e.extend_from_slice(&50u16.to_le_bytes());
            e.extend_from_slice(hash);
            e
        };
        let mut t = guid(HASH_TABLE_HEADER_GUID).to_vec();
        t.extend_from_slice(&168u16.to_le_bytes());
        t.extend(entry(CMDLINE_ENTRY_GUID, &self.cmdline));
        t.extend(entry(INITRD_ENTRY_GUID, &self.initrd));
        t.extend(entry(KERNEL_ENTRY_GUID, &self.kernel));
        t.resize(t.len().next_multiple_of(16), 0);
        t
    }

    /// The 4 KiB page holding [`KernelHashes::table`] at `offset`.
    pub fn page(&self, offset: usize) -> Option<[u8; PAGE]> {
        let t = self.table();
        let mut page = [0u8; PAGE];
        page.get_mut(offset..offset + t.len())?.copy_from_slice(&t);
        Some(page)
    }
}

/// The guest a launch digest is computed for (QEMU/KVM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpGuest {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The vCPUs' CPUID signature (see [`vcpu_type`], [`vcpu_signature`]).
    pub vcpu_signature: u32,
    /// SEV_FEATURES of the VMSAs (bit 0, SNPActive, is always set by QEMU: 0x1).
    pub guest_features: u64,
    /// With `-kernel`: the hashes QEMU puts in the kernel hashes page.
    pub kernel: Option<KernelHashes>,
}

/// CPUID Fn0000_0001_EAX of a family, model and stepping (AMD publication 25481).
pub fn vcpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    family_high << 20
        | ((model >> 4) & 0xf) << 16
        | family_low << 8
        | (model & 0xf) << 4
        | (stepping & 0xf)
}

/// QEMU's EPYC CPU models and their CPUID signatures.
pub const VCPU_TYPES: &[(&str, (u32, u32, u32))] = &[
    ("EPYC", (23, 1, 2)),
    ("EPYC-v1", (23, 1, 2)),
    ("EPYC-v2", (23, 1, 2)),
    ("EPYC-IBPB", (23, 1, 2)),
    ("EPYC-v3", (23, 1, 2)),
    ("EPYC-v4", (23, 1, 2)),
    ("EPYC-Rome", (23, 49, 0)),
    ("EPYC-Rome-v1", (23, 49, 0)),
    ("EPYC-Rome-v2", (23, 49, 0)),
    ("EPYC-Rome-v3", (23, 49, 0)),
    ("EPYC-Milan", (25, 1, 1)),
    ("EPYC-Milan-v1", (25, 1, 1)),
    ("EPYC-Milan-v2", (25, 1, 1)),
    ("EPYC-Genoa", (25, 17, 0)),
    ("EPYC-Genoa-v1", (25, 17, 0)),
    ("EPYC-Turin", (26, 0, 0)),
];

/// The CPUID signature of a QEMU CPU model name.
pub fn vcpu_type(name: &str) -> Option<u32> {
    VCPU_TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, (f, m, s))| vcpu_signature(*f, *m, *s))
}

/// The running launch digest.
struct LaunchDigest([u8; 48]);

impl LaunchDigest {
    /// One PAGE_INFO (SNP ABI): digest so far, page contents digest, length 0x70, page type,
    /// not an IMI page, no VMPL 1..3 permissions, GPA.
    fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.0);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type;
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.0 = Sha384::digest(info).into();
    }

    fn normal(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE).enumerate() {
            self.update(1, gpa + (i * PAGE) as u64, &Sha384::digest(page).into());
        }
    }

    fn pages(&mut self, page_type: u8, gpa: u32, size: u32) {
        for off in (0..size).step_by(PAGE) {
            self.update(page_type, u64::from(gpa) + u64::from(off), &[0; 48]);
        }
    }
}

/// A segment register in the VMSA: selector, attributes, limit, base.
fn segment(vmsa: &mut [u8; PAGE], at: usize, selector: u16, attrib: u16, base: u64) {
    vmsa[at..at + 2].copy_from_slice(&selector.to_le_bytes());
    vmsa[at + 2..at + 4].copy_from_slice(&attrib.to_le_bytes());
    vmsa[at + 4..at + 8].copy_from_slice(&0xffffu32.to_le_bytes());
    vmsa[at + 8..at + 16].copy_from_slice(&base.to_le_bytes());
}

/// The VMSA (SEV-ES save area) QEMU/KVM measure for a vCPU starting at `eip`.
pub fn vmsa_page(eip: u32, vcpu_signature: u32, guest_features: u64) -> [u8; PAGE] {
    let mut v = [0u8; PAGE];
    let mut put = |at: usize, value: u64, len: usize| {
        v[at..at + len].copy_from_slice(&value.to_le_bytes()[..len]);
    };
    put(0xD0, 0x1000, 8); // EFER: SVME, as KVM sets it
    put(0x148, 0x40, 8); // CR4: MCE
    put(0x158, 0x10, 8); // CR0: ET
    put(0x160, 0x400, 8); // DR7
    put(0x168, 0xffff_0ff0, 8); // DR6
    put(0x170, 0x2, 8); // RFLAGS
    put(0x178, u64::from(eip & 0xffff), 8); // RIP
    put(0x268, 0x0007_0406_0007_0406, 8); // G_PAT (AMD APM vol. 2, A.3)
    put(0x310, u64::from(vcpu_signature), 8); // RDX: the CPUID signature
    put(0x3B0, guest_features, 8); // SEV_FEATURES
    put(0x3E8, 0x1, 8); // XCR0: x87
    put(0x408, 0x1f80, 4); // MXCSR
    put(0x410, 0x37f, 2); // x87 FCW
    segment(&mut v, 0x00, 0, 0x93, 0); // ES
    segment(&mut v, 0x10, 0xf000, 0x9b, u64::from(eip & 0xffff_0000)); // CS
    segment(&mut v, 0x20, 0, 0x93, 0); // SS
    segment(&mut v, 0x30, 0, 0x93, 0); // DS
    segment(&mut v, 0x40, 0, 0x93, 0); // FS
    segment(&mut v, 0x50, 0, 0x93, 0); // GS
    segment(&mut v, 0x60, 0, 0, 0); // GDTR
    segment(&mut v, 0x70, 0, 0x82, 0); // LDTR
    segment(&mut v, 0x80, 0, 0, 0); // IDTR
    segment(&mut v, 0x90, 0, 0x8b, 0); // TR
    v
}

/// The SEV-SNP launch digest (MEASUREMENT) of `guest` booted from `ovmf` by QEMU/KVM.
pub fn snp_launch_digest(ovmf: &Ovmf<'_>, guest: &SnpGuest) -> Result<[u8; 48], Error> {
    if guest.vcpus == 0 || guest.vcpus > MAX_VCPUS {
        return Err(Error::Guest(format!(
            "{} vCPUs; give 1 to {MAX_VCPUS}",
            guest.vcpus
        )));
    }
    let mut ld = LaunchDigest([0; 48]);
    ld.normal(ovmf.gpa(), ovmf.data);
    let has_hashes = ovmf
        .sections
        .iter()
        .any(|s| s.kind == SectionKind::KernelHashes);
    if guest.kernel.is_some() && !has_hashes {
        return Err(Error::Guest(
            "a kernel is given, but this OVMF has no kernel hashes section: only an AmdSev \
             build (OvmfPkg/AmdSev) measures -kernel/-initrd/-append"
                .into(),
        ));
    }
    for s in &ovmf.sections {
        match (s.kind, &guest.kernel) {
            (SectionKind::Memory | SectionKind::SvsmCallingArea, _) => ld.pages(3, s.gpa, s.size),
            (SectionKind::Secrets, _) => ld.update(5, u64::from(s.gpa), &[0; 48]),
            (SectionKind::Cpuid, _) => ld.update(6, u64::from(s.gpa), &[0; 48]),
            (SectionKind::KernelHashes, None) => ld.pages(3, s.gpa, s.size),
            (SectionKind::KernelHashes, Some(k)) => {
                let offset = ovmf.hash_table_gpa().ok_or_else(|| {
                    Error::Firmware("no SEV hash table GUID (7255371f-…) entry".into())
                })? as usize
                    % PAGE;
                if s.size as usize != PAGE {
                    return Err(Error::Firmware(format!(
                        "the kernel hashes section has {} bytes, not one page",
                        s.size
                    )));
                }
                let page = k.page(offset).ok_or_else(|| {
                    Error::Firmware(format!(
                        "the hash table at offset {offset} overflows its page"
                    ))
                })?;
                ld.normal(u64::from(s.gpa), &page);
            }
        }
    }
    let ap_eip = match (guest.vcpus, ovmf.ap_reset_eip()) {
        (1, eip) => eip.unwrap_or(0),
        (_, Some(eip)) => eip,
        (n, None) => {
            return Err(Error::Firmware(format!(
                "{n} vCPUs need OVMF's SEV-ES reset block (GUID 00f771de-…), which this build \
                 lacks"
            )))
        }
    };
    let bsp = Sha384::digest(vmsa_page(
        BSP_EIP,
        guest.vcpu_signature,
        guest.guest_features,
    ));
    let ap = Sha384::digest(vmsa_page(
        ap_eip,
        guest.vcpu_signature,
        guest.guest_features,
    ));
    for i in 0..guest.vcpus {
        let page = if i == 0 { &bsp } else { &ap };
        ld.update(2, VMSA_GPA, &(*page).into());
    }
    Ok(ld.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            guid(FOOTER_GUID),
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
    }

    #[test]
    fn cpuid_signatures_of_known_models() {
        assert_eq!(vcpu_type("EPYC-Milan"), Some(0x00A0_0F11));
        assert_eq!(vcpu_type("EPYC-Genoa"), Some(0x00A1_0F10));
        assert_eq!(vcpu_type("EPYC-v4"), Some(0x0080_0F12));
        assert_eq!(vcpu_type("EPYC-Turin"), Some(0x00B0_0F00));
        assert_eq!(vcpu_type("Skylake"), None);
    }

    #[test]
    fn the_hash_table_has_qemus_layout() {
        let k = KernelHashes::new(b"kernel", None, Some("console=ttyS0"));
        let t = k.table();
        assert_eq!(t.len(), 176);
        assert_eq!(&t[16..18], &168u16.to_le_bytes());
        assert_eq!(&t[18 + 16..18 + 18], &50u16.to_le_bytes());
        assert_eq!(&t[18 + 18..18 + 50], &k.cmdline);
        assert_eq!(&t[18 + 100 + 18..18 + 150], &k.kernel);
        assert!(k.page(4096 - 175).is_none());
        assert_eq!(&k.page(8).unwrap()[8..8 + 176], &t[..]);
    }

    #[test]
    fn malformed_firmware_is_refused_with_the_reason() {
        let err = |d: &[u8]| Ovmf::parse(d).unwrap_err().to_string();
        assert!(err(&[]).contains("whole number"));
        assert!(err(&[0; 100]).contains("whole number"));
        assert!(err(&[0; 8192]).contains("no OVMF footer table"));
        // A footer whose size runs past the image.
        let mut f = vec![0u8; 8192];
        let at = 8192 - 32 - 18;
        f[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        f[at + 2..at + 18].copy_from_slice(&guid(FOOTER_GUID));
        assert!(err(&f).contains("out of range"));
        // A table without SEV metadata parses, and says so.
        f[at..at + 2].copy_from_slice(&18u16.to_le_bytes());
        assert!(!Ovmf::parse(&f).unwrap().has_sev_metadata());
        // SEV metadata that points outside the image.
        let entry_at = at - 22;
        f[entry_at..entry_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        f[entry_at + 4..entry_at + 6].copy_from_slice(&22u16.to_le_bytes());
        f[entry_at + 6..entry_at + 22].copy_from_slice(&guid(SEV_METADATA_GUID));
        f[at..at + 2].copy_from_slice(&(18u16 + 22).to_le_bytes());
        assert!(err(&f).contains("beyond the image"));
    }
}
