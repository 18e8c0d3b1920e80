//! **TDX.** What a TD's measurement registers hold after QEMU/KVM launch it from TDVF (OVMF
//! built with TDX support) with a kernel given directly (`-kernel`, `-initrd`, `-append`):
//!
//! - **MRTD**, the TDX module's running SHA-384 over every page QEMU adds before the TD runs.
//!   TDVF's metadata (GUID e47a6535-…, a `TDVF` descriptor) lists the sections: each page of a
//!   section not marked PAGE.AUG is added (TDH.MEM.PAGE.ADD, a 128-byte record naming its GPA),
//!   and the pages of a section marked MR.EXTEND are also extended (TDH.MR.EXTEND, a 128-byte
//!   record per 256-byte chunk, then the chunk's bytes). Upstream QEMU and KVM add and extend
//!   page by page; the QEMU 8 TDX trees added every page of a section first.
//! - **RTMR1**, extended by TDVF in the order of its event log: the Authenticode SHA-384 of
//!   the kernel image as QEMU hands it over (QEMU patches the boot-protocol header: loader type,
//!   heap end, command-line pointer, and where the initrd sits in guest memory, which depends on
//!   the memory size), then four fixed events (the boot-option action, the separator, and the
//!   two ExitBootServices actions).
//! - **RTMR2**, extended by the kernel's EFI stub: the command line TDVF passes (UTF-16, with
//!   TDVF's ` initrd=initrd` and a terminating NUL), then the initrd's SHA-384.
//!
//! **RTMR0 is not predicted.** It holds the TD HOB, TDVF's configuration volume, the UEFI
//! variables, and the ACPI tables QEMU generates for that machine's devices, so it depends on
//! the exact QEMU command line and version. Take it from a reference launch's event log, or pin
//! MRCONFIGID instead.
//!
//! The tests check every result against dstack's `dstack-mr`, an independent implementation.

use sha2::{Digest, Sha384};

use crate::{u32_at, Error, Ovmf, PAGE};

const TDX_METADATA_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";
/// Bytes TDH.MR.EXTEND measures per call.
const EXTEND_CHUNK: usize = 256;
/// Most guest memory MRTD is computed over (TDVF's sections are a few MiB).
const MAX_ADDED_BYTES: u64 = 1 << 32;
/// QEMU's ACPI data area below the top of low memory (`acpi_data_size` of PC machines).
const QEMU_ACPI_DATA_SIZE: u32 = 0x28000;

/// Attribute: the section's pages are extended into MRTD.
const ATTR_MR_EXTEND: u32 = 1;
/// Attribute: the section is accepted later (TDH.MEM.PAGE.AUG), not added before launch.
const ATTR_PAGE_AUG: u32 = 2;

/// The kinds of TDVF metadata section (TDVF design guide, section 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdvfSectionKind {
    /// The boot firmware volume (code).
    Bfv,
    /// The configuration firmware volume (UEFI variables).
    Cfv,
    /// Where the VMM puts the TD HOB.
    TdHob,
    /// Temporary memory TDVF uses before it accepts memory.
    TempMem,
    /// Permanent memory.
    PermMem,
    /// A payload image.
    Payload,
    /// The payload's parameters.
    PayloadParam,
}

/// A section of TDVF's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Where its initial contents start in the image.
    pub data_offset: u32,
    /// How many bytes of contents the image holds. QEMU maps an extended section's whole
    /// memory size from the image, so those bytes are what MRTD covers.
    pub raw_size: u32,
    /// Guest physical address.
    pub gpa: u64,
    /// Size in guest memory.
    pub memory_size: u64,
    /// What the section is.
    pub kind: TdvfSectionKind,
    /// Whether its pages are extended into MRTD (they are added unless `page_aug`).
    pub extend: bool,
    /// Whether its pages are accepted later instead of added before launch.
    pub page_aug: bool,
}

/// A TDVF image with its TDX metadata parsed.
#[derive(Debug, Clone)]
pub struct Tdvf<'a> {
    data: &'a [u8],
    sections: Vec<TdvfSection>,
}

