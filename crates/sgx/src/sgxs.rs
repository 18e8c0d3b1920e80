//! The SGXS stream format of the Fortanix EDP tools (`sgxs` crate, `sgxs-sign`, `sgxs-info`):
//! a sequence of 64-byte records, tag first, each EEXTEND record followed by its 256 data bytes.
//!
//! | tag (u64 LE) | bytes | payload |
//! |---|---|---|
//! | `"ECREATE\0"` | 64 | SSAFRAMESIZE u32 @8, SIZE u64 @12 |
//! | `"UNSIZED\0"` | 64 | as ECREATE, size to be filled in later (cannot be measured) |
//! | `"EADD\0\0\0\0"` | 64 | offset u64 @8, SECINFO.FLAGS u64 @16 |
//! | `"EEXTEND\0"` | 64 + 256 | offset u64 @8, then the data |
//! | `"UNMEASRD"` | 64 + 256 | offset u64 @8, then data loaded but not measured |
//!
//! A measured record is byte for byte what the CPU hashes, so [`measure_sgxs`] feeds the stream
//! to SHA-256 in large contiguous runs, without re-encoding. Every record is still checked: the
//! first is ECREATE and no other is; reserved bytes are zero (the Fortanix reader ignores them
//! and hashes zeros, so accepting non-zero ones would let two tools disagree); EADD offsets are
//! page-aligned, inside the enclave, each page once, with SECINFO flags EADD accepts; EEXTEND
//! chunks are 256-aligned, in the page added last, each once.

use std::io::{Read, Write};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::measure::{
    check_ecreate, eextend_record, Measurement, Rules, TAG_EADD, TAG_ECREATE, TAG_EEXTEND,
};
use crate::types::{PageType, SecinfoFlags, PAGE_SIZE};

/// Tag of an unsized ECREATE record (`"UNSIZED\0"`).
pub const TAG_UNSIZED: u64 = u64::from_le_bytes(*b"UNSIZED\0");
/// Tag of an unmeasured data record (`"UNMEASRD"`).
pub const TAG_UNMEASURED: u64 = u64::from_le_bytes(*b"UNMEASRD");

const HEADER: usize = 64;
const DATA: usize = 256;
/// Read buffer: large enough that SHA-256 runs on long contiguous slices.
const BUF: usize = 1 << 20;
/// Checked records are hashed in runs of this size, so the bytes are hashed while still in the
/// CPU cache from checking their headers (one pass over memory instead of two).
const HASH_RUN: usize = 128 << 10;

/// What measuring an SGXS stream found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SgxsMeasurement {
    /// MRENCLAVE.
    #[serde(with = "hex::serde")]
    pub mrenclave: [u8; 32],
    /// Enclave size from ECREATE.
    pub enclave_size: u64,
    /// SSAFRAMESIZE from ECREATE (pages).
    pub ssa_frame_size: u32,
    /// Number of EADDed pages.
    pub pages: u64,
    /// Number of TCS pages.
    pub tcs_pages: u64,
    /// Number of EEXTENDed 256-byte chunks.
    pub measured_chunks: u64,
    /// Number of loaded-but-unmeasured chunks.
    pub unmeasured_chunks: u64,
    /// Length of the stream in bytes.
    pub stream_len: u64,
}

/// Reads an SGXS stream to its end and computes MRENCLAVE, checking every record.
///
/// `progress` is called with the number of stream bytes consumed so far, after every read of
/// up to 1 MiB, so a caller can draw a progress bar; pass `|_| {}` otherwise.
pub fn measure_sgxs<R: Read, P: FnMut(u64)>(
    mut reader: R,
    mut progress: P,
) -> Result<SgxsMeasurement> {
    let mut buf = vec![0u8; BUF];
    let mut filled = 0usize; // bytes valid in buf
    let mut eof = false;
    let mut st = Stream::default();
    loop {
        // Fill the buffer as far as the reader goes.
        while !eof && filled < buf.len() {
            let slice = buf.get_mut(filled..).unwrap_or_default();
            match reader.read(slice) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Read(e)),
            }
        }
        let data = buf.get(..filled).unwrap_or_default();
        let pos = st.process(data)?;
        progress(st.consumed);
        if eof {
            return st.finish(filled - pos);
        }
        // Move the partial record (< 320 bytes) to the front.
        buf.copy_within(pos..filled, 0);
        filled -= pos;
    }
}

/// [`measure_sgxs`] over a stream already in memory, without copying it: the hash runs directly
/// on `bytes`.
pub fn measure_sgxs_bytes(bytes: &[u8]) -> Result<SgxsMeasurement> {
    let mut st = Stream::default();
    let pos = st.process(bytes)?;
    st.finish(bytes.len() - pos)
}

