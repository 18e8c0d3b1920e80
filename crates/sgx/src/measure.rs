//! MRENCLAVE as the CPU computes it: a SHA-256 over the 64-byte ECREATE, EADD and EEXTEND
//! records (SDM vol. 3D §39 pseudo-code of ECREATE/EADD/EEXTEND), streamed so that a 1 GiB
//! enclave never needs to be in memory.
//!
//! Record layouts (each 64 bytes, little-endian):
//! - ECREATE: `"ECREATE\0"`, SSAFRAMESIZE (u32), SIZE (u64), 44 zero bytes.
//! - EADD: `"EADD\0\0\0\0"`, page offset (u64), the first 48 bytes of SECINFO (FLAGS, 40 zero).
//! - EEXTEND: `"EEXTEND\0"`, chunk offset (u64), 48 zero bytes, then the 256 data bytes.
//!
//! These are byte for byte the records of the SGXS stream format, which is why [`crate::sgxs`]
//! can hash an SGXS file without re-encoding it.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::types::{SecinfoFlags, EEXTEND_CHUNK, PAGE_SIZE};

/// Tag of an ECREATE record (`"ECREATE\0"` as a little-endian u64).
pub const TAG_ECREATE: u64 = u64::from_le_bytes(*b"ECREATE\0");
/// Tag of an EADD record.
pub const TAG_EADD: u64 = u64::from_le_bytes(*b"EADD\0\0\0\0");
/// Tag of an EEXTEND record.
pub const TAG_EEXTEND: u64 = u64::from_le_bytes(*b"EEXTEND\0");

/// The 64-byte ECREATE record.
pub fn ecreate_record(ssa_frame_size: u32, size: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..8].copy_from_slice(&TAG_ECREATE.to_le_bytes());
    r[8..12].copy_from_slice(&ssa_frame_size.to_le_bytes());
    r[12..20].copy_from_slice(&size.to_le_bytes());
    r
}

/// The 64-byte EADD record.
pub fn eadd_record(offset: u64, flags: SecinfoFlags) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..8].copy_from_slice(&TAG_EADD.to_le_bytes());
    r[8..16].copy_from_slice(&offset.to_le_bytes());
    r[16..24].copy_from_slice(&flags.0.to_le_bytes());
    r
}

/// The 64-byte EEXTEND header (the 256 data bytes follow it).
pub fn eextend_record(offset: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..8].copy_from_slice(&TAG_EEXTEND.to_le_bytes());
    r[8..16].copy_from_slice(&offset.to_le_bytes());
    r
}

/// Checks ECREATE parameters as the CPU does: SIZE a power of two of at least two pages
/// (one for SECS' own accounting, one for content), SSAFRAMESIZE at least one page.
pub(crate) fn check_ecreate(ssa_frame_size: u32, size: u64) -> std::result::Result<(), String> {
    if ssa_frame_size == 0 {
        return Err("SSAFRAMESIZE must be at least 1 page".into());
    }
    if !size.is_power_of_two() || size < 2 * PAGE_SIZE {
        return Err(format!(
            "enclave SIZE {size:#x} must be a power of two of at least 0x2000"
        ));
    }
    Ok(())
}

/// The rules on the order of EADD/EEXTEND that both the API and the SGXS reader enforce:
/// pages inside the enclave, page-aligned, each EADDed once; EEXTEND only on 256-byte chunks of
/// the page EADDed last, each chunk once. (The CPU would also accept EEXTEND of an older page;
/// no builder does that, and refusing it keeps the bookkeeping O(1) per chunk.)
#[derive(Debug)]
pub(crate) struct Rules {
    size: u64,
    last_page: Option<u64>,
    pages: PageSet,
    chunks_seen: u16,
}

/// The set of EADDed pages as disjoint runs `start → end` (page offsets, end exclusive). Builders
/// add pages in ascending runs (Gramine: one run per area, areas top-down), so this stays a
/// handful of entries even for a 64 GiB enclave, where a set of single pages would take GBs.
#[derive(Debug, Default)]
struct PageSet {
    runs: BTreeMap<u64, u64>,
    count: u64,
}

impl PageSet {
    /// Adds the page at `p`; false if it was already there.
    fn insert(&mut self, p: u64) -> bool {
        let end = p + PAGE_SIZE; // p < size <= 2^63, so no overflow
        let mut start = p;
        let mut new_end = end;
        if let Some((&s, &e)) = self.runs.range(..=p).next_back() {
            if e > p {
                return false;
            }
            if e == p {
                start = s;
            }
        }
        if let Some(&e) = self.runs.get(&end) {
            self.runs.remove(&end);
            new_end = e;
        }
        self.runs.insert(start, new_end);
        self.count += 1;
        true
    }
}

impl Rules {
    pub(crate) fn new(size: u64) -> Self {
        Rules {
            size,
            last_page: None,
            pages: PageSet::default(),
            chunks_seen: 0,
        }
    }

