//! Fuzzes both sides of the key join (`coffer_coordinator::keyjoin`), whose messages come from
//! etcd and are untrusted: a join request handed to the granter and a grant handed to the
//! joiner. Never a panic; every refusal is an error value. Quotes are checked by a stand-in
//! verifier here (first byte = MRENCLAVE byte, then 64 bytes of report data), so the harness
//! exercises the message parsing, key decoding, binding checks and decryption.
#![no_main]

use std::sync::OnceLock;

use coffer_coordinator::keyjoin::{grant, Joiner};
use coffer_coordinator::state::StateKey;
use coffer_coordinator::Error;
use coffer_manifest::{MeasurementClaims, Tee};
use libfuzzer_sys::fuzz_target;

fn claims(mr: u8) -> MeasurementClaims {
    MeasurementClaims {
        mrenclave: Some([mr; 32]),
        mrsigner: Some([1; 32]),
        isv_prod_id: Some(1),
        isv_svn: Some(1),
        tcb_status: "UpToDate".into(),
        ..MeasurementClaims::of_tee(Tee::Sgx)
    }
}

fn verify(q: &[u8]) -> Result<(MeasurementClaims, [u8; 64]), Error> {
    let (mr, rd) = q
        .split_first()
        .ok_or_else(|| Error::BadRequest("empty quote".into()))?;
    let rd: [u8; 64] = rd
        .try_into()
        .map_err(|_| Error::BadRequest("report data".into()))?;
    Ok((claims(*mr), rd))
}

fn joiner() -> &'static Joiner {
    static J: OnceLock<Joiner> = OnceLock::new();
    J.get_or_init(|| {
        Joiner::request("fuzz", |rd| Ok([&[9u8][..], &rd[..]].concat()))
            .expect("request")
            .0
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((side, body)) = data.split_first() else {
        return;
    };
    if side % 2 == 0 {
        let key = StateKey::from_slice(&[7; 32]).expect("key");
        if let Ok((replica, g)) = grant("a", body, &key, &claims(9), verify, |rd| {
            Ok([&[9u8][..], &rd[..]].concat())
        }) {
            coffer_coordinator::replica::validate_name(&replica).expect("granted name is valid");
            assert_eq!(g.version, 1);
        }
    } else {
        let _ = joiner().accept(body, &claims(9), verify);
    }
});