/// A little-endian `u32` at `at` of a record whose length was checked (see [`u32_at`] for
/// bytes not yet checked).
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// A little-endian `u64` at `at` of a record whose length was checked.
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl<'a> Tdvf<'a> {
    /// Parses `data` (an `OVMF.fd` built with TDX support): OVMF's footer table, its TDX
    /// metadata entry, and the `TDVF` version 1 descriptor with its sections.
    pub fn parse(data: &'a [u8]) -> Result<Tdvf<'a>, Error> {
        let bad = |m: String| Error::Firmware(m);
        let ovmf = Ovmf::parse(data)?;
        let entry = ovmf.entry(TDX_METADATA_GUID).ok_or_else(|| {
            bad("no TDX metadata (GUID e47a6535-…): not an OVMF build with TDX support".into())
        })?;
        if entry.len() != 4 {
            return Err(bad(format!(
                "the TDX metadata entry has {} bytes, not 4",
                entry.len()
            )));
        }
        let start = data
            .len()
            .checked_sub(le_u32(entry, 0) as usize)
            .ok_or_else(|| bad("the TDX metadata offset is beyond the image".into()))?;
        let header = data
            .get(start..start + 16)
            .ok_or_else(|| bad("the TDVF descriptor is beyond the image".into()))?;
        if &header[..4] != b"TDVF" || le_u32(header, 8) != 1 {
            return Err(bad(
                "the TDX metadata is not a `TDVF` version 1 descriptor".into()
            ));
        }
        let (length, count) = (le_u32(header, 4) as usize, le_u32(header, 12) as usize);
        if Some(length) != count.checked_mul(32).and_then(|n| n.checked_add(16)) {
            return Err(bad(format!(
                "the TDVF descriptor's length {length} does not fit its {count} sections"
            )));
        }
        let items = data
            .get(start + 16..start + length)
            .ok_or_else(|| bad(format!("{count} TDVF sections run past the image")))?;
        let mut sections = Vec::with_capacity(count);
        let mut added = 0u64;
        for item in items.chunks_exact(32) {
            let s = section(item).map_err(bad)?;
            // QEMU maps an extended section's whole memory size from the image.
            let mapped = if s.extend {
                s.memory_size
            } else {
                u64::from(s.raw_size)
            };
            let end = u64::from(s.data_offset).saturating_add(mapped);
            if end > data.len() as u64 {
                return Err(bad(format!(
                    "the TDVF section at {:#x} maps bytes {:#x}..{end:#x} of a {}-byte image; \
                     the metadata describes the whole firmware QEMU loads with -bios (OVMF.fd), \
                     not a code flash alone",
                    s.gpa,
                    s.data_offset,
                    data.len()
                )));
            }
            if !s.page_aug {
                added = added.saturating_add(s.memory_size);
            }
            sections.push(s);
        }
        if added > MAX_ADDED_BYTES {
            return Err(bad(format!(
                "the TDVF sections add {added} bytes before launch; at most 4 GiB is measured"
            )));
        }
        Ok(Tdvf { data, sections })
    }

    /// The sections, in the order QEMU adds them.
    pub fn sections(&self) -> &[TdvfSection] {
        &self.sections
    }
}

/// One 32-byte TDVF section entry, checked.
fn section(item: &[u8]) -> Result<TdvfSection, String> {
    let (kind, attributes) = (le_u32(item, 24), le_u32(item, 28));
    let kind = match kind {
        0 => TdvfSectionKind::Bfv,
        1 => TdvfSectionKind::Cfv,
        2 => TdvfSectionKind::TdHob,
        3 => TdvfSectionKind::TempMem,
        4 => TdvfSectionKind::PermMem,
        5 => TdvfSectionKind::Payload,
        6 => TdvfSectionKind::PayloadParam,
        k => return Err(format!("unknown TDVF section type {k:#x}")),
    };
    if attributes & !(ATTR_MR_EXTEND | ATTR_PAGE_AUG) != 0 {
        return Err(format!("unknown TDVF section attributes {attributes:#x}"));
    }
    let s = TdvfSection {
        data_offset: le_u32(item, 0),
        raw_size: le_u32(item, 4),
        gpa: le_u64(item, 8),
        memory_size: le_u64(item, 16),
        kind,
        extend: attributes & ATTR_MR_EXTEND != 0,
        page_aug: attributes & ATTR_PAGE_AUG != 0,
    };
    if s.gpa % PAGE as u64 != 0 || s.memory_size % PAGE as u64 != 0 {
        return Err(format!(
            "the TDVF section at {:#x} ({} bytes) is not page-aligned",
            s.gpa, s.memory_size
        ));
    }
    if u64::from(s.raw_size) > s.memory_size {
        return Err(format!(
            "the TDVF section at {:#x} holds {} bytes in {} bytes of memory",
            s.gpa, s.raw_size, s.memory_size
        ));
    }
    if s.extend && s.page_aug {
        return Err(format!(
            "the TDVF section at {:#x} is both extended and accepted later",
            s.gpa
        ));
    }
    Ok(s)
}

/// In which order QEMU adds and extends a section's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOrder {
    /// Add a page, then extend it (upstream QEMU 10.1 and later with upstream KVM).
    Interleaved,
    /// Add every page of a section, then extend them (the QEMU 8 TDX trees).
    AddAllFirst,
}

