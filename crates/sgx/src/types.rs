//! Architectural structures (Intel SDM vol. 3D, chapter 34 "SGX data structures"): SECS, SECINFO,
//! TCS, ATTRIBUTES. Each field's byte offset is a named constant, checked by a unit test, so a
//! reader can compare this file line by line with the SDM tables.

use std::fmt;

use serde::Serialize;

/// The SGX page size (EPC pages are 4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// EEXTEND measures 256 bytes at a time.
pub const EEXTEND_CHUNK: u64 = 256;

/// SECINFO.FLAGS (SDM table 34-19): permissions and page type of an EADDed page.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct SecinfoFlags(pub u64);

/// Page types (SECINFO.FLAGS bits 15:8, SDM table 34-20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageType {
    /// PT_SECS (0).
    Secs,
    /// PT_TCS (1): a thread control structure.
    Tcs,
    /// PT_REG (2): a regular page.
    Reg,
    /// PT_VA (3): version array.
    Va,
    /// PT_TRIM (4).
    Trim,
    /// Any other value, kept so that it can be shown.
    Other(u8),
}

impl PageType {
    /// The value in SECINFO.FLAGS bits 15:8.
    pub fn value(self) -> u8 {
        match self {
            PageType::Secs => 0,
            PageType::Tcs => 1,
            PageType::Reg => 2,
            PageType::Va => 3,
            PageType::Trim => 4,
            PageType::Other(v) => v,
        }
    }

    /// Decodes bits 15:8.
    pub fn from_value(v: u8) -> Self {
        match v {
            0 => PageType::Secs,
            1 => PageType::Tcs,
            2 => PageType::Reg,
            3 => PageType::Va,
            4 => PageType::Trim,
            v => PageType::Other(v),
        }
    }
}

impl SecinfoFlags {
    /// Read permission.
    pub const R: u64 = 1 << 0;
    /// Write permission.
    pub const W: u64 = 1 << 1;
    /// Execute permission.
    pub const X: u64 = 1 << 2;
    /// EPCM PENDING (SGX2; must be 0 for EADD).
    pub const PENDING: u64 = 1 << 3;
    /// EPCM MODIFIED (SGX2; must be 0 for EADD).
    pub const MODIFIED: u64 = 1 << 4;
    /// PR (SGX2; must be 0 for EADD).
    pub const PR: u64 = 1 << 5;
    /// Shift of the page type field.
    pub const PAGE_TYPE_SHIFT: u32 = 8;

    /// A TCS page (no permissions, as EADD requires for TCS).
    pub const fn tcs() -> Self {
        SecinfoFlags(1 << Self::PAGE_TYPE_SHIFT)
    }

    /// A regular page with the given permissions.
    pub const fn reg(r: bool, w: bool, x: bool) -> Self {
        let mut v = 2u64 << Self::PAGE_TYPE_SHIFT;
        if r {
            v |= Self::R;
        }
        if w {
            v |= Self::W;
        }
        if x {
            v |= Self::X;
        }
        SecinfoFlags(v)
    }

    /// The page type.
    pub fn page_type(self) -> PageType {
        PageType::from_value(((self.0 >> Self::PAGE_TYPE_SHIFT) & 0xff) as u8)
    }

