//! Fuzz `coffer_manifest::Manifest::parse` (JSON and YAML, auto-detected).
//!
//! Beyond "no panic" (see `coffer_manifest::fuzzing::check_parse`): every error list is
//! non-empty with `$`-rooted paths, and a manifest that validates re-parses from its canonical
//! JSON to the same canonical bytes and hash; rendering every workload never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    coffer_manifest::fuzzing::check_parse(data);
});
