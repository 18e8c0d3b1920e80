//! Files written by Gramine's own protected-files code (see `tests/data/gramine-pf/README.md`)
//! are read by [`coffer_sgx::gramine::pf::decrypt`], and refused when moved or tampered with.

use coffer_sgx::gramine::pf;

const KDK: [u8; 16] = [0x42; 16];
const SIZES: &[usize] = &[0, 1, 3072, 3073, 7169, 396_289];

fn vector(n: usize) -> Vec<u8> {
    let p = format!(
        "{}/tests/data/gramine-pf/s{n}.pf",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(p).unwrap()
}

fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn files_gramine_wrote_decrypt_to_their_content() {
    for &n in SIZES {
        let file = vector(n);
        assert_eq!(file.len() as u64, pf::encrypted_len(n as u64), "s{n}");
        let path = format!("/data/s{n}.bin");
        assert_eq!(
            &pf::decrypt(&KDK, &path, &file).unwrap()[..],
            &content(n)[..],
            "s{n}"
        );
    }
}

#[test]
fn files_gramine_wrote_are_refused_when_moved_tampered_or_keyed_otherwise() {
    let n = 396_289;
    let file = vector(n);
    let path = format!("/data/s{n}.bin");
    let e = pf::decrypt(&KDK, "/data/other.bin", &file).unwrap_err();
    assert!(e.to_string().contains("bound to"), "{e}");
    assert!(pf::decrypt(&[0x41; 16], &path, &file).is_err());
    // The first child MHT node (physical 98) and the data node after it (99).
    for node in [0usize, 1, 2, 98, 99] {
        let mut bad = file.clone();
        bad[node * pf::NODE_SIZE + 100] ^= 0x80;
        let e = pf::decrypt(&KDK, &path, &bad).unwrap_err();
        assert!(e.to_string().contains("authenticate"), "node {node}: {e}");
    }
    // A file Gramine wrote for another path cannot stand in for this one.
    let other = vector(7169);
    assert!(pf::decrypt(&KDK, &path, &other).is_err());
}