    /// Checks what EADD checks on SECINFO (SDM EADD pseudo-code): page type REG or TCS, reserved
    /// bits zero, W only with R, and a TCS page with no permission bits (the canonical form the
    /// Fortanix tools and the kernel use).
    pub fn check_for_eadd(self) -> std::result::Result<(), String> {
        let known = Self::R | Self::W | Self::X | (0xff << Self::PAGE_TYPE_SHIFT);
        if self.0 & !known != 0 {
            return Err(format!(
                "SECINFO flags {:#x}: reserved or SGX2-only bits set ({:#x})",
                self.0,
                self.0 & !known
            ));
        }
        match self.page_type() {
            PageType::Reg => {
                if self.0 & Self::W != 0 && self.0 & Self::R == 0 {
                    return Err(format!("SECINFO flags {:#x}: W without R", self.0));
                }
            }
            PageType::Tcs => {
                if self.0 & (Self::R | Self::W | Self::X) != 0 {
                    return Err(format!(
                        "SECINFO flags {:#x}: a TCS page has no R/W/X bits",
                        self.0
                    ));
                }
            }
            t => {
                return Err(format!(
                    "SECINFO flags {:#x}: page type {} cannot be EADDed (only REG or TCS)",
                    self.0,
                    t.value()
                ))
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SecinfoFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecinfoFlags({:#x} {self})", self.0)
    }
}

impl fmt::Display for SecinfoFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.page_type() {
            PageType::Tcs => "TCS".to_string(),
            PageType::Reg => "REG".to_string(),
            PageType::Secs => "SECS".to_string(),
            PageType::Va => "VA".to_string(),
            PageType::Trim => "TRIM".to_string(),
            PageType::Other(v) => format!("TYPE{v}"),
        };
        let p = |bit: u64, c: char| if self.0 & bit != 0 { c } else { '-' };
        write!(
            f,
            "{t}:{}{}{}",
            p(Self::R, 'R'),
            p(Self::W, 'W'),
            p(Self::X, 'X')
        )
    }
}

/// SECINFO (64 bytes, SDM table 34-18). Only FLAGS is defined; the rest is reserved and zero.
/// EADD measures the first 48 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Secinfo {
    /// SECINFO.FLAGS.
    pub flags: SecinfoFlags,
}

impl Secinfo {
    /// Size of SECINFO.
    pub const SIZE: usize = 64;
    /// Offset of FLAGS.
    pub const OFF_FLAGS: usize = 0;
    /// Offset of the reserved area.
    pub const OFF_RESERVED: usize = 8;

    /// The 64-byte architectural encoding.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[Self::OFF_FLAGS..Self::OFF_FLAGS + 8].copy_from_slice(&self.flags.0.to_le_bytes());
        b
    }
}

/// ATTRIBUTES (16 bytes, SDM table 34-3): FLAGS then XFRM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct Attributes {
    /// ATTRIBUTES.FLAGS (see the `FLAG_*` constants).
    pub flags: u64,
    /// XFRM: the XSAVE feature set the enclave runs with.
    pub xfrm: u64,
}

impl Attributes {
    /// INIT: set by EINIT (never in a SIGSTRUCT).
    pub const FLAG_INIT: u64 = 1 << 0;
    /// DEBUG: the enclave can be read and written by a debugger. Never trust one in production.
    pub const FLAG_DEBUG: u64 = 1 << 1;
    /// MODE64BIT: a 64-bit enclave.
    pub const FLAG_MODE64BIT: u64 = 1 << 2;
    /// PROVISIONKEY: may request the provisioning key.
    pub const FLAG_PROVISIONKEY: u64 = 1 << 4;
    /// EINITTOKENKEY: may request the launch key.
    pub const FLAG_EINITTOKENKEY: u64 = 1 << 5;
    /// CET: control-flow enforcement enabled.
    pub const FLAG_CET: u64 = 1 << 6;
    /// KSS: key separation and sharing (enables ISVFAMILYID/ISVEXTPRODID/CONFIGID).
    pub const FLAG_KSS: u64 = 1 << 7;
    /// AEXNOTIFY.
    pub const FLAG_AEXNOTIFY: u64 = 1 << 10;
    /// XFRM legacy value (x87 + SSE), which every enclave must have.
    pub const XFRM_LEGACY: u64 = 0x3;

    /// Offset of FLAGS inside ATTRIBUTES.
    pub const OFF_FLAGS: usize = 0;
    /// Offset of XFRM inside ATTRIBUTES.
    pub const OFF_XFRM: usize = 8;

    /// The 16-byte encoding.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..].copy_from_slice(&self.xfrm.to_le_bytes());
        b
    }

    /// Whether the DEBUG flag is set.
    pub fn debug(&self) -> bool {
        self.flags & Self::FLAG_DEBUG != 0
    }

    /// Names of the set flags, for people (unknown bits shown in hex).
    pub fn flag_names(&self) -> Vec<String> {
        let names = [
            (Self::FLAG_INIT, "INIT"),
            (Self::FLAG_DEBUG, "DEBUG"),
            (Self::FLAG_MODE64BIT, "MODE64BIT"),
            (Self::FLAG_PROVISIONKEY, "PROVISIONKEY"),
            (Self::FLAG_EINITTOKENKEY, "EINITTOKENKEY"),
            (Self::FLAG_CET, "CET"),
            (Self::FLAG_KSS, "KSS"),
            (Self::FLAG_AEXNOTIFY, "AEXNOTIFY"),
        ];
        let mut out = Vec::new();
        let mut rest = self.flags;
        for (bit, name) in names {
            if self.flags & bit != 0 {
                out.push(name.to_string());
                rest &= !bit;
            }
        }
        if rest != 0 {
            out.push(format!("{rest:#x}"));
        }
        out
    }
}

