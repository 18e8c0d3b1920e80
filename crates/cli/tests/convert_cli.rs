//! `coffer convert` as a user runs it: an image layered with `umoci` from the real
//! `/bin/busybox`, converted by the real binary, the result read back by `skopeo`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("coffer-convert-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .expect("tool runs (bash scripts/install-deps.sh installs umoci and skopeo)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An OCI layout `dir:v1` with busybox and a config file, built with umoci.
fn umoci_image(t: &Path) -> PathBuf {
    let img = t.join("img");
    ok(Command::new("umoci").arg("init").arg("--layout").arg(&img));
    ok(Command::new("umoci")
        .arg("new")
        .arg("--image")
        .arg(format!("{}:v1", img.display())));
    let bundle = t.join("bundle");
    ok(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:v1", img.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::fs::write(rootfs.join("etc/app.conf"), "token=s3cr3t\n").unwrap();
    ok(Command::new("umoci")
        .arg("repack")
        .arg("--image")
        .arg(format!("{}:v1", img.display()))
        .arg(&bundle));
    ok(Command::new("umoci")
        .arg("config")
        .arg("--image")
        .arg(format!("{}:v1", img.display()))
        .arg("--config.entrypoint=/bin/busybox")
        .arg("--config.cmd=echo")
        .arg("--config.cmd=hello"));
    img
}

fn coffer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
}

#[test]
fn convert_prints_measurement_and_writes_key_0600() {
    let t = TempDir::new("ok");
    let img = umoci_image(&t.0);
    let out = t.0.join("out");
    let key = t.0.join("image.key");
    let o = ok(coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out.display()))
        .arg("--launcher")
        .arg("/bin/busybox")
        .arg("--encrypt")
        .arg("/etc/app.conf")
        .arg("--key-out")
        .arg(&key));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = v["image_measurement"].as_str().unwrap();
    assert_eq!(m.len(), 64);
    assert_eq!(v["mrenclave"], m);
    assert_eq!(v["packages"]["app"]["mrenclave"], m);
    assert_eq!(v["encrypted_files"], serde_json::json!(["/etc/app.conf"]));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
    let inspect = ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:cc", out.display())));
    let i: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(i["Digest"], v["manifest_digest"]);
    assert_eq!(i["Labels"]["dev.coffer.image-measurement"], m);

    // Same input, options and key → same measurement and manifest digest.
    let out2 = t.0.join("out2");
    let o2 = ok(coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out2.display()))
        .arg("--launcher")
        .arg("/bin/busybox")
        .arg("--encrypt")
        .arg("/etc/app.conf")
        .arg("--key")
        .arg(&key));
    let v2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(v2["manifest_digest"], v["manifest_digest"]);
}

#[test]
fn convert_errors_are_clear_and_leave_nothing() {
    let t = TempDir::new("err");
    let img = umoci_image(&t.0);
    let out = t.0.join("out");
    let o = coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out.display()))
        .arg("--launcher")
        .arg(t.0.join("no-launcher"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "missing_input");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cargo build --bin coffer-launcher"));
    assert!(!out.exists());

    let o = coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out.display()))
        .arg("--launcher")
        .arg("/bin/busybox")
        .arg("--encrypt")
        .arg("/etc/app.conf")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "usage");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--key-out"));

    let o = coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:nosuchtag", img.display()))
        .arg(format!("oci:{}:cc", out.display()))
        .arg("--launcher")
        .arg("/bin/busybox")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "malformed_image");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("v1"),
        "lists the tags: {v}"
    );
    assert!(!out.exists());
    // `--tee sgx` is refused with a clear message until it is wired (see the report).
    let o = coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out.display()))
        .arg("--launcher")
        .arg("/bin/busybox")
        .arg("--tee")
        .arg("sgx")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "unsupported");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--tee sgx"));
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(&t.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("coffer-tmp"))
        .collect();
    assert!(left.is_empty());
}
