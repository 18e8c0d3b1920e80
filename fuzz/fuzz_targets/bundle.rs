//! Fuzz `coffer_coordinator::bundle::Bundle::parse` and `Bundle::check` (offline verification
//! bundles are files an auditor receives from someone else).
//!
//! Beyond "no panic": a parsed bundle serialises and re-parses equal; checking it under a
//! simulated platform's anchors ends in a verdict (random bytes never carry a quote that
//! verifies, so it is always a refusal).
#![no_main]

use coffer_coordinator::attest::Expectations;
use coffer_coordinator::bundle::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Bundle::parse(data) else { return };
    assert_eq!(Bundle::parse(&b.to_json()).unwrap(), b);
    let sim = coffer_evidence::sim::SimPlatform::from_seed([1; 32]);
    let expect = Expectations {
        allow_simulation: true,
        mrenclaves: &[],
        tcb_statuses: &[],
    };
    assert!(b.check(sim.trust_anchors(), &expect, b.created).is_err());
});