/// SECS (4096 bytes, SDM table 34-3), the enclave control structure ECREATE takes. Only the
/// fields an enclave builder sets are modelled; the rest is reserved and zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secs {
    /// SIZE: enclave size in bytes (a power of two).
    pub size: u64,
    /// BASEADDR: linear base address (naturally aligned to SIZE).
    pub base_addr: u64,
    /// SSAFRAMESIZE: size of one SSA frame in pages.
    pub ssa_frame_size: u32,
    /// MISCSELECT.
    pub miscselect: u32,
    /// ATTRIBUTES.
    pub attributes: Attributes,
    /// MRENCLAVE (set by the CPU).
    pub mrenclave: [u8; 32],
    /// MRSIGNER (set by EINIT).
    pub mrsigner: [u8; 32],
    /// CONFIGID (KSS).
    pub config_id: [u8; 64],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// CONFIGSVN (KSS).
    pub config_svn: u16,
}

impl Default for Secs {
    fn default() -> Self {
        Secs {
            size: 0,
            base_addr: 0,
            ssa_frame_size: 0,
            miscselect: 0,
            attributes: Attributes::default(),
            mrenclave: [0; 32],
            mrsigner: [0; 32],
            config_id: [0; 64],
            isv_prod_id: 0,
            isv_svn: 0,
            config_svn: 0,
        }
    }
}

impl Secs {
    /// Size of SECS.
    pub const SIZE: usize = 4096;
    /// Offset of SIZE.
    pub const OFF_SIZE: usize = 0;
    /// Offset of BASEADDR.
    pub const OFF_BASEADDR: usize = 8;
    /// Offset of SSAFRAMESIZE.
    pub const OFF_SSAFRAMESIZE: usize = 16;
    /// Offset of MISCSELECT.
    pub const OFF_MISCSELECT: usize = 20;
    /// Offset of ATTRIBUTES.
    pub const OFF_ATTRIBUTES: usize = 48;
    /// Offset of MRENCLAVE.
    pub const OFF_MRENCLAVE: usize = 64;
    /// Offset of MRSIGNER.
    pub const OFF_MRSIGNER: usize = 128;
    /// Offset of CONFIGID.
    pub const OFF_CONFIGID: usize = 192;
    /// Offset of ISVPRODID.
    pub const OFF_ISVPRODID: usize = 256;
    /// Offset of ISVSVN.
    pub const OFF_ISVSVN: usize = 258;
    /// Offset of CONFIGSVN.
    pub const OFF_CONFIGSVN: usize = 260;

    /// The 4096-byte architectural encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put(&mut b, Self::OFF_SIZE, &self.size.to_le_bytes());
        put(&mut b, Self::OFF_BASEADDR, &self.base_addr.to_le_bytes());
        put(
            &mut b,
            Self::OFF_SSAFRAMESIZE,
            &self.ssa_frame_size.to_le_bytes(),
        );
        put(&mut b, Self::OFF_MISCSELECT, &self.miscselect.to_le_bytes());
        put(&mut b, Self::OFF_ATTRIBUTES, &self.attributes.to_bytes());
        put(&mut b, Self::OFF_MRENCLAVE, &self.mrenclave);
        put(&mut b, Self::OFF_MRSIGNER, &self.mrsigner);
        put(&mut b, Self::OFF_CONFIGID, &self.config_id);
        put(&mut b, Self::OFF_ISVPRODID, &self.isv_prod_id.to_le_bytes());
        put(&mut b, Self::OFF_ISVSVN, &self.isv_svn.to_le_bytes());
        put(&mut b, Self::OFF_CONFIGSVN, &self.config_svn.to_le_bytes());
        b
    }
}

