//! SGX enclave measurement and signing, computed exactly as the CPU does, on any machine.
//!
//! An operator must know an enclave's MRENCLAVE and MRSIGNER at build time to pin it in a
//! deployment manifest, usually on a build machine without SGX. This crate computes them:
//!
//! - [`Measurement`]: ECREATE / EADD / EEXTEND as a streaming SHA-256 → MRENCLAVE.
//! - [`sgxs`]: the SGXS stream format of the Fortanix EDP tools, read ([`measure_sgxs`]) and
//!   written ([`SgxsWriter`]); the same MRENCLAVE as `sgxs-sign`/`sgxs-info`.
//! - [`Sigstruct`]: build, sign (RSA-3072, e = 3, PKCS#1 v1.5, Q1/Q2), parse and verify the
//!   enclave signature; MRSIGNER; the KSS fields.
//! - [`gramine`]: render the Gramine manifest of a converted image canonically, and compute the
//!   MRENCLAVE `gramine-sgx-sign` would, given Gramine's `libpal.so`.
//!
//! The crate is pure: no files, no network, no clock. Bytes come in as slices or through a
//! generic [`std::io::Read`]; time and randomness are arguments.
//!
//! ```
//! use coffer_sgx::{Measurement, SecinfoFlags};
//! let mut m = Measurement::ecreate(1, 0x2000)?;
//! m.add_page(0, &[], SecinfoFlags::tcs(), true)?;
//! m.add_page(0x1000, b"\x90\x90", SecinfoFlags::reg(true, false, true), true)?;
//! let mrenclave: [u8; 32] = m.finish();
//! # Ok::<(), coffer_sgx::Error>(())
//! ```

#![forbid(unsafe_code)]

mod elf;
mod error;
pub mod gramine;
mod key;
mod measure;
pub mod sgxs;
mod sigstruct;
mod types;

/// The `rand_core` version the signing API takes (`rand_core::OsRng` for callers), re-exported
/// so that callers cannot pick an incompatible one. This crate never draws randomness itself.
pub use rand_core;

pub use error::{Error, Result};
pub use key::{SigningKey, EXPONENT, KEY_BITS, KEY_BYTES};
pub use measure::{
    eadd_record, ecreate_record, eextend_record, Measurement, TAG_EADD, TAG_ECREATE, TAG_EEXTEND,
};
pub use sgxs::{measure_sgxs, measure_sgxs_bytes, SgxsMeasurement, SgxsWriter};
pub use sigstruct::{
    bcd_date, format_date, offsets as sigstruct_offsets, parse_date, Sigstruct, SigstructBody,
    HEADER1 as SIGSTRUCT_HEADER1, HEADER2 as SIGSTRUCT_HEADER2,
};
pub use types::{Attributes, PageType, Secinfo, SecinfoFlags, Secs, Tcs, EEXTEND_CHUNK, PAGE_SIZE};
