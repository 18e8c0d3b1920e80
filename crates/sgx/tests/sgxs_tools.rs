//! Cross-check with an independent implementation: Fortanix's `sgxs-tools` (`sgxs-sign`), built
//! from crates.io by `scripts/install-deps.sh`.
//!
//! For SGXS files of several shapes written by this crate: `sgxs-sign` must compute the same
//! ENCLAVEHASH; its SIGSTRUCT must parse and verify here and be byte-identical to ours for the
//! same fields; and ours must pass its `--resign-verify` check (a tampered one must not).
//!
//! The tool is looked up as `$SGXS_SIGN`, then `sgxs-sign` on `PATH`, then `$CARGO_HOME/bin`,
//! then `~/.cargo/bin`. When it is absent the test says so loudly and passes, except under CI
//! (`CI` set) or with `COFFER_REQUIRE_SGXS_TOOLS=1`, where a missing tool is a failure.

use std::path::PathBuf;
use std::process::Command;

use coffer_sgx::{
    measure_sgxs, Attributes, SecinfoFlags, SgxsWriter, SigningKey, Sigstruct, SigstructBody,
};

const KEY: &str = include_str!("../../../testdata/vectors/sgx-sign/encl.pem");
const KEY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/vectors/sgx-sign/encl.pem"
);

