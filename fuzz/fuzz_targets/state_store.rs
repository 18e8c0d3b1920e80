//! Fuzz the Coordinator's check of its stored state (`state::head::verify`): the store (a disk,
//! etcd) is the host's, so any bytes may be there. See
//! `coffer_coordinator::state::head::fuzzing::check_store`: random bytes never verify, a state
//! the store wrote itself does, and one flipped byte of a value does not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    coffer_coordinator::state::head::fuzzing::check_store(data);
});