/// A 128-byte TDX module measurement record: an ASCII operation name, then a GPA at 16.
fn record(op: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[..op.len()].copy_from_slice(op);
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

/// MRTD of a TD launched from `tdvf`.
pub fn mrtd(tdvf: &Tdvf<'_>, order: PageOrder) -> [u8; 48] {
    let mut h = Sha384::new();
    for s in &tdvf.sections {
        let pages = s.memory_size / PAGE as u64;
        let add = |h: &mut Sha384, page: u64| {
            if !s.page_aug {
                h.update(record(b"MEM.PAGE.ADD", s.gpa + page * PAGE as u64));
            }
        };
        let extend = |h: &mut Sha384, page: u64| {
            if !s.extend {
                return;
            }
            for chunk in 0..PAGE / EXTEND_CHUNK {
                let offset = page as usize * PAGE + chunk * EXTEND_CHUNK;
                h.update(record(b"MR.EXTEND", s.gpa + offset as u64));
                let at = s.data_offset as usize + offset;
                h.update(&tdvf.data[at..at + EXTEND_CHUNK]);
            }
        };
        match order {
            PageOrder::Interleaved => (0..pages).for_each(|p| {
                add(&mut h, p);
                extend(&mut h, p);
            }),
            PageOrder::AddAllFirst => {
                (0..pages).for_each(|p| add(&mut h, p));
                (0..pages).for_each(|p| extend(&mut h, p));
            }
        }
    }
    h.finalize().into()
}

/// The kernel, initrd and command line a TD is booted with, and its memory size.
#[derive(Debug, Clone, Copy)]
pub struct TdxBoot<'a> {
    /// The bzImage given with `-kernel`.
    pub kernel: &'a [u8],
    /// The initrd given with `-initrd`.
    pub initrd: &'a [u8],
    /// The command line given with `-append`.
    pub append: &'a str,
    /// Guest memory in bytes (`-m`), which decides where QEMU puts the initrd.
    pub memory_size: u64,
}

/// RTMR1 and RTMR2 of a TD booted as `boot` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdxRtmrs {
    /// The kernel image and TDVF's boot events.
    pub rtmr1: [u8; 48],
    /// The command line and the initrd.
    pub rtmr2: [u8; 48],
}