fn sgxs_sign() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SGXS_SIGN") {
        return Some(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("sgxs-sign"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(cargo_home).join("bin/sgxs-sign"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/sgxs-sign"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn tool_or_skip() -> Option<PathBuf> {
    match sgxs_sign() {
        Some(p) => Some(p),
        None => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var("COFFER_REQUIRE_SGXS_TOOLS").as_deref() == Ok("1");
            assert!(!required, "sgxs-sign (cargo install sgxs-tools) is required here but was not found; run scripts/install-deps.sh");
            eprintln!("\n*** SKIPPED: sgxs-sign not found (run scripts/install-deps.sh or `cargo install sgxs-tools`); the cross-check did NOT run ***\n");
            None
        }
    }
}

/// Deterministic page content.
fn page(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Shape {
    name: &'static str,
    ssa: u32,
    size: u64,
    /// (page index, flags, measured, data seed; 0 = zero page)
    pages: Vec<(u64, SecinfoFlags, bool, u64)>,
}

fn shapes() -> Vec<Shape> {
    let rwx = SecinfoFlags::reg(true, true, true);
    let r = SecinfoFlags::reg(true, false, false);
    let rw = SecinfoFlags::reg(true, true, false);
    let rx = SecinfoFlags::reg(true, false, true);
    let tcs = SecinfoFlags::tcs();
    let mut big = vec![(0, tcs, true, 0), (1, tcs, true, 0)];
    big.extend((2..2048).map(|i| (i, if i % 3 == 0 { rx } else { rw }, true, i)));
    vec![
        Shape {
            name: "selftest-like",
            ssa: 1,
            size: 0x8000,
            pages: (0..6)
                .map(|i| (i, if i == 0 { tcs } else { rwx }, true, i))
                .collect(),
        },
        Shape {
            name: "mixed permissions, gaps, unmeasured pages, several TCS",
            ssa: 2,
            size: 1 << 20,
            pages: vec![
                (0, r, true, 11),
                (1, rx, true, 12),
                (2, rx, true, 0),
                (5, rw, false, 13),
                (6, rw, true, 14),
                (100, tcs, true, 0),
                (101, tcs, true, 0),
                (102, tcs, true, 0),
                (200, SecinfoFlags::reg(false, false, false), true, 15),
                (255, rw, false, 0),
            ],
        },
        Shape {
            name: "8 MiB of pages in a 16 MiB enclave",
            ssa: 4,
            size: 16 << 20,
            pages: big,
        },
        Shape {
            name: "one page at the top of a 64 MiB enclave",
            ssa: 1,
            size: 64 << 20,
            pages: vec![((64 << 20) / 4096 - 1, tcs, true, 0)],
        },
    ]
}

fn write_sgxs(s: &Shape) -> (Vec<u8>, [u8; 32]) {
    let mut w = SgxsWriter::new(Vec::new(), s.ssa, s.size).unwrap();
    for &(idx, flags, measured, seed) in &s.pages {
        let data = if seed == 0 { vec![0; 4096] } else { page(seed) };
        w.add_page(idx * 4096, &data, flags, measured).unwrap();
    }
    w.finish().unwrap()
}

fn enclavehash_from_stdout(out: &[u8]) -> [u8; 32] {
    let text = String::from_utf8_lossy(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("ENCLAVEHASH: "))
        .unwrap_or_else(|| panic!("no ENCLAVEHASH line in {text:?}"));
    let hexpart = line
        .trim_start_matches("ENCLAVEHASH: ")
        .split_whitespace()
        .next()
        .unwrap();
    let mut h = [0u8; 32];
    hex::decode_to_slice(hexpart, &mut h).unwrap();
    h
}

/// The body `sgxs-sign` builds with its defaults and `--date 20260101 -p 7 -v 9`.
fn their_default_body(mrenclave: [u8; 32]) -> SigstructBody {
    let mut b = SigstructBody::new(mrenclave);
    b.date = 0x2026_0101;
    b.attributes = Attributes {
        flags: Attributes::FLAG_MODE64BIT,
        xfrm: 3,
    };
    b.attributes_mask = Attributes {
        flags: !Attributes::FLAG_DEBUG,
        xfrm: !3,
    };
    b.miscmask = u32::MAX;
    b.isv_prod_id = 7;
    b.isv_svn = 9;
    b
}

#[test]
fn mrenclave_and_sigstructs_agree_with_sgxs_sign() {
    let Some(tool) = tool_or_skip() else { return };
    let key = SigningKey::from_pem(KEY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pubkey = dir.path().join("pub.pem");
    std::fs::write(&pubkey, key.public_pem().unwrap()).unwrap();

    for (i, shape) in shapes().iter().enumerate() {
        let (bytes, ours) = write_sgxs(shape);
        assert_eq!(
            measure_sgxs(&bytes[..], |_| {}).unwrap().mrenclave,
            ours,
            "{}: reader vs writer",
            shape.name
        );
        let sgxs = dir.path().join(format!("{i}.sgxs"));
        std::fs::write(&sgxs, &bytes).unwrap();

        // 1. Their ENCLAVEHASH equals our MRENCLAVE; their SIGSTRUCT verifies here and equals ours.
        let their_sig = dir.path().join(format!("{i}.theirs.sig"));
        let out = Command::new(&tool)
            .args([
                "--key", KEY_PATH, "--date", "20260101", "-p", "7", "-v", "9",
            ])
            .arg(&sgxs)
            .arg(&their_sig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: sgxs-sign failed: {}",
            shape.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            enclavehash_from_stdout(&out.stdout),
            ours,
            "{}: MRENCLAVE differs from sgxs-sign",
            shape.name
        );
        let theirs = Sigstruct::parse(&std::fs::read(&their_sig).unwrap()).unwrap();
        theirs.verify_for(&ours).unwrap();
        assert_eq!(theirs.mrsigner(), key.mrsigner());
        let mine = Sigstruct::sign(their_default_body(ours), &key, &mut rand_core::OsRng).unwrap();
        assert_eq!(
            mine.to_bytes(),
            theirs.to_bytes(),
            "{}: SIGSTRUCT bytes differ from sgxs-sign's",
            shape.name
        );

        // 2. Our SIGSTRUCT (non-default fields) passes their verification…
        let mut body = SigstructBody::new(ours);
        body.date = 0x2025_1231;
        body.isv_prod_id = 0x1234;
        body.isv_svn = 42;
        body.set_debug(true);
        let mine = Sigstruct::sign(body, &key, &mut rand_core::OsRng).unwrap();
        let my_sig = dir.path().join(format!("{i}.mine.sig"));
        std::fs::write(&my_sig, mine.to_bytes()).unwrap();
        let out = Command::new(&tool)
            .args(["--key", KEY_PATH, "--date", "20260101", "--resign-verify"])
            .arg(&pubkey)
            .arg(&sgxs)
            .arg(&my_sig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: sgxs-sign refused our SIGSTRUCT: {}",
            shape.name,
            String::from_utf8_lossy(&out.stderr)
        );

        // 3. …and a tampered one does not.
        let mut bad = mine.to_bytes();
        bad[1026] ^= 1; // ISVSVN, inside the signed region
        std::fs::write(&my_sig, bad).unwrap();
        let out = Command::new(&tool)
            .args(["--key", KEY_PATH, "--date", "20260101", "--resign-verify"])
            .arg(&pubkey)
            .arg(&sgxs)
            .arg(&my_sig)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{}: sgxs-sign accepted a tampered SIGSTRUCT",
            shape.name
        );
    }
}

#[test]
fn sgxs_sign_in_hash_mode_matches_our_signer_on_the_vector() {
    let Some(tool) = tool_or_skip() else { return };
    let key = SigningKey::from_pem(KEY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("v.sig");
    let mr = "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0";
    let out = Command::new(&tool)
        .args([
            "--key",
            KEY_PATH,
            "--date",
            "20260101",
            "-p",
            "7",
            "-v",
            "9",
            "--in-hash",
            mr,
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut h = [0u8; 32];
    hex::decode_to_slice(mr, &mut h).unwrap();
    let mine = Sigstruct::sign(their_default_body(h), &key, &mut rand_core::OsRng).unwrap();
    assert_eq!(std::fs::read(&out_path).unwrap(), mine.to_bytes().to_vec());
}