/// The state of one stream being measured.
#[derive(Default)]
struct Stream {
    hasher: Sha256,
    state: Option<(Rules, SgxsMeasurement)>,
    /// Stream offset of the next unprocessed byte.
    consumed: u64,
}

impl Stream {
    /// Checks and hashes the whole records at the start of `data`; returns how many bytes they
    /// span (the rest is an incomplete record).
    fn process(&mut self, data: &[u8]) -> Result<usize> {
        let mut pos = 0usize;
        let mut run_start = 0usize;
        while let Some(header) = data.get(pos..pos + HEADER) {
            let at = self.consumed + pos as u64;
            let tag = le64(header, 0);
            let rec_len = if tag == TAG_EEXTEND || tag == TAG_UNMEASURED {
                HEADER + DATA
            } else {
                HEADER
            };
            if data.len() - pos < rec_len {
                break; // the rest of this record comes with the next read
            }
            let invalid = |reason: String| Error::SgxsInvalid { offset: at, reason };
            match tag {
                TAG_ECREATE | TAG_UNSIZED => {
                    if self.state.is_some() {
                        return Err(invalid("a second ECREATE".into()));
                    }
                    if tag == TAG_UNSIZED {
                        return Err(Error::SgxsUnsized);
                    }
                    zero(header, 20, at)?;
                    let ssa = u32::from_le_bytes(arr4(header, 8));
                    let size = le64(header, 12);
                    check_ecreate(ssa, size).map_err(invalid)?;
                    self.state = Some((
                        Rules::new(size),
                        SgxsMeasurement {
                            mrenclave: [0; 32],
                            enclave_size: size,
                            ssa_frame_size: ssa,
                            pages: 0,
                            tcs_pages: 0,
                            measured_chunks: 0,
                            unmeasured_chunks: 0,
                            stream_len: 0,
                        },
                    ));
                }
                TAG_EADD => {
                    let Some((rules, m)) = self.state.as_mut() else {
                        return Err(invalid("EADD before ECREATE".into()));
                    };
                    zero(header, 24, at)?;
                    let flags = SecinfoFlags(le64(header, 16));
                    rules.eadd(le64(header, 8), flags).map_err(invalid)?;
                    m.pages += 1;
                    if flags.page_type() == PageType::Tcs {
                        m.tcs_pages += 1;
                    }
                }
                TAG_EEXTEND | TAG_UNMEASURED => {
                    let Some((rules, m)) = self.state.as_mut() else {
                        return Err(invalid("EEXTEND before ECREATE".into()));
                    };
                    zero(header, 16, at)?;
                    rules.eextend(le64(header, 8)).map_err(invalid)?;
                    if tag == TAG_EEXTEND {
                        m.measured_chunks += 1;
                    } else {
                        m.unmeasured_chunks += 1;
                        // Hash the run up to here and skip this record.
                        self.hasher
                            .update(data.get(run_start..pos).unwrap_or_default());
                        run_start = pos + rec_len;
                    }
                }
                other => {
                    return Err(Error::SgxsUnknownTag {
                        offset: at,
                        tag: other,
                    })
                }
            }
            pos += rec_len;
            // Hash what was just checked while it is still in cache.
            if pos - run_start >= HASH_RUN {
                self.hasher
                    .update(data.get(run_start..pos).unwrap_or_default());
                run_start = pos;
            }
        }
        self.hasher
            .update(data.get(run_start..pos).unwrap_or_default());
        self.consumed += pos as u64;
        Ok(pos)
    }

    /// Ends the stream; `leftover` bytes of an incomplete record are an error.
    fn finish(self, leftover: usize) -> Result<SgxsMeasurement> {
        if leftover > 0 {
            let what = if leftover < HEADER {
                "record header"
            } else {
                "EEXTEND data"
            };
            return Err(Error::SgxsTruncated {
                offset: self.consumed,
                what,
            });
        }
        let Some((rules, mut m)) = self.state else {
            return Err(Error::SgxsTruncated {
                offset: 0,
                what: "ECREATE record (empty stream)",
            });
        };
        debug_assert_eq!(rules.page_count(), m.pages);
        m.mrenclave = self.hasher.finalize().into();
        m.stream_len = self.consumed;
        Ok(m)
    }
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn arr4(b: &[u8], off: usize) -> [u8; 4] {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    a
}

fn zero(header: &[u8], from: usize, at: u64) -> Result<()> {
    match header.get(from..) {
        Some(rest) if rest.iter().fold(0u8, |acc, &b| acc | b) == 0 => Ok(()),
        _ => Err(Error::SgxsInvalid {
            offset: at,
            reason: format!("reserved header bytes {from}..64 are not zero"),
        }),
    }
}

/// Writes an SGXS stream while measuring it, so the file and its MRENCLAVE come from one pass.
///
/// The writer (`W`) is the caller's: a `Vec<u8>`, a file, a hasher. Records are written in the
/// order the methods are called; the same rules as [`Measurement`] apply.
#[derive(Debug)]
pub struct SgxsWriter<W: Write> {
    out: W,
    m: Measurement,
}

impl<W: Write> SgxsWriter<W> {
    /// Starts a stream with its ECREATE record.
    pub fn new(mut out: W, ssa_frame_size: u32, size: u64) -> Result<Self> {
        let m = Measurement::ecreate(ssa_frame_size, size)?;
        out.write_all(&crate::measure::ecreate_record(ssa_frame_size, size))
            .map_err(Error::Write)?;
        Ok(SgxsWriter { out, m })
    }

