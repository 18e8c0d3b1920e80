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
fn convert_finds_the_static_launcher_that_build_launcher_builds() {
    let t = TempDir::new("default-launcher");
    let img = umoci_image(&t.0);
    let out = t.0.join("out");
    let o = ok(coffer()
        .env_remove("COFFER_LAUNCHER")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out.display())));
    // scripts/test.sh builds the static launcher first: no warning about a dynamic one.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("dynamically linked"), "{stderr}");
    let o = ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:cc", out.display())));
    let config: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(config["config"]["Entrypoint"][0], "/coffer/launcher");
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
        .contains("no-launcher: not a file; build the static launcher"));
    assert!(!out.exists());

    // COFFER_LAUNCHER is --launcher's environment form.
    let o = coffer()
        .env("COFFER_LAUNCHER", t.0.join("also-no-launcher"))
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("also-no-launcher: not a file"));
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
    // `--tee sgx` without its inputs is refused, naming the missing flag.
    let gdir = gramine_dir(&t.0);
    let key = vector_key();
    let gdir_flag = vec!["--gramine-dir".to_string(), gdir.display().to_string()];
    let key_flag = ["--sign-key".to_string(), key.display().to_string()];
    let root_flag = vec![
        "--coordinator-root-ca".to_string(),
        root_ca().display().to_string(),
    ];
    let workload_flag = vec!["--workload".to_string(), "web".to_string()];
    for (extra, missing) in [
        (
            [&gdir_flag[..], &workload_flag, &root_flag].concat(),
            "--sign-key",
        ),
        (
            [&key_flag[..], &workload_flag, &root_flag].concat(),
            "--gramine-dir",
        ),
        (
            [&key_flag[..], &gdir_flag, &root_flag].concat(),
            "--workload",
        ),
        (
            [&key_flag[..], &gdir_flag, &workload_flag].concat(),
            "--coordinator-root-ca",
        ),
    ] {
        let o = coffer()
            .arg("--json")
            .arg("convert")
            .arg(format!("oci:{}:v1", img.display()))
            .arg(format!("oci:{}:cc", out.display()))
            .arg("--launcher")
            .arg("/bin/busybox")
            .arg("--tee")
            .arg("sgx")
            .args(&extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["error"]["kind"], "usage");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(missing),
            "names {missing}: {v}"
        );
        assert!(!out.exists());
    }
    // --sign-key without --tee sgx is a usage error, not silently ignored.
    let o = coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out.display()))
        .arg("--launcher")
        .arg("/bin/busybox")
        .arg("--sign-key")
        .arg(&key)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "usage");
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

/// The SGX signing key of the test vectors (RSA-3072, e = 3).
fn vector_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors/sgx-sign/encl.pem")
}

/// A stand-in Gramine library directory: `sgx/libpal.so` is a real ELF shared object of this
/// machine (the system libc, as the sgx crate's tests use), `sgx/loader` a real dynamically
/// linked program (`echo`, so a started image prints what Gramine's loader would get), and
/// `libsysdb.so` and `runtime/glibc/libc.so.6` files to hash.
fn gramine_dir(t: &Path) -> PathBuf {
    let d = t.join("gramine");
    std::fs::create_dir_all(d.join("sgx")).unwrap();
    std::fs::create_dir_all(d.join("runtime/glibc")).unwrap();
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a system libc.so.6 to stand in for libpal.so");
    std::fs::copy(libc, d.join("sgx/libpal.so")).unwrap();
    std::fs::copy("/bin/echo", d.join("sgx/loader")).unwrap();
    std::fs::write(d.join("libsysdb.so"), b"stand-in libsysdb\n").unwrap();
    std::fs::write(
        d.join("runtime/glibc/libc.so.6"),
        b"stand-in Gramine glibc\n",
    )
    .unwrap();
    std::fs::write(
        d.join("runtime/glibc/ld-linux-x86-64.so.2"),
        b"stand-in ld.so\n",
    )
    .unwrap();
    d
}

/// A PEM certificate standing in for the Coordinator's root CA.
fn root_ca() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors/intel-qvl-sample/PCKCertSelection-SampleData/pck0_sample.pem")
}

/// The `--tee sgx` flags besides the key and Gramine.
fn sgx_flags() -> Vec<String> {
    vec![
        "--workload".into(),
        "web".into(),
        "--coordinator-root-ca".into(),
        root_ca().display().to_string(),
        "--secret-dir".into(),
        "/run/secrets".into(),
    ]
}

