//! `docker://` references against a real registry on 127.0.0.1: Debian's `docker-registry`
//! (the CNCF distribution server), plain HTTP without auth, and HTTPS with a private CA and
//! htpasswd users. skopeo pushes the source image, `coffer convert` pulls it and pushes the
//! result, skopeo reads what coffer pushed, `coffer run` pulls it; a second push sends no blob
//! the registry has; a blob modified in the registry's storage is refused.
//!
//! Needs docker-registry, apache2-utils (htpasswd), skopeo and busybox-static
//! (`bash scripts/install-deps.sh`).

mod common;

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::image::{busybox_layer, free_port, launcher, oci_layout};

use common::COFFER;

/// A `docker-registry serve` process; killed on drop.
struct Registry {
    child: Child,
    addr: String,
    storage: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry storing in `dir`; with `tls` (certificate, key) and `htpasswd` if given.
    fn start(dir: &Path, tls: Option<(&Path, &Path)>, htpasswd: Option<&Path>) -> Registry {
        let port = free_port();
        let storage = dir.join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some(h) = htpasswd {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: coffer-test\n    path: {}\n",
                h.display()
            ));
        }
        let config_path = dir.join("registry.yml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(fs::File::create(dir.join("registry.log")).unwrap())
            .stderr(fs::File::create(dir.join("registry.err")).unwrap())
            .spawn()
            .expect("docker-registry (bash scripts/install-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            addr: format!("127.0.0.1:{port}"),
            storage,
        }
    }
}

/// A one-layer OCI layout tagged `1`: static busybox, Entrypoint `busybox echo hello`.
fn source_image(dir: &Path) {
    oci_layout(
        dir,
        &[&busybox_layer()],
        serde_json::json!({ "Entrypoint": ["/bin/busybox", "echo", "hello"] }),
        Some("1"),
    );
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
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

/// `coffer --json convert SRC DST` with the test's launcher, a given blob cache and `extra`.
fn convert(src: &str, dst: &str, cache: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(COFFER);
    isolated(&mut c, cache);
    c.args(["--json", "convert", src, dst, "--launcher"])
        .arg(launcher())
        .arg("--blob-cache")
        .arg(cache)
        .args(extra);
    c
}

/// No auth file of the developer's is read: HOME points into the test, the other variables
/// that name one are removed.
fn isolated(c: &mut Command, home: &Path) {
    c.env("COFFER_LOG", "error").env("HOME", home);
    for v in [
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "DOCKER_CONFIG",
        "COFFER_REGISTRY_CREDS",
    ] {
        c.env_remove(v);
    }
}

#[test]
fn plain_http_registry_pull_convert_push_read_back_and_run() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(t.path(), None, None);
    let src = t.path().join("src");
    source_image(&src);
    let a = &reg.addr;
    ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", src.display()),
        &format!("docker://{a}/busybox:1"),
    ]));
    let cache = t.path().join("cache");
    let insecure = ["--tls-verify=false"];

    // Pull from the registry, convert, push the result back.
    let out = ok(&mut convert(
        &format!("docker://{a}/busybox:1"),
        &format!("docker://{a}/busybox-cc:1"),
        &cache,
        &insecure,
    ));
    let v = json(&out);
    assert_eq!(v["pulled"]["blobs"], 2, "{v}");
    assert!(
        v["pulled"]["downloaded_bytes"].as_u64().unwrap() > 1 << 20,
        "{v}"
    );
    assert_eq!(v["pushed"]["reference"], format!("{a}/busybox-cc:1"), "{v}");
    let uploaded = v["pushed"]["uploaded_blobs"].as_u64().unwrap();
    assert!(uploaded >= 2, "{v}");
    let measurement = v["image_measurement"].as_str().unwrap().to_string();

    // skopeo reads what coffer pushed: the config's label and every blob.
    let inspect = ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{a}/busybox-cc:1"),
    ]));
    let i = json(&inspect);
    let labels = i["Labels"].as_object().unwrap();
    assert!(
        labels.values().any(|l| l == measurement.as_str()),
        "the measurement label is missing: {i}"
    );
    ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{a}/busybox-cc:1"),
        &format!("oci:{}:cc", t.path().join("readback").display()),
    ]));

    // The same conversion again: every blob is in the cache and in the registry already.
    let v = json(&ok(&mut convert(
        &format!("docker://{a}/busybox:1"),
        &format!("docker://{a}/busybox-cc:2"),
        &cache,
        &insecure,
    )));
    assert_eq!(v["pulled"]["downloaded_bytes"], 0, "{v}");
    assert_eq!(v["pushed"]["uploaded_blobs"], 0, "{v}");
    assert_eq!(v["pushed"]["skipped_blobs"], uploaded, "{v}");
    assert_eq!(v["image_measurement"], measurement.as_str());

    // A cached blob edited on disk is not used: it is fetched again.
    let cached: Vec<PathBuf> = fs::read_dir(cache.join("sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| fs::metadata(p).map(|m| m.len() > 64 << 10).unwrap_or(false))
        .collect();
    assert!(!cached.is_empty());
    for p in &cached {
        let mut data = fs::read(p).unwrap();
        data[0] ^= 1;
        fs::write(p, data).unwrap();
    }
    let v = json(&ok(&mut convert(
        &format!("docker://{a}/busybox:1"),
        &format!("oci:{}", t.path().join("after-cache-edit").display()),
        &cache,
        &insecure,
    )));
    assert!(
        v["pulled"]["downloaded_bytes"].as_u64().unwrap() > 1 << 20,
        "{v}"
    );
    assert_eq!(v["image_measurement"], measurement.as_str());

    // coffer run pulls it: the launcher starts and asks for its Coordinator.
    let mut c = Command::new(COFFER);
    isolated(&mut c, &cache);
    let out = run(c
        .args(["run", &format!("docker://{a}/busybox-cc:1"), "--no-runtime"])
        .args(insecure)
        .arg("--blob-cache")
        .arg(&cache));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("COFFER_COORDINATOR is not set"), "{stderr}");

    // Without --tls-verify=false a plain-HTTP registry is refused, and says what to do.
    let out = run(&mut convert(
        &format!("docker://{a}/busybox:1"),
        &format!("oci:{}", t.path().join("x").display()),
        &cache,
        &[],
    ));
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "registry_unreachable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--tls-verify=false"),
        "{v}"
    );

    // The registry's storage is edited under it: every layer changes by one byte (the
    // manifests and configs are the small blobs). A pull with an empty cache refuses it.
    let blobs: Vec<PathBuf> = fs::read_dir(reg.storage.join("docker/registry/v2/blobs/sha256"))
        .unwrap()
        .flatten()
        .flat_map(|d| fs::read_dir(d.path()).unwrap().flatten())
        .map(|d| d.path().join("data"))
        .filter(|p| fs::metadata(p).map(|m| m.len() > 64 << 10).unwrap_or(false))
        .collect();
    assert!(!blobs.is_empty());
    for layer in blobs {
        let mut data = fs::read(&layer).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 1;
        fs::write(&layer, data).unwrap();
    }
    let out = run(&mut convert(
        &format!("docker://{a}/busybox:1"),
        &format!("oci:{}", t.path().join("y").display()),
        &t.path().join("fresh-cache"),
        &insecure,
    ));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "digest_mismatch", "{v}");
    // Refused by the pull itself (not later by the conversion), and nothing was cached.
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the registry served modified content"),
        "{v}"
    );
    let cached: Vec<_> = fs::read_dir(t.path().join("fresh-cache/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::metadata(e.path())
                .map(|m| m.len() > 64 << 10)
                .unwrap_or(false)
        })
        .collect();
    assert!(cached.is_empty(), "{cached:?}");
}

