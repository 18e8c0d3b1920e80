//! SGXS stream reading: never panics, and the streaming reader (through `Read`, one byte at a
//! time at the start to cross record boundaries) agrees with the in-memory reader on every
//! input, result and error alike.
#![no_main]

use std::io::Read;

use coffer_sgx::{measure_sgxs, measure_sgxs_bytes};
use libfuzzer_sys::fuzz_target;

/// Returns at most `step` bytes per read.
struct Chunky<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(buf.len()).min(self.step);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let a = measure_sgxs_bytes(data);
    let step = 1 + data.first().copied().unwrap_or(0) as usize;
    let b = measure_sgxs(Chunky { data, step }, |_| {});
    match (&a, &b) {
        (Ok(x), Ok(y)) => assert_eq!(x, y),
        (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string()),
        _ => panic!("readers disagree: {a:?} vs {b:?}"),
    }
});