/// Reads a blob of an OCI layout by digest (`sha256:…`).
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// (the image config's `config` object, files of the last layer) of a single-manifest OCI
/// layout.
fn config_and_last_layer(
    layout: &Path,
) -> (
    serde_json::Value,
    std::collections::BTreeMap<String, Vec<u8>>,
) {
    use std::io::Read as _;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(
        layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let last = blob(layout, layers.last().unwrap()["digest"].as_str().unwrap());
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&last[..]));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().display().to_string();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            files.insert(name, b);
        }
    }
    (config["config"].clone(), files)
}

#[test]
fn convert_tee_sgx_emits_a_signed_gramine_enclave() {
    let t = TempDir::new("sgx");
    let img = umoci_image(&t.0);
    let gdir = gramine_dir(&t.0);
    let key = vector_key();
    let run = |name: &str| -> (PathBuf, serde_json::Value) {
        let out = t.0.join(name);
        let o = ok(coffer()
            .arg("--json")
            .arg("convert")
            .arg(format!("oci:{}:v1", img.display()))
            .arg(format!("oci:{}:cc", out.display()))
            .arg("--launcher")
            .arg("/bin/busybox")
            .arg("--tee")
            .arg("sgx")
            .arg("--sign-key")
            .arg(&key)
            .arg("--gramine-dir")
            .arg(&gdir)
            .arg("--enclave-size")
            .arg("256M")
            .arg("--isv-prod-id")
            .arg("7")
            .arg("--isv-svn")
            .arg("3")
            .arg("--allowed")
            .arg("/var/cache/**")
            .args(sgx_flags()));
        (out, serde_json::from_slice(&o.stdout).unwrap())
    };
    let (out, v) = run("out");
    let mrenclave = v["mrenclave"].as_str().unwrap().to_string();
    let mrsigner = v["mrsigner"].as_str().unwrap().to_string();
    assert_ne!(mrenclave, v["image_measurement"].as_str().unwrap());
    assert!(
        v.get("mrenclave_source").is_none(),
        "no simulation label: {v}"
    );
    assert_eq!(v["packages"]["app"]["mrenclave"], mrenclave.as_str());
    assert_eq!(v["packages"]["app"]["mrsigner"], mrsigner.as_str());
    assert_eq!(v["packages"]["app"]["isv_prod_id"], 7);
    assert_eq!(v["packages"]["app"]["debug"], false);
    assert_eq!(
        v["packages"]["app"]["secret_dirs"],
        serde_json::json!(["/run/secrets"])
    );
    // The snippet is a valid manifest package as printed.
    let pkg: coffer_manifest::Package =
        serde_json::from_value(v["packages"]["app"].clone()).unwrap();
    assert_eq!(pkg.mrsigner.as_deref(), Some(mrsigner.as_str()));

    let (config, files) = config_and_last_layer(&out);
    let labels = &config["Labels"];
    assert_eq!(labels["dev.coffer.sgx.mrenclave"], mrenclave.as_str());
    assert_eq!(labels["dev.coffer.sgx.mrsigner"], mrsigner.as_str());
    let manifest = &files["coffer/gramine/coffer.manifest.sgx"];
    let sig = &files["coffer/gramine/coffer.sig"];

    // The SIGSTRUCT parses, its signature verifies, and it signs the MRENCLAVE that Gramine's
    // layout gives for the emitted manifest and the libpal.so shipped in the image.
    let ss = coffer_sgx::Sigstruct::parse(sig).unwrap();
    ss.verify().unwrap();
    let libpal = files["coffer/gramine/lib/sgx/libpal.so"].clone();
    assert_eq!(libpal, std::fs::read(gdir.join("sgx/libpal.so")).unwrap());
    let m =
        coffer_sgx::gramine::measure(manifest, &libpal, &coffer_sgx::gramine::LayoutConstants::V1)
            .unwrap();
    assert_eq!(ss.body.enclave_hash, m.mrenclave);
    assert_eq!(hex::encode(m.mrenclave), mrenclave);
    assert_eq!((m.isv_prod_id, m.isv_svn, m.debug), (7, 3, false));
    assert_eq!(m.enclave_size, 256 << 20);
    assert_eq!((ss.body.isv_prod_id, ss.body.isv_svn), (7, 3));
    ss.verify_for(&m.mrenclave).unwrap();
    // MRSIGNER is the signing key's.
    let k = coffer_sgx::SigningKey::from_pem_bytes(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(hex::encode(k.mrsigner()), mrsigner);
    assert_eq!(ss.mrsigner(), k.mrsigner());

    // The manifest pins the launcher, the workload file as shipped and the image's files.
    let text = std::str::from_utf8(manifest).unwrap();
    let wf = &files["coffer/workload.json"];
    use sha2::Digest as _;
    let wf_hash = hex::encode(sha2::Sha256::digest(wf));
    assert!(text.contains(&format!(
        "{{ uri = \"file:/coffer/workload.json\", sha256 = \"{wf_hash}\" }}"
    )));
    assert!(text.contains("libos.entrypoint = \"/coffer/launcher\""));
    assert!(text.contains("\"file:/bin/busybox\""));
    assert!(text.contains("\"file:/var/cache/\""));
    assert!(text.contains("sgx.remote_attestation = \"dcap\""));
    // Gramine is in the image, and the launcher's configuration is measured, not the host's.
    let toml: toml::Value = toml::from_str(text).unwrap();
    assert_eq!(
        toml["loader"]["entrypoint"]["uri"].as_str(),
        Some("file:/coffer/gramine/lib/libsysdb.so")
    );
    assert_eq!(
        toml["loader"]["entrypoint"]["sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(
            &files["coffer/gramine/lib/libsysdb.so"]
        ))
    );
    let env = &toml["loader"]["env"];
    assert_eq!(env["COFFER_WORKLOAD"].as_str(), Some("web"));
    assert_eq!(env["COFFER_EVIDENCE"].as_str(), Some("gramine"));
    assert_eq!(
        env["COFFER_ROOT_CA"].as_str(),
        Some("/coffer/gramine/coordinator-root-ca.pem")
    );
    assert_eq!(
        env["COFFER_SECRET_DIRS"].as_str(),
        Some("/coffer/tls:/run/secrets")
    );
    assert!(env["LD_LIBRARY_PATH"]
        .as_str()
        .unwrap()
        .starts_with("/coffer/gramine/lib/runtime/glibc:"));
    assert_eq!(
        env["COFFER_COORDINATOR"]["passthrough"].as_bool(),
        Some(true)
    );
    assert!(env.get("COFFER_SIM_DIR").is_none() && env.get("COFFER_ROOTFS").is_none());
    assert_eq!(
        toml["sys"]["enable_sigterm_injection"].as_bool(),
        Some(true)
    );
    let root_hash = hex::encode(sha2::Sha256::digest(std::fs::read(root_ca()).unwrap()));
    assert!(text.contains(&format!(
        "{{ uri = \"file:/coffer/gramine/coordinator-root-ca.pem\", sha256 = \"{root_hash}\" }}"
    )));
    assert!(text.contains("\"file:/coffer/gramine/lib/runtime/glibc/libc.so.6\""));
    let mounts: Vec<&str> = toml["fs"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/coffer/tls", "/run/secrets", "/tmp"]);
    // The host loader runs with the glibc bundled beside it, from the image's ENTRYPOINT.
    assert!(files.contains_key("coffer/gramine/host/loader"));
    assert!(files.contains_key("coffer/gramine/host/ld.so"));
    assert!(files.contains_key("coffer/gramine/host/libc.so.6"));
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/coffer/launcher", "--start-gramine-sgx"])
    );

    // A tampered signed byte (ISVSVN) no longer verifies.
    let mut bad = sig.clone();
    bad[1026] ^= 1;
    assert!(coffer_sgx::Sigstruct::parse(&bad)
        .unwrap()
        .verify()
        .is_err());

    // Reproducible: a second conversion is byte-identical.
    let (out2, v2) = run("out2");
    assert_eq!(v2["mrenclave"], mrenclave.as_str());
    assert_eq!(v2["manifest_digest"], v["manifest_digest"]);
    let (_, files2) = config_and_last_layer(&out2);
    assert_eq!(files2, files);

    // Gramine has no globs: a glob it cannot express is refused with the path named.
    let out3 = t.0.join("out3");
    let o = coffer()
        .arg("--json")
        .arg("convert")
        .arg(format!("oci:{}:v1", img.display()))
        .arg(format!("oci:{}:cc", out3.display()))
        .arg("--launcher")
        .arg("/bin/busybox")
        .arg("--tee")
        .arg("sgx")
        .arg("--sign-key")
        .arg(&key)
        .arg("--gramine-dir")
        .arg(&gdir)
        .arg("--allowed")
        .arg("/var/*.log")
        .args(sgx_flags())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"]["kind"], "sgx");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/var/*.log"));
    assert!(!out3.exists());
}