/// TCS (4096 bytes, SDM table 34-22): a thread's entry point and its SSA and FS/GS bases, all as
/// offsets from the enclave base. The page's bytes are EEXTENDed like any other page.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tcs {
    /// FLAGS (bit 0 DBGOPTIN).
    pub flags: u64,
    /// OSSA: offset of the SSA stack.
    pub ossa: u64,
    /// CSSA: current SSA slot (0 when built).
    pub cssa: u32,
    /// NSSA: number of SSA frames.
    pub nssa: u32,
    /// OENTRY: entry point offset.
    pub oentry: u64,
    /// OFSBASGX: FS base offset.
    pub ofs_base: u64,
    /// OGSBASGX: GS base offset.
    pub ogs_base: u64,
    /// FSLIMIT.
    pub fs_limit: u32,
    /// GSLIMIT.
    pub gs_limit: u32,
}

impl Tcs {
    /// Size of a TCS page.
    pub const SIZE: usize = 4096;
    /// Offset of FLAGS (bytes 0..8 are reserved).
    pub const OFF_FLAGS: usize = 8;
    /// Offset of OSSA.
    pub const OFF_OSSA: usize = 16;
    /// Offset of CSSA.
    pub const OFF_CSSA: usize = 24;
    /// Offset of NSSA.
    pub const OFF_NSSA: usize = 28;
    /// Offset of OENTRY.
    pub const OFF_OENTRY: usize = 32;
    /// Offset of OFSBASGX (40..48 reserved, formerly AEP).
    pub const OFF_OFSBASGX: usize = 48;
    /// Offset of OGSBASGX.
    pub const OFF_OGSBASGX: usize = 56;
    /// Offset of FSLIMIT.
    pub const OFF_FSLIMIT: usize = 64;
    /// Offset of GSLIMIT.
    pub const OFF_GSLIMIT: usize = 68;

    /// The 4096-byte page.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put(&mut b, Self::OFF_FLAGS, &self.flags.to_le_bytes());
        put(&mut b, Self::OFF_OSSA, &self.ossa.to_le_bytes());
        put(&mut b, Self::OFF_CSSA, &self.cssa.to_le_bytes());
        put(&mut b, Self::OFF_NSSA, &self.nssa.to_le_bytes());
        put(&mut b, Self::OFF_OENTRY, &self.oentry.to_le_bytes());
        put(&mut b, Self::OFF_OFSBASGX, &self.ofs_base.to_le_bytes());
        put(&mut b, Self::OFF_OGSBASGX, &self.ogs_base.to_le_bytes());
        put(&mut b, Self::OFF_FSLIMIT, &self.fs_limit.to_le_bytes());
        put(&mut b, Self::OFF_GSLIMIT, &self.gs_limit.to_le_bytes());
        b
    }
}

