//! Just enough of ELF64 to find the loadable segments of Gramine's `libpal.so` and its entry
//! point, through checked reads only (the file is outside input).

use crate::error::{Error, Result};

/// A PT_LOAD program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    pub(crate) offset: u64,
    pub(crate) vaddr: u64,
    pub(crate) filesz: u64,
    pub(crate) memsz: u64,
    /// p_flags: PF_X = 1, PF_W = 2, PF_R = 4.
    pub(crate) flags: u32,
}

/// The parts of an ELF file the Gramine layout needs.
#[derive(Clone, Debug)]
pub(crate) struct Elf {
    pub(crate) entry: u64,
    pub(crate) loads: Vec<LoadSegment>,
}

const PT_LOAD: u32 = 1;
const MAX_PHDRS: u64 = 4096;

fn get<const N: usize>(b: &[u8], off: u64) -> Result<[u8; N]> {
    let start = usize::try_from(off).map_err(|_| Error::Elf("offset overflows".into()))?;
    let s = start
        .checked_add(N)
        .and_then(|end| b.get(start..end))
        .ok_or_else(|| {
            Error::Elf(format!(
                "truncated: {N} bytes at offset {off:#x} are past the end ({} bytes)",
                b.len()
            ))
        })?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

fn u16_at(b: &[u8], off: u64) -> Result<u16> {
    Ok(u16::from_le_bytes(get::<2>(b, off)?))
}
fn u32_at(b: &[u8], off: u64) -> Result<u32> {
    Ok(u32::from_le_bytes(get::<4>(b, off)?))
}
fn u64_at(b: &[u8], off: u64) -> Result<u64> {
    Ok(u64::from_le_bytes(get::<8>(b, off)?))
}

impl Elf {
    /// Parses the ELF header and program headers of a little-endian ELF64 x86-64 file and checks
    /// that every PT_LOAD segment's file bytes are inside the file.
    pub(crate) fn parse(b: &[u8]) -> Result<Elf> {
        if get::<4>(b, 0)? != *b"\x7fELF" {
            return Err(Error::Elf("not an ELF file (bad magic)".into()));
        }
        if get::<1>(b, 4)? != [2] || get::<1>(b, 5)? != [1] {
            return Err(Error::Elf("not a little-endian ELF64 file".into()));
        }
        if u16_at(b, 18)? != 62 {
            return Err(Error::Elf("not an x86-64 ELF file".into()));
        }
        let entry = u64_at(b, 24)?;
        let phoff = u64_at(b, 32)?;
        let phentsize = u64::from(u16_at(b, 54)?);
        let phnum = u64::from(u16_at(b, 56)?);
        if phentsize < 56 {
            return Err(Error::Elf(format!(
                "program header size {phentsize} is less than 56"
            )));
        }
        if phnum > MAX_PHDRS {
            return Err(Error::Elf(format!("{phnum} program headers is too many")));
        }
        let mut loads = Vec::new();
        for i in 0..phnum {
            let ph = phoff
                .checked_add(i * phentsize)
                .ok_or_else(|| Error::Elf("program header offset overflows".into()))?;
            if u32_at(b, ph)? != PT_LOAD {
                continue;
            }
            let seg = LoadSegment {
                flags: u32_at(b, ph + 4)?,
                offset: u64_at(b, ph + 8)?,
                vaddr: u64_at(b, ph + 16)?,
                filesz: u64_at(b, ph + 32)?,
                memsz: u64_at(b, ph + 40)?,
            };
            let end = seg.offset.checked_add(seg.filesz);
            if end.is_none_or(|e| e > b.len() as u64) {
                return Err(Error::Elf(format!(
                    "PT_LOAD segment {i} file range is outside the file"
                )));
            }
            if seg.filesz > seg.memsz {
                return Err(Error::Elf(format!(
                    "PT_LOAD segment {i} has filesz > memsz"
                )));
            }
            if seg.vaddr.checked_add(seg.memsz).is_none_or(|e| e > 1 << 47) {
                return Err(Error::Elf(format!(
                    "PT_LOAD segment {i} address range overflows"
                )));
            }
            loads.push(seg);
        }
        if loads.is_empty() {
            return Err(Error::Elf("no PT_LOAD segment".into()));
        }
        Ok(Elf { entry, loads })
    }
}

/// Builds a minimal ELF64 with the given PT_LOAD segments (for tests of the Gramine layout).
#[cfg(test)]
pub(crate) fn build_test_elf(entry: u64, segs: &[(u64, u64, u32, Vec<u8>)]) -> Vec<u8> {
    // segs: (vaddr, memsz, flags, file bytes); file bytes placed at a page-congruent offset.
    let phoff = 64u64;
    let mut out = vec![0u8; 4096];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16..18].copy_from_slice(&3u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    let mut headers = Vec::new();
    for (vaddr, memsz, flags, data) in segs {
        // place data at an offset congruent to vaddr modulo the page size
        let base = (out.len() as u64).div_ceil(4096) * 4096;
        let off = base + vaddr % 4096;
        out.resize(off as usize, 0);
        out.extend_from_slice(data);
        headers.push((off, *vaddr, data.len() as u64, *memsz, *flags));
    }
    for (i, (off, vaddr, filesz, memsz, flags)) in headers.into_iter().enumerate() {
        let p = 64 + i * 56;
        out[p..p + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        out[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
        out[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
        out[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
        out[p + 24..p + 32].copy_from_slice(&vaddr.to_le_bytes());
        out[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        out[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        out[p + 48..p + 56].copy_from_slice(&4096u64.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_test_builder_writes() {
        let e = build_test_elf(
            0x1234,
            &[
                (0, 0x2000, 5, vec![1; 100]),
                (0x3010, 0x5000, 6, vec![2; 50]),
            ],
        );
        let p = Elf::parse(&e).unwrap();
        assert_eq!(p.entry, 0x1234);
        assert_eq!(p.loads.len(), 2);
        assert_eq!(p.loads[1].vaddr, 0x3010);
        assert_eq!(p.loads[1].offset % 4096, 0x10);
        assert_eq!(p.loads[1].filesz, 50);
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(Elf::parse(b"\x7fEL"), Err(Error::Elf(m)) if m.contains("truncated")));
        assert!(matches!(Elf::parse(&[0u8; 64]), Err(Error::Elf(m)) if m.contains("magic")));
        let mut e = build_test_elf(0, &[(0, 0x1000, 5, vec![1; 10])]);
        let len = e.len();
        e[64 + 32..64 + 40].copy_from_slice(&(len as u64).to_le_bytes()); // filesz past end
        assert!(matches!(Elf::parse(&e), Err(Error::Elf(m)) if m.contains("outside")));
        let mut e = build_test_elf(0, &[(0, 0x1000, 5, vec![1; 10])]);
        e[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // phoff
        assert!(Elf::parse(&e).is_err());
    }
}