    pub(crate) fn eadd(
        &mut self,
        offset: u64,
        flags: SecinfoFlags,
    ) -> std::result::Result<(), String> {
        if offset % PAGE_SIZE != 0 {
            return Err(format!("EADD offset {offset:#x} is not page-aligned"));
        }
        if offset >= self.size {
            return Err(format!(
                "EADD offset {offset:#x} is outside the enclave (size {:#x})",
                self.size
            ));
        }
        flags.check_for_eadd()?;
        if !self.pages.insert(offset) {
            return Err(format!("page {offset:#x} is EADDed twice"));
        }
        self.last_page = Some(offset);
        self.chunks_seen = 0;
        Ok(())
    }

    pub(crate) fn eextend(&mut self, offset: u64) -> std::result::Result<(), String> {
        if offset % EEXTEND_CHUNK != 0 {
            return Err(format!(
                "EEXTEND offset {offset:#x} is not 256-byte aligned"
            ));
        }
        let page = offset - offset % PAGE_SIZE;
        if self.last_page != Some(page) {
            return Err(format!(
                "EEXTEND offset {offset:#x} is not in the page EADDed last"
            ));
        }
        let bit = 1u16 << ((offset % PAGE_SIZE) / EEXTEND_CHUNK);
        if self.chunks_seen & bit != 0 {
            return Err(format!("chunk {offset:#x} is EEXTENDed twice"));
        }
        self.chunks_seen |= bit;
        Ok(())
    }

    pub(crate) fn page_count(&self) -> u64 {
        self.pages.count
    }
}

/// A streaming MRENCLAVE computation: call [`Measurement::ecreate`], then EADD/EEXTEND in the
/// order the loader would, then [`Measurement::finish`].
///
/// The sequence is checked against SGX's rules (see [`SecinfoFlags::check_for_eadd`]); a
/// sequence the CPU would fault on is an error rather than a hash nobody can reproduce.
#[derive(Debug)]
pub struct Measurement {
    hasher: Sha256,
    ssa_frame_size: u32,
    size: u64,
    rules: Rules,
}

impl Measurement {
    /// ECREATE with SSAFRAMESIZE (in pages) and SIZE (bytes, a power of two).
    pub fn ecreate(ssa_frame_size: u32, size: u64) -> Result<Self> {
        check_ecreate(ssa_frame_size, size).map_err(Error::Layout)?;
        let mut hasher = Sha256::new();
        hasher.update(ecreate_record(ssa_frame_size, size));
        Ok(Measurement {
            hasher,
            ssa_frame_size,
            size,
            rules: Rules::new(size),
        })
    }

    /// Enclave size given to ECREATE.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// SSAFRAMESIZE given to ECREATE.
    pub fn ssa_frame_size(&self) -> u32 {
        self.ssa_frame_size
    }

    /// Number of pages EADDed so far.
    pub fn page_count(&self) -> u64 {
        self.rules.page_count()
    }

    /// EADD of the page at `offset` (from the enclave base) with SECINFO `flags`; returns the
    /// record that was hashed.
    pub fn eadd(&mut self, offset: u64, flags: SecinfoFlags) -> Result<[u8; 64]> {
        self.rules.eadd(offset, flags).map_err(Error::Layout)?;
        let r = eadd_record(offset, flags);
        self.hasher.update(r);
        Ok(r)
    }

    /// EEXTEND of the 256 bytes at `offset`; returns the 64-byte header that was hashed before
    /// the data.
    pub fn eextend(&mut self, offset: u64, chunk: &[u8; 256]) -> Result<[u8; 64]> {
        self.rules.eextend(offset).map_err(Error::Layout)?;
        let r = eextend_record(offset);
        self.hasher.update(r);
        self.hasher.update(chunk);
        Ok(r)
    }

    /// EADD of one page, then EEXTEND of all 16 chunks if `measure` (the usual case; Gramine's
    /// heap pages are added unmeasured). `data` may be shorter than a page: the rest is zero.
    pub fn add_page(
        &mut self,
        offset: u64,
        data: &[u8],
        flags: SecinfoFlags,
        measure: bool,
    ) -> Result<()> {
        if data.len() as u64 > PAGE_SIZE {
            return Err(Error::Layout(format!(
                "page data at {offset:#x} is {} bytes, more than a page",
                data.len()
            )));
        }
        self.eadd(offset, flags)?;
        if measure {
            let mut page = [0u8; PAGE_SIZE as usize];
            page[..data.len()].copy_from_slice(data);
            for (i, chunk) in page.chunks_exact(EEXTEND_CHUNK as usize).enumerate() {
                let mut c = [0u8; 256];
                c.copy_from_slice(chunk);
                self.eextend(offset + i as u64 * EEXTEND_CHUNK, &c)?;
            }
        }
        Ok(())
    }