    /// Adds one page (EADD, then 16 EEXTEND records if `measure`, else 16 UNMEASRD records so
    /// the content still loads). `data` shorter than a page is zero-padded.
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
        let r = self.m.eadd(offset, flags)?;
        self.out.write_all(&r).map_err(Error::Write)?;
        let mut page = [0u8; PAGE_SIZE as usize];
        page[..data.len()].copy_from_slice(data);
        for (i, chunk) in page.chunks_exact(DATA).enumerate() {
            let off = offset + (i * DATA) as u64;
            let mut c = [0u8; DATA];
            c.copy_from_slice(chunk);
            let header = if measure {
                self.m.eextend(off, &c)?
            } else {
                let mut h = eextend_record(off);
                h[..8].copy_from_slice(&TAG_UNMEASURED.to_le_bytes());
                h
            };
            self.out.write_all(&header).map_err(Error::Write)?;
            self.out.write_all(&c).map_err(Error::Write)?;
        }
        Ok(())
    }

    /// Ends the stream: returns the writer and the MRENCLAVE.
    pub fn finish(mut self) -> Result<(W, [u8; 32])> {
        self.out.flush().map_err(Error::Write)?;
        Ok((self.out, self.m.finish()))
    }
}

/// Builds the SGXS stream of a flat enclave image the way the Linux SGX selftest (and
/// `testdata/vectors/sgx-sign`) lays it out: enclave size = the next power of two ≥ the image,
/// SSAFRAMESIZE 1, the first `tcs_pages` pages TCS, the rest REG with `reg_flags`, all measured,
/// offsets from 0. Useful to measure a raw `encl.bin`.
pub fn flat_image_sgxs(
    image: &[u8],
    tcs_pages: u64,
    reg_flags: SecinfoFlags,
) -> Result<(Vec<u8>, [u8; 32])> {
    if image.is_empty() || image.len() as u64 % PAGE_SIZE != 0 {
        return Err(Error::Layout(format!(
            "image length {} is not a non-zero multiple of 4096",
            image.len()
        )));
    }
    let size = (image.len() as u64).next_power_of_two().max(2 * PAGE_SIZE);
    let mut w = SgxsWriter::new(Vec::with_capacity(image.len() / 4 * 5 + 64), 1, size)?;
    for (i, page) in image.chunks(PAGE_SIZE as usize).enumerate() {
        let flags = if (i as u64) < tcs_pages {
            SecinfoFlags::tcs()
        } else {
            reg_flags
        };
        w.add_page(i as u64 * PAGE_SIZE, page, flags, true)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, [u8; 32]) {
        let mut w = SgxsWriter::new(Vec::new(), 2, 0x10000).unwrap();
        w.add_page(0, &[], SecinfoFlags::tcs(), true).unwrap();
        w.add_page(
            0x1000,
            &[1, 2, 3],
            SecinfoFlags::reg(true, false, true),
            true,
        )
        .unwrap();
        w.add_page(
            0x3000,
            &[9; 4096],
            SecinfoFlags::reg(true, true, false),
            false,
        )
        .unwrap();
        w.add_page(
            0x4000,
            &[7; 100],
            SecinfoFlags::reg(true, true, false),
            true,
        )
        .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn reader_agrees_with_writer() {
        let (bytes, mr) = sample();
        let mut calls = 0;
        let m = measure_sgxs(&bytes[..], |_| calls += 1).unwrap();
        assert_eq!(m.mrenclave, mr);
        assert_eq!(m.pages, 4);
        assert_eq!(m.tcs_pages, 1);
        assert_eq!(m.measured_chunks, 48);
        assert_eq!(m.unmeasured_chunks, 16);
        assert_eq!(m.enclave_size, 0x10000);
        assert_eq!(m.ssa_frame_size, 2);
        assert_eq!(m.stream_len, bytes.len() as u64);
        assert!(calls >= 1);
        assert_eq!(measure_sgxs_bytes(&bytes).unwrap(), m);
    }

    /// A reader that returns one byte at a time exercises record boundaries across reads.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn short_reads_give_the_same_result() {
        let (bytes, mr) = sample();
        assert_eq!(measure_sgxs(Trickle(&bytes), |_| {}).unwrap().mrenclave, mr);
    }

    #[test]
    fn truncated_stream_is_refused() {
        let (bytes, _) = sample();
        for cut in [1, 63, 64 + 10, 64 + 64 + 64 + 100, bytes.len() - 1] {
            let e = measure_sgxs(&bytes[..cut], |_| {}).unwrap_err();
            assert!(matches!(e, Error::SgxsTruncated { .. }), "cut {cut}: {e}");
            let e = measure_sgxs_bytes(&bytes[..cut]).unwrap_err();
            assert!(matches!(e, Error::SgxsTruncated { .. }), "cut {cut}: {e}");
        }
        assert!(matches!(
            measure_sgxs(&[][..], |_| {}),
            Err(Error::SgxsTruncated { offset: 0, .. })
        ));
    }

    #[test]
    fn malformed_records_are_refused_with_the_specific_error() {
        let (bytes, _) = sample();
        // Unknown tag in the second record.
        let mut b = bytes.clone();
        b[64] = b'Z';
        assert!(matches!(
            measure_sgxs(&b[..], |_| {}),
            Err(Error::SgxsUnknownTag { offset: 64, .. })
        ));
        // Non-zero reserved byte in the EADD header.
        let mut b = bytes.clone();
        b[64 + 40] = 1;
        assert!(
            matches!(measure_sgxs(&b[..], |_| {}), Err(Error::SgxsInvalid { offset: 64, reason }) if reason.contains("reserved"))
        );
        // EADD with a TCS page that has permissions.
        let mut b = bytes.clone();
        b[64 + 16] = 0x01;
        assert!(
            matches!(measure_sgxs(&b[..], |_| {}), Err(Error::SgxsInvalid { reason, .. }) if reason.contains("TCS"))
        );
        // Second ECREATE.
        let mut b = bytes.clone();
        b.extend_from_slice(&bytes[..64]);
        assert!(
            matches!(measure_sgxs(&b[..], |_| {}), Err(Error::SgxsInvalid { reason, .. }) if reason.contains("second ECREATE"))
        );
        // Unsized stream.
        let mut b = bytes.clone();
        b[..8].copy_from_slice(b"UNSIZED\0");
        assert!(matches!(
            measure_sgxs(&b[..], |_| {}),
            Err(Error::SgxsUnsized)
        ));
        // Size not a power of two.
        let mut b = bytes.clone();
        b[12..20].copy_from_slice(&0x9000u64.to_le_bytes());
        assert!(
            matches!(measure_sgxs(&b[..], |_| {}), Err(Error::SgxsInvalid { offset: 0, reason }) if reason.contains("power of two"))
        );
        // EEXTEND of a chunk twice: copy the first EEXTEND record of page 0 after itself.
        let mut b = bytes[..64 + 64 + 320].to_vec();
        b.extend_from_slice(&bytes[128..128 + 320]);
        assert!(
            matches!(measure_sgxs(&b[..], |_| {}), Err(Error::SgxsInvalid { reason, .. }) if reason.contains("twice"))
        );
        // Page offset outside the enclave.
        let mut b = bytes.clone();
        b[64 + 8..64 + 16].copy_from_slice(&0x10000u64.to_le_bytes());
        assert!(
            matches!(measure_sgxs(&b[..], |_| {}), Err(Error::SgxsInvalid { reason, .. }) if reason.contains("outside"))
        );
        // Records before ECREATE.
        let b = bytes[64..64 + 64].to_vec();
        assert!(
            matches!(measure_sgxs(&b[..], |_| {}), Err(Error::SgxsInvalid { reason, .. }) if reason.contains("before ECREATE"))
        );
    }

    #[test]
    fn io_errors_are_reported_as_read_errors() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        assert!(matches!(measure_sgxs(Failing, |_| {}), Err(Error::Read(_))));
    }

    #[test]
    fn flat_image_requires_whole_pages() {
        assert!(matches!(
            flat_image_sgxs(&[0; 100], 1, SecinfoFlags(0x207)),
            Err(Error::Layout(_))
        ));
        let (sgxs, mr) = flat_image_sgxs(&[0; 8192], 1, SecinfoFlags(0x207)).unwrap();
        assert_eq!(measure_sgxs(&sgxs[..], |_| {}).unwrap().mrenclave, mr);
    }
}
