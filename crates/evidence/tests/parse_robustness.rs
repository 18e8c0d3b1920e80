//! Deterministic mutation run over the quote and collateral parsers (the fuzz targets' checks,
//! on a fixed budget so it runs in every `cargo test`): no panic, and every quote that parses
//! re-encodes to its input minus zero padding.

use coffer_evidence::{Collateral, QeIdentity, Quote, TcbInfo};

const VEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

/// xorshift64*: a fixed, seedable sequence (no randomness source in tests).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn check_quote(data: &[u8]) -> bool {
    let Ok(q) = Quote::parse(data) else {
        return false;
    };
    let bytes = q.to_bytes();
    assert_eq!(bytes.len() + q.padding_len(), data.len());
    assert_eq!(&data[..bytes.len()], &bytes[..]);
    let again = Quote::parse(&bytes).unwrap();
    assert_eq!((again.header(), again.body()), (q.header(), q.body()));
    assert_eq!(q.qe_report().to_bytes(), q.qe_report_bytes());
    let _ = (q.fmspc(), q.pck_ca(), q.pck_chain_pem());
    true
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    match rng.below(5) {
        0 => {
            let i = rng.below(v.len());
            v[i] = rng.next() as u8;
        }
        1 => v.truncate(rng.below(v.len())),
        2 => {
            // Overwrite a length-looking field with a random small or huge value.
            let i = rng.below(v.len().saturating_sub(4));
            let val = if rng.below(2) == 0 {
                rng.below(8192) as u32
            } else {
                rng.next() as u32
            };
            v[i..i + 4].copy_from_slice(&val.to_le_bytes());
        }
        3 => {
            let i = rng.below(v.len());
            let extra: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            v.splice(i..i, extra);
        }
        _ => {
            let i = rng.below(v.len());
            let n = rng.below(64).min(v.len() - i);
            v.drain(i..i + n);
        }
    }
    v
}

#[test]
fn quote_parser_survives_mutations_of_every_vector() {
    let files = [
        "dcap/sgx_quote",
        "dcap/tdx_quote",
        "tdx-parse/trustee/tdx_quote_5.dat",
        "tdx-parse/trustee/occlum_quote.dat",
        "intel-qvl-sample/qvl-sampleData/quote.dat",
        "intel-qvl-sample/qvl-sampleData/tdx/quote.dat",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for f in files {
        let base = std::fs::read(format!("{VEC}/{f}")).unwrap();
        assert!(check_quote(&base), "{f}");
        for _ in 0..3000 {
            if check_quote(&mutate(&mut rng, &base)) {
                parsed += 1;
            }
        }
    }
    // Byte changes inside fixed fields keep the quote parseable: the checks above ran.
    assert!(parsed > 1000, "{parsed}");
}

#[test]
fn collateral_parsers_survive_mutations() {
    let mut rng = Rng(42);
    for f in [
        "dcap/sgx_quote_collateral.json",
        "dcap/tdx_quote_collateral.json",
    ] {
        let base = std::fs::read(format!("{VEC}/{f}")).unwrap();
        let c = Collateral::from_json(&base).unwrap();
        for _ in 0..1500 {
            let m = mutate(&mut rng, &base);
            if let Ok(c) = Collateral::from_json(&m) {
                assert_eq!(Collateral::from_json(c.to_json().as_bytes()).unwrap(), c);
            }
            for doc in [&c.tcb_info, &c.qe_identity] {
                let m = mutate(&mut rng, doc.as_bytes());
                if let Ok(s) = std::str::from_utf8(&m) {
                    let _ = TcbInfo::from_json(s);
                    let _ = QeIdentity::from_json(s);
                }
            }
        }
    }
}