/// An RTMR after extending each of `events` (SHA-384 digests) in turn from zero.
fn replay(events: &[[u8; 48]]) -> [u8; 48] {
    events.iter().fold([0u8; 48], |rtmr, event| {
        let mut h = Sha384::new();
        h.update(rtmr);
        h.update(event);
        h.finalize().into()
    })
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

/// RTMR1 and RTMR2 of a TD booted by TDVF as `boot` says.
pub fn tdx_rtmrs(boot: &TdxBoot<'_>) -> Result<TdxRtmrs, Error> {
    let patched = qemu_patched_kernel(boot.kernel, boot.initrd.len(), boot.memory_size)?;
    let kernel: [u8; 48] = authenticode::<Sha384>(&patched)?.into();
    let rtmr1 = replay(&[
        kernel,
        sha384(b"Calling EFI Application from Boot Option"),
        sha384(&[0; 4]),
        sha384(b"Exit Boot Services Invocation"),
        sha384(b"Exit Boot Services Returned with Success"),
    ]);
    let mut cmdline: Vec<u8> = format!("{} initrd=initrd", boot.append)
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    cmdline.extend([0, 0]);
    let rtmr2 = replay(&[sha384(&cmdline), sha384(boot.initrd)]);
    Ok(TdxRtmrs { rtmr1, rtmr2 })
}

/// The kernel image as QEMU (`x86_load_linux`) hands it to the firmware on a q35 machine with
/// `memory_size` bytes: the Linux boot-protocol header (at 0x1f1) patched with the loader type,
/// heap end, command-line pointer and the initrd's address and size.
pub fn qemu_patched_kernel(
    kernel: &[u8],
    initrd_len: usize,
    memory_size: u64,
) -> Result<Vec<u8>, Error> {
    let bad = |m: String| Error::Kernel(m);
    if kernel.len() < 0x1000 || kernel[0x202..0x206] != *b"HdrS" {
        return Err(bad(
            "no Linux boot-protocol header (`HdrS` at 0x202): give a bzImage".into(),
        ));
    }
    let mut k = kernel.to_vec();
    let protocol = u16::from_le_bytes([k[0x206], k[0x207]]);
    const LOADED_HIGH: u8 = 0x01;
    if protocol < 0x206 || k[0x211] & LOADED_HIGH == 0 {
        return Err(bad(format!(
            "boot protocol {}.{:02} without LOADED_HIGH: TDVF boots kernels of protocol 2.06 \
             or later loaded high",
            protocol >> 8,
            protocol & 0xff
        )));
    }
    let (real_addr, cmdline_addr) = (0x10000u32, 0x20000u32);
    k[0x210] = 0xb0; // type_of_loader: QEMU
    k[0x211] |= 0x80; // loadflags: CAN_USE_HEAP
    k[0x224..0x228].copy_from_slice(&(cmdline_addr - real_addr - 0x200).to_le_bytes());
    k[0x228..0x22c].copy_from_slice(&cmdline_addr.to_le_bytes());

    let initrd_len = u32::try_from(initrd_len)
        .map_err(|_| Error::Guest("the initrd is larger than 4 GiB".into()))?;
    const CAN_BE_LOADED_ABOVE_4G: u16 = 0x40;
    let xloadflags = u16::from_le_bytes([k[0x236], k[0x237]]);
    let mut initrd_max = if protocol >= 0x20c && xloadflags & CAN_BE_LOADED_ABOVE_4G != 0 {
        u32::MAX
    } else {
        le_u32(&k, 0x22c)
    };
    // q35 keeps guest memory below 2 GiB under 4 GiB once it reaches 2.75 GiB.
    let lowmem = if memory_size >= 0xb000_0000 {
        0x8000_0000
    } else {
        0xb000_0000
    };
    let below_4g = memory_size.min(lowmem) as u32;
    let top = below_4g.checked_sub(QEMU_ACPI_DATA_SIZE).ok_or_else(|| {
        Error::Guest(format!(
            "{memory_size} bytes of memory is too little for QEMU"
        ))
    })?;
    if initrd_max >= top {
        initrd_max = top - 1;
    }
    if initrd_len >= initrd_max {
        return Err(Error::Guest(format!(
            "an initrd of {initrd_len} bytes does not fit below {initrd_max:#x}; give the guest \
             more memory"
        )));
    }
    let initrd_addr = (initrd_max - initrd_len) & !0xfff;
    k[0x218..0x21c].copy_from_slice(&initrd_addr.to_le_bytes());
    k[0x21c..0x220].copy_from_slice(&initrd_len.to_le_bytes());
    Ok(k)
}

/// The Authenticode digest of a PE/COFF image as EDK2 measures it (`TcgMeasurePeImage`):
/// the headers without the checksum and the certificate-table entry, the sections in file
/// order, then any bytes after them that are not the certificate table.
pub fn authenticode<D: Digest>(pe: &[u8]) -> Result<sha2::digest::Output<D>, Error> {
    let bad = |m: &str| Error::Kernel(format!("PE image: {m}"));
    let at16 = |at: usize| pe.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if pe.get(..2) != Some(b"MZ") {
        return Err(bad("no MZ header"));
    }
    let nt = u32_at(pe, 0x3c).ok_or_else(|| bad("truncated DOS header"))? as usize;
    if pe.get(nt..nt.saturating_add(4)) != Some(b"PE\0\0") {
        return Err(bad("no PE signature"));
    }
    let coff = nt + 4;
    let sections = at16(coff + 2).ok_or_else(|| bad("truncated COFF header"))? as usize;
    let optional_size = at16(coff + 16).ok_or_else(|| bad("truncated COFF header"))? as usize;
    let optional = coff + 20;
    let (dirs_count_at, dirs_at) = match at16(optional) {
        Some(0x20b) => (optional + 108, optional + 112),
        Some(0x10b) => (optional + 92, optional + 96),
        _ => return Err(bad("unknown optional header magic")),
    };
    let checksum = optional + 64;
    let headers_size = u32_at(pe, optional + 60).ok_or_else(|| bad("truncated optional header"))?;
    let dirs = u32_at(pe, dirs_count_at).ok_or_else(|| bad("truncated optional header"))?;
    let headers_size = headers_size as usize;
    if headers_size > pe.len() || optional + optional_size > pe.len() {
        return Err(bad("headers run past the image"));
    }
    if checksum + 4 > headers_size {
        return Err(bad("the checksum is outside the headers"));
    }
    let security = dirs_at + 4 * 8;
    let mut h = D::new();
    h.update(&pe[..checksum]);
    let cert_size = if dirs > 4 {
        if security + 8 > headers_size {
            return Err(bad("the certificate-table entry is outside the headers"));
        }
        h.update(&pe[checksum + 4..security]);
        h.update(&pe[security + 8..headers_size]);
        u64::from(le_u32(pe, security + 4))
    } else {
        h.update(&pe[checksum + 4..headers_size]);
        0
    };
    let table = optional + optional_size;
    let mut ranges = Vec::with_capacity(sections);
    for i in 0..sections {
        let entry = pe
            .get(table + 40 * i..table + 40 * (i + 1))
            .ok_or_else(|| bad("the section table runs past the image"))?;
        let (size, offset) = (le_u32(entry, 16) as usize, le_u32(entry, 20) as usize);
        if size == 0 {
            continue;
        }
        if offset.checked_add(size).is_none_or(|end| end > pe.len()) {
            return Err(bad("a section runs past the image"));
        }
        ranges.push((offset, size));
    }
    ranges.sort_unstable();
    let mut hashed = headers_size as u64;
    for (offset, size) in ranges {
        h.update(&pe[offset..offset + size]);
        hashed += size as u64;
    }
    let len = pe.len() as u64;
    if len > hashed.saturating_add(cert_size) {
        let from = usize::try_from(hashed).map_err(|_| bad("sections overlap"))?;
        h.update(&pe[from..(len - cert_size) as usize]);
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guid;

    #[test]
    fn records_name_the_operation_and_gpa() {
        let r = record(b"MR.EXTEND", 0xffc8_4000);
        assert_eq!(&r[..9], b"MR.EXTEND");
        assert_eq!(&r[9..16], &[0; 7]);
        assert_eq!(&r[16..24], &0xffc8_4000u64.to_le_bytes());
        assert!(r[24..].iter().all(|b| *b == 0));
    }

    #[test]
    fn an_rtmr_replays_its_events_in_order() {
        let (a, b) = (sha384(b"a"), sha384(b"b"));
        assert_eq!(replay(&[]), [0; 48]);
        assert_ne!(replay(&[a, b]), replay(&[b, a]));
        let mut h = Sha384::new();
        h.update(replay(&[a]));
        h.update(b);
        assert_eq!(replay(&[a, b]), <[u8; 48]>::from(h.finalize()));
    }

    #[test]
    fn sections_are_checked() {
        let entry = |kind: u32, attributes: u32, gpa: u64, raw: u32, size: u64| {
            let mut e = [0u8; 32];
            e[4..8].copy_from_slice(&raw.to_le_bytes());
            e[8..16].copy_from_slice(&gpa.to_le_bytes());
            e[16..24].copy_from_slice(&size.to_le_bytes());
            e[24..28].copy_from_slice(&kind.to_le_bytes());
            e[28..32].copy_from_slice(&attributes.to_le_bytes());
            e
        };
        assert!(section(&entry(0, 1, 0xffc0_0000, 4096, 4096)).is_ok());
        let err = |e: [u8; 32]| section(&e).unwrap_err();
        assert!(err(entry(7, 0, 0, 0, 4096)).contains("type 0x7"));
        assert!(err(entry(0, 4, 0, 0, 4096)).contains("attributes 0x4"));
        assert!(err(entry(0, 0, 0x800, 0, 4096)).contains("page-aligned"));
        assert!(err(entry(0, 0, 0, 8192, 4096)).contains("holds 8192 bytes"));
        assert!(err(entry(4, 3, 0, 0, 4096)).contains("extended and accepted"));
    }

    #[test]
    fn firmware_without_tdx_metadata_is_refused() {
        let mut f = vec![0u8; 8192];
        let at = 8192 - 32 - 18;
        f[at..at + 2].copy_from_slice(&18u16.to_le_bytes());
        f[at + 2..at + 18].copy_from_slice(&guid(crate::FOOTER_GUID));
        let err = Tdvf::parse(&f).unwrap_err().to_string();
        assert!(err.contains("no TDX metadata"), "{err}");
    }

    #[test]
    fn kernels_without_a_boot_header_are_refused() {
        let err = qemu_patched_kernel(&[0; 0x2000], 0, 1 << 32).unwrap_err();
        assert!(err.to_string().contains("HdrS"));
        assert!(authenticode::<Sha384>(b"ELF").is_err());
    }
}