/// Writes `v` at `off` in a buffer we own and sized ourselves (never used on input bytes).
pub(crate) fn put(buf: &mut [u8], off: usize, v: &[u8]) {
    buf[off..off + v.len()].copy_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }

    #[test]
    fn secs_field_offsets_match_sdm() {
        let s = Secs {
            size: 0x1111_1111_1111_1111,
            base_addr: 0x2222_2222_2222_2222,
            ssa_frame_size: 0x3333_3333,
            miscselect: 0x4444_4444,
            attributes: Attributes {
                flags: 0x5555,
                xfrm: 0x6666,
            },
            mrenclave: [0x77; 32],
            mrsigner: [0x88; 32],
            config_id: [0x99; 64],
            isv_prod_id: 0xaaaa,
            isv_svn: 0xbbbb,
            config_svn: 0xcccc,
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), 4096);
        assert_eq!(u64_at(&b, 0), 0x1111_1111_1111_1111);
        assert_eq!(u64_at(&b, 8), 0x2222_2222_2222_2222);
        assert_eq!(u32_at(&b, 16), 0x3333_3333);
        assert_eq!(u32_at(&b, 20), 0x4444_4444);
        assert!(b[24..48].iter().all(|&x| x == 0), "reserved 24..48");
        assert_eq!(u64_at(&b, 48), 0x5555);
        assert_eq!(u64_at(&b, 56), 0x6666);
        assert_eq!(&b[64..96], &[0x77; 32]);
        assert!(b[96..128].iter().all(|&x| x == 0));
        assert_eq!(&b[128..160], &[0x88; 32]);
        assert!(b[160..192].iter().all(|&x| x == 0));
        assert_eq!(&b[192..256], &[0x99; 64]);
        assert_eq!(u16_at(&b, 256), 0xaaaa);
        assert_eq!(u16_at(&b, 258), 0xbbbb);
        assert_eq!(u16_at(&b, 260), 0xcccc);
        assert!(b[262..].iter().all(|&x| x == 0));
    }

    #[test]
    fn tcs_field_offsets_match_sdm() {
        let t = Tcs {
            flags: 1,
            ossa: 0x1000,
            cssa: 7,
            nssa: 2,
            oentry: 0xdead_beef,
            ofs_base: 0x4000,
            ogs_base: 0x5000,
            fs_limit: 0xfff,
            gs_limit: 0xffe,
        };
        let b = t.to_bytes();
        assert_eq!(b.len(), 4096);
        assert_eq!(u64_at(&b, 0), 0, "reserved 0..8");
        assert_eq!(u64_at(&b, 8), 1);
        assert_eq!(u64_at(&b, 16), 0x1000);
        assert_eq!(u32_at(&b, 24), 7);
        assert_eq!(u32_at(&b, 28), 2);
        assert_eq!(u64_at(&b, 32), 0xdead_beef);
        assert_eq!(u64_at(&b, 40), 0, "reserved (old OAEP)");
        assert_eq!(u64_at(&b, 48), 0x4000);
        assert_eq!(u64_at(&b, 56), 0x5000);
        assert_eq!(u32_at(&b, 64), 0xfff);
        assert_eq!(u32_at(&b, 68), 0xffe);
        assert!(b[72..].iter().all(|&x| x == 0));
    }

    #[test]
    fn secinfo_layout_and_flag_bits_match_sdm() {
        let s = Secinfo {
            flags: SecinfoFlags::reg(true, true, true),
        };
        let b = s.to_bytes();
        assert_eq!(u64_at(&b, 0), 0x207);
        assert!(b[8..].iter().all(|&x| x == 0));
        assert_eq!(SecinfoFlags::tcs().0, 0x100);
        assert_eq!(SecinfoFlags::reg(true, false, false).0, 0x201);
        assert_eq!(SecinfoFlags::reg(true, false, true).0, 0x205);
        assert_eq!(SecinfoFlags::tcs().page_type(), PageType::Tcs);
        assert_eq!(SecinfoFlags(0x207).to_string(), "REG:RWX");
        assert_eq!(SecinfoFlags(0x100).to_string(), "TCS:---");
    }

    #[test]
    fn eadd_secinfo_rules() {
        assert!(SecinfoFlags(0x207).check_for_eadd().is_ok());
        assert!(SecinfoFlags(0x100).check_for_eadd().is_ok());
        assert!(SecinfoFlags(0x200).check_for_eadd().is_ok());
        assert!(SecinfoFlags(0x202)
            .check_for_eadd()
            .unwrap_err()
            .contains("W without R"));
        assert!(SecinfoFlags(0x101)
            .check_for_eadd()
            .unwrap_err()
            .contains("TCS"));
        assert!(SecinfoFlags(0x307)
            .check_for_eadd()
            .unwrap_err()
            .contains("page type 3"));
        assert!(SecinfoFlags(0x000)
            .check_for_eadd()
            .unwrap_err()
            .contains("page type 0"));
        assert!(SecinfoFlags(0x208)
            .check_for_eadd()
            .unwrap_err()
            .contains("reserved"));
        assert!(SecinfoFlags(0x1_0000_0207)
            .check_for_eadd()
            .unwrap_err()
            .contains("reserved"));
    }

    #[test]
    fn attribute_bits_match_sdm() {
        assert_eq!(Attributes::FLAG_DEBUG, 0x2);
        assert_eq!(Attributes::FLAG_MODE64BIT, 0x4);
        assert_eq!(Attributes::FLAG_KSS, 0x80);
        let a = Attributes {
            flags: 0x6 | 0x1000,
            xfrm: 3,
        };
        assert_eq!(a.flag_names(), vec!["DEBUG", "MODE64BIT", "0x1000"]);
        assert!(a.debug());
        let b = a.to_bytes();
        assert_eq!(u64_at(&b, Attributes::OFF_FLAGS), 0x1006);
        assert_eq!(u64_at(&b, Attributes::OFF_XFRM), 3);
    }
}