#[test]
fn https_registry_with_a_private_ca_and_htpasswd_users() {
    let t = tempfile::tempdir().unwrap();
    // A private CA and a server certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let (cert, key) = (t.path().join("tls.crt"), t.path().join("tls.key"));
    fs::write(&cert, leaf.pem()).unwrap();
    fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let certs = t.path().join("certs");
    fs::create_dir(&certs).unwrap();
    fs::write(certs.join("ca.crt"), ca.pem()).unwrap();
    let htpasswd = t.path().join("htpasswd");
    let h = ok(Command::new("htpasswd").args(["-Bbn", "alice", "s3cret-pw"]));
    fs::write(&htpasswd, &h.stdout).unwrap();
    let reg = Registry::start(t.path(), Some((&cert, &key)), Some(&htpasswd));
    let a = &reg.addr;
    let src = t.path().join("src");
    source_image(&src);
    ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        "--dest-creds",
        "alice:s3cret-pw",
        &format!("oci:{}:1", src.display()),
        &format!("docker://{a}/team/busybox:1"),
    ]));
    let cache = t.path().join("cache");
    let from = format!("docker://{a}/team/busybox:1");
    let cert_dir = ["--cert-dir", certs.to_str().unwrap()];

    // Right credentials, CA trusted: pulled, converted and pushed over verified HTTPS.
    let mut args = cert_dir.to_vec();
    args.extend(["--creds", "alice:s3cret-pw"]);
    let v = json(&ok(&mut convert(
        &from,
        &format!("docker://{a}/team/busybox-cc:1"),
        &cache,
        &args,
    )));
    assert_eq!(
        v["pushed"]["reference"],
        format!("{a}/team/busybox-cc:1"),
        "{v}"
    );
    ok(Command::new("skopeo").args([
        "inspect",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--creds",
        "alice:s3cret-pw",
        &format!("docker://{a}/team/busybox-cc:1"),
    ]));

    // The credentials from an auth file (Docker's format) instead of --creds.
    let auth = base64_encode(b"alice:s3cret-pw");
    let authfile = t.path().join("auth.json");
    fs::write(
        &authfile,
        format!(r#"{{"auths": {{"{a}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let mut args = cert_dir.to_vec();
    args.extend(["--authfile", authfile.to_str().unwrap()]);
    ok(&mut convert(
        &from,
        &format!("oci:{}", t.path().join("via-authfile").display()),
        &t.path().join("cache2"),
        &args,
    ));

    // Wrong password: refused as an authentication failure, the password never printed.
    let mut args = cert_dir.to_vec();
    args.extend(["--creds", "alice:wrong-pw"]);
    let out = run(&mut convert(
        &from,
        &format!("oci:{}", t.path().join("denied").display()),
        &t.path().join("cache3"),
        &args,
    ));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "registry_auth", "{v}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrong-pw"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-pw"));

    // --creds with two different registries would hand the password to both: refused.
    let out = run(&mut convert(
        &from,
        "docker://other.example/team/x:1",
        &t.path().join("cache5"),
        &["--creds", "alice:s3cret-pw"],
    ));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret-pw"));

    // The CA not trusted: refused with the TLS reason and what to pass.
    let out = run(&mut convert(
        &from,
        &format!("oci:{}", t.path().join("untrusted").display()),
        &t.path().join("cache4"),
        &["--creds", "alice:s3cret-pw"],
    ));
    let v = json(&out);
    assert_eq!(v["error"]["kind"], "registry_unreachable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--cert-dir"),
        "{v}"
    );
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
