//! `coffer sgx …` as a user runs it, on the SGX selftest vector (testdata/vectors/sgx-sign).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MRENCLAVE: &str = "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0";
const MRSIGNER: &str = "2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4";

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors/sgx-sign")
        .join(name)
}

fn coffer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .output()
        .expect("coffer runs")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("coffer-sgx-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn inspect_reads_the_vector_sigstruct() {
    let out = coffer(&[
        "--json",
        "sgx",
        "inspect",
        vector("encl.ss").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["mrenclave"], MRENCLAVE);
    assert_eq!(v["mrsigner"], MRSIGNER);
    assert_eq!(v["isv_prod_id"], 0);
    assert_eq!(v["isv_svn"], 0);
    assert_eq!(v["debug"], false);
    assert_eq!(v["signature_valid"], true);
}

#[test]
fn sign_reproduces_the_vector_byte_for_byte() {
    let t = Scratch::new("sign");
    let out_path = t.0.join("encl.ss");
    let out = coffer(&[
        "sgx",
        "sign",
        "--key",
        vector("encl.pem").to_str().unwrap(),
        "--mrenclave",
        MRENCLAVE,
        "--date",
        "0",
        "--misc-mask",
        "0",
        "--attributes-mask",
        "0",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        std::fs::read(vector("encl.ss")).unwrap()
    );

    // An existing output is not overwritten without --force.
    let again = coffer(&[
        "sgx",
        "sign",
        "--key",
        vector("encl.pem").to_str().unwrap(),
        "--mrenclave",
        MRENCLAVE,
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn verify_sig_accepts_the_vector_and_refuses_a_changed_byte() {
    let t = Scratch::new("verify");
    let ok = coffer(&[
        "--json",
        "sgx",
        "verify-sig",
        vector("encl.ss").to_str().unwrap(),
        "--mrenclave",
        MRENCLAVE,
        "--mrsigner",
        MRSIGNER,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // ISVSVN lives in the second signed region (offset 1026): one changed byte breaks the signature.
    let mut bytes = std::fs::read(vector("encl.ss")).unwrap();
    bytes[1026] ^= 1;
    let tampered = t.0.join("tampered.ss");
    std::fs::write(&tampered, &bytes).unwrap();
    let bad = coffer(&["--json", "sgx", "verify-sig", tampered.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(json(&bad)["error"]["kind"], "bad_signature");

    // The right signature over another enclave is a mismatch, named as such.
    let other = "00".repeat(32);
    let mismatch = coffer(&[
        "--json",
        "sgx",
        "verify-sig",
        vector("encl.ss").to_str().unwrap(),
        "--mrenclave",
        &other,
    ]);
    assert_eq!(mismatch.status.code(), Some(1));
    assert_eq!(json(&mismatch)["error"]["kind"], "mismatch");
}

#[test]
fn keygen_writes_a_private_key_only_the_owner_reads() {
    use std::os::unix::fs::PermissionsExt;
    let t = Scratch::new("keygen");
    let key = t.0.join("k.pem");
    let out = coffer(&["--json", "sgx", "keygen", "--out", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mrsigner = json(&out)["mrsigner"].as_str().unwrap().to_string();
    assert_eq!(mrsigner.len(), 64);

    // A SIGSTRUCT made with the new key carries its MRSIGNER.
    let ss = t.0.join("s.ss");
    let signed = coffer(&[
        "sgx",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--mrenclave",
        MRENCLAVE,
        "--isv-svn",
        "3",
        "--out",
        ss.to_str().unwrap(),
    ]);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let v = json(&coffer(&["--json", "sgx", "inspect", ss.to_str().unwrap()]));
    assert_eq!(v["mrsigner"], mrsigner.as_str());
    assert_eq!(v["isv_svn"], 3);
}