    /// The MRENCLAVE (what EINIT would put in SECS.MRENCLAVE).
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layouts_match_sdm() {
        let r = ecreate_record(1, 0x8000);
        assert_eq!(&r[..8], b"ECREATE\0");
        assert_eq!(&r[8..12], &1u32.to_le_bytes());
        assert_eq!(&r[12..20], &0x8000u64.to_le_bytes());
        assert!(r[20..].iter().all(|&b| b == 0));
        let r = eadd_record(0x3000, SecinfoFlags(0x205));
        assert_eq!(&r[..8], b"EADD\0\0\0\0");
        assert_eq!(&r[8..16], &0x3000u64.to_le_bytes());
        assert_eq!(&r[16..24], &0x205u64.to_le_bytes());
        assert!(r[24..].iter().all(|&b| b == 0));
        let r = eextend_record(0x3100);
        assert_eq!(&r[..8], b"EEXTEND\0");
        assert_eq!(&r[8..16], &0x3100u64.to_le_bytes());
        assert!(r[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ecreate_rules() {
        assert!(
            matches!(Measurement::ecreate(0, 0x8000), Err(Error::Layout(m)) if m.contains("SSAFRAMESIZE"))
        );
        assert!(
            matches!(Measurement::ecreate(1, 0x9000), Err(Error::Layout(m)) if m.contains("power of two"))
        );
        assert!(
            matches!(Measurement::ecreate(1, 0x1000), Err(Error::Layout(m)) if m.contains("power of two"))
        );
        assert!(Measurement::ecreate(1, 0x2000).is_ok());
    }

    #[test]
    fn eadd_eextend_rules() {
        let mut m = Measurement::ecreate(1, 0x4000).unwrap();
        assert!(
            matches!(m.eadd(0x10, SecinfoFlags(0x201)), Err(Error::Layout(e)) if e.contains("page-aligned"))
        );
        assert!(
            matches!(m.eadd(0x4000, SecinfoFlags(0x201)), Err(Error::Layout(e)) if e.contains("outside"))
        );
        m.eadd(0x1000, SecinfoFlags(0x201)).unwrap();
        assert!(
            matches!(m.eextend(0x0, &[0; 256]), Err(Error::Layout(e)) if e.contains("EADDed last"))
        );
        m.eextend(0x1100, &[0; 256]).unwrap();
        assert!(
            matches!(m.eextend(0x1100, &[0; 256]), Err(Error::Layout(e)) if e.contains("twice"))
        );
        assert!(
            matches!(m.eextend(0x1180, &[0; 256]), Err(Error::Layout(e)) if e.contains("256-byte"))
        );
        m.eadd(0x0, SecinfoFlags(0x100)).unwrap(); // descending order is allowed (Gramine does it)
        assert!(
            matches!(m.eadd(0x1000, SecinfoFlags(0x201)), Err(Error::Layout(e)) if e.contains("twice"))
        );
        assert_eq!(m.page_count(), 2);
    }

    #[test]
    fn page_set_merges_runs_and_finds_duplicates() {
        let mut s = PageSet::default();
        for p in [5u64, 6, 7, 1, 2, 9, 8, 3] {
            assert!(s.insert(p * PAGE_SIZE), "page {p}");
        }
        assert_eq!(s.count, 8);
        // Runs: 1..4 and 5..10 (4 is missing).
        assert_eq!(s.runs.len(), 2);
        for p in [1u64, 2, 3, 5, 6, 7, 8, 9] {
            assert!(!s.insert(p * PAGE_SIZE), "duplicate page {p} accepted");
        }
        assert!(s.insert(4 * PAGE_SIZE));
        assert_eq!(s.runs.len(), 1);
        assert_eq!(s.runs.get(&PAGE_SIZE), Some(&(10 * PAGE_SIZE)));
        assert!(s.insert(0));
        assert_eq!(s.runs.len(), 1);
        assert_eq!(s.count, 10);
    }

    #[test]
    fn add_page_equals_manual_sequence() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let mut a = Measurement::ecreate(1, 0x2000).unwrap();
        a.add_page(0x1000, &data, SecinfoFlags(0x203), true)
            .unwrap();
        let mut b = Measurement::ecreate(1, 0x2000).unwrap();
        b.eadd(0x1000, SecinfoFlags(0x203)).unwrap();
        for i in 0..16u64 {
            let mut c = [0u8; 256];
            c.copy_from_slice(&data[(i * 256) as usize..((i + 1) * 256) as usize]);
            b.eextend(0x1000 + i * 256, &c).unwrap();
        }
        assert_eq!(a.finish(), b.finish());
        // Unmeasured content does not change the hash; measured content does.
        let mut c = Measurement::ecreate(1, 0x2000).unwrap();
        c.add_page(0x1000, &data, SecinfoFlags(0x203), false)
            .unwrap();
        let mut d = Measurement::ecreate(1, 0x2000).unwrap();
        d.add_page(0x1000, &[], SecinfoFlags(0x203), false).unwrap();
        assert_eq!(c.finish(), d.finish());
    }
}
