//! `coffer demo` end to end: the real `coffer` binary converts a busybox httpd image, starts a
//! real Coordinator in simulation mode, runs the app through the launcher (runc when available
//! with a static launcher, else a local process), and shows a tampered image refused.
//!
//! Needs the launcher binary: `cargo build --workspace --bins` (scripts/test.sh does) or
//! `bash scripts/build-launcher.sh` for the static one; and busybox-static and runc from
//! `bash scripts/install-deps.sh`.

mod common;

use std::process::Command;

#[test]
fn demo_succeeds_and_shows_the_tampered_image_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("demo")
        .env("COFFER_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("SIMULATED hardware"), "{stdout}");
    assert!(stdout.contains("equal to the Coordinator's"), "{stdout}");
    assert!(
        stdout.contains("changed one byte of /www/index.html in the image: REFUSED")
            && stdout.contains("activation refused by the Coordinator (policy_mismatch)"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("coffer demo: SUCCESS"),
        "{stdout}"
    );
    // One line per step, eight steps.
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with('[')).count(),
        8,
        "{stdout}"
    );
}

#[test]
fn demo_with_json_prints_one_summary_for_scripts() {
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["--json", "demo"])
        .env("COFFER_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The narration goes to stderr; stdout holds only the summary.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "success");
    assert_eq!(v["simulated"], true);
    assert_eq!(
        v["image_measurement"].as_str().map(str::len),
        Some(64),
        "{v}"
    );
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(8), "{v}");
    assert!(stderr.contains("[8/8]"), "{stderr}");
}

/// `coffer demo --tee sgx` with a stand-in Gramine installation (this machine has none):
/// the SGX image is built with Gramine inside, measured and signed, pinned in a manifest set on
/// a real (simulated) Coordinator, and checked against the model of Gramine's policies; the
/// demo says that no enclave starts. Without a Gramine installation it says how to get one.
#[test]
fn demo_tee_sgx_builds_and_checks_the_sgx_image_and_says_no_enclave_starts() {
    let t = tempfile::tempdir().unwrap();
    let gramine = common::image::gramine_dir(t.path());
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["--json", "demo", "--tee", "sgx", "--gramine-dir"])
        .arg(&gramine)
        .arg("--sign-key")
        .arg(common::image::sgx_vector_key())
        .env("COFFER_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tee"], "sgx");
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(6), "{v}");
    // MRSIGNER of the test-vector key (testdata/vectors/sgx-sign/README.md).
    assert_eq!(
        v["mrsigner"],
        "2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4"
    );
    assert_eq!(v["mrenclave"].as_str().map(str::len), Some(64), "{v}");
    assert!(stderr.contains("nothing refused"), "{stderr}");
    assert!(stderr.contains("NO ENCLAVE STARTED"), "{stderr}");
    assert!(stderr.contains("SIMULATED"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["demo", "--tee", "sgx", "--gramine-dir"])
        .arg(t.path().join("nowhere"))
        .env("COFFER_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("install Gramine"), "{stderr}");
}
