//! Real distribution images, not busybox: single-app images built from Debian packages with
//! mmdebstrap (`scripts/build-debian-images.sh`, which `scripts/test.sh` runs first) are made
//! into OCI images the way `docker import` + a `COPY` layer would, converted with the real
//! `coffer convert`, run under runc by `coffer run` against a real simulated Coordinator, and
//! checked over their own protocols with their secrets delivered as argv (redis `--requirepass`),
//! environment and file (a Python HTTP server). A host that rewrites a layer and every digest
//! above it is refused at activation: the app never starts.
//!
//! Needs root, runc and the static launcher (`bash scripts/install-deps.sh`,
//! `bash scripts/build-launcher.sh`), as CI has them.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::image::{
    free_port, is_root, oci_layout, put_blob, rootfs_tarball, runc_installed, static_launcher,
    write_index,
};
use common::*;
use sha2::{Digest, Sha256};

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn needs_root_and_runc() {
    assert!(
        is_root(),
        "the real-image tests start runc containers: run them as root (CI does)"
    );
    assert!(
        runc_installed(),
        "runc is missing: bash scripts/install-deps.sh"
    );
}

/// An OCI layout at `dir`: the Debian root filesystem as the first layer (as `docker import`
/// makes it, /dev nodes included), then `extra` files as a second layer (as `COPY` adds them).
fn oci_image(dir: &Path, rootfs: &Path, extra: &[(&str, &[u8])], cmd: &[&str]) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in extra {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, *data).unwrap();
    }
    let app = tar.into_inner().unwrap();
    oci_layout(
        dir,
        &[&fs::read(rootfs).unwrap(), &app],
        serde_json::json!({ "Cmd": cmd, "Env": [PATH_ENV], "WorkingDir": "/" }),
        None,
    );
}

fn ok(args: &[&str]) -> serde_json::Value {
    let (success, v, output) = cli(args);
    assert!(success, "coffer {args:?}:\n{output}");
    v
}

/// A simulated Coordinator with a manifest for one converted image and a user-defined secret
/// set by its owner, ready for `coffer run`.
struct Deployment {
    tmp: tempfile::TempDir,
    coordinator: Proc,
    image: PathBuf,
}

impl Deployment {
    fn new(source: impl FnOnce(&Path), workload: serde_json::Value, secret: &str) -> Self {
        needs_root_and_runc();
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let src = t.join("src");
        source(&src);
        let image = t.join("image");
        let converted = ok(&[
            "convert",
            &format!("oci:{}", src.display()),
            &format!("oci:{}", image.display()),
            "--launcher",
            static_launcher().to_str().unwrap(),
        ]);
        let measurement = converted["image_measurement"].as_str().unwrap();
        let sim = t.join("sim");
        let coordinator = start(&t.join("data"), &sim);
        let (owner, owner_pem) = user_files(t);
        let manifest = serde_json::json!({
            "packages": { "app": { "tee": "sgx", "mrenclave": measurement } },
            "workloads": { "app": workload },
            "secrets": { "app_secret": { "type": "user-defined" } },
            "users": { "owner": { "certificate": owner_pem, "roles": ["set-secret"] } },
            "roles": { "set-secret": { "resource": "secrets", "names": ["app_secret"], "actions": ["write"] } }
        });
        let manifest_path = t.join("manifest.json");
        fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let simulated = ["--allow-simulation", "--sim-dir", sim.to_str().unwrap()];
        let at = ["--coordinator", coordinator.addr.as_str()];
        let mut args = vec!["manifest", "set", manifest_path.to_str().unwrap()];
        args.extend(at.iter().chain(&simulated));
        ok(&args);
        let ca = t.join("root-ca.pem");
        let mut args = vec!["verify", "--manifest", manifest_path.to_str().unwrap()];
        args.extend(at.iter().chain(&simulated));
        args.extend(["--root-ca-out", ca.to_str().unwrap()]);
        ok(&args);
        let mut args = vec!["secret", "set", "app_secret", "--value", secret];
        args.extend(at);
        args.extend(["--root-ca", ca.to_str().unwrap()]);
        args.extend(["--cert", owner.0.to_str().unwrap()]);
        args.extend(["--key", owner.1.to_str().unwrap()]);
        ok(&args);
        Deployment {
            tmp,
            coordinator,
            image,
        }
    }

    /// Starts `coffer run` for the workload; its output goes to files in the temp directory.
    fn run(&self, name: &str) -> Run {
        let t = self.tmp.path();
        let (out, err) = (t.join(format!("{name}.out")), t.join(format!("{name}.err")));
        let child = Command::new(COFFER)
            .env("COFFER_LOG", "error")
            .arg("run")
            .arg(&self.image)
            .args(["--coordinator", &self.coordinator.addr, "--workload", "app"])
            .arg("--root-ca")
            .arg(t.join("root-ca.pem"))
            .arg("--sim-dir")
            .arg(t.join("sim"))
            .args([
                "--name",
                &format!("coffer-debian-{name}-{}", std::process::id()),
            ])
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Run { child, out, err }
    }
}

/// The owner's client certificate and key as files, and the certificate PEM.
fn user_files(dir: &Path) -> ((PathBuf, PathBuf), String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["owner.users.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("owner.pem"), dir.join("owner-key.pem"));
    fs::write(&c, cert.pem()).unwrap();
    fs::write(&k, key.serialize_pem()).unwrap();
    ((c, k), cert.pem())
}

/// A running `coffer run`; stopped (and its container removed) on drop.
struct Run {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Run {
    fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            fs::read_to_string(&self.out).unwrap_or_default(),
            fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Connects to the app's port once it listens; fails with the logs if the run ends first.
    fn connect(&mut self, port: u16) -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return s;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "coffer run ended ({st}) before the app listened:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the app never listened:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the run to end by itself; returns its exit code.
    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "coffer run did not end:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Asked to stop, as a service manager would; a second request ends the grace period.
        let pid = rustix::process::Pid::from_child(&self.child);
        for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            let _ = rustix::process::kill_process(pid, sig);
            for _ in 0..30 {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends RESP inline commands; returns each reply line.
fn redis(s: &mut TcpStream, command: &str) -> String {
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "redis closed the connection");
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap().trim_end().to_string()
}

#[test]
fn redis_from_debian_gets_its_password_as_argv_and_a_rewritten_layer_is_refused() {
    let port = free_port().to_string();
    let password = "correct-horse-battery-staple";
    let rootfs = rootfs_tarball("redis");
    let d = Deployment::new(
        |src| oci_image(src, &rootfs, &[], &["redis-server"]),
        serde_json::json!({ "package": "app", "parameters": { "argv": [
            "/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", port,
            "--requirepass", "{{ secrets.app_secret.value.text }}"
        ] } }),
        password,
    );
    {
        let mut run = d.run("redis");
        let mut s = run.connect(port.parse().unwrap());
        assert!(
            redis(&mut s, "PING").starts_with("-NOAUTH"),
            "{}",
            run.logs()
        );
        assert!(redis(&mut s, "AUTH not-the-password").starts_with("-WRONGPASS"));
        assert_eq!(redis(&mut s, &format!("AUTH {password}")), "+OK");
        assert_eq!(redis(&mut s, "SET coffer confidential"), "+OK");
        assert_eq!(redis(&mut s, "GET coffer"), "$12");
        assert_eq!(redis(&mut s, ""), "confidential");
    }

    // The host rewrites a file in the Debian layer and every digest above it (layer, diff_id,
    // config, manifest, index), so the image is consistent; the measurement is not.
    rewrite_layer(&d.image, b"# Redis configuration file example");
    let mut run = d.run("redis-tampered");
    let code = run.wait();
    let logs = run.logs();
    assert_eq!(code, Some(77), "{logs}");
    assert!(logs.contains("activation refused"), "{logs}");
    assert!(TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err());
}

#[test]
fn python_from_debian_gets_its_token_as_env_and_file_over_http() {
    let port = free_port();
    let token = "tok-5f2b8e1c";
    let server: &[u8] = b"import os, socket
token_env = os.environ['APP_TOKEN']
token_file = open('/etc/app/token').read()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT'])))
s.listen(8)
while True:
    c, _ = s.accept()
    c.recv(65536)
    body = ('env=' + token_env + '\\nfile=' + token_file + '\\n').encode()
    head = 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %d\\r\\n\\r\\n'
    c.sendall((head % len(body)).encode() + body)
    c.close()
";
    let rootfs = rootfs_tarball("python");
    let d = Deployment::new(
        |src| {
            oci_image(
                src,
                &rootfs,
                &[("app/server.py", server)],
                &["python3", "/app/server.py"],
            )
        },
        serde_json::json!({ "package": "app", "parameters": {
            "env": { "APP_TOKEN": "{{ secrets.app_secret.value.text }}", "PORT": port.to_string() },
            "files": { "/etc/app/token": { "content": "{{ secrets.app_secret.value.text }}" } }
        } }),
        token,
    );
    let mut run = d.run("python");
    let mut s = run.connect(port);
    s.write_all(b"GET / HTTP/1.0\r\nHost: app\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200 OK"),
        "{response}\n{}",
        run.logs()
    );
    assert!(
        response.ends_with(&format!("\r\n\r\nenv={token}\nfile={token}\n")),
        "{response}"
    );
}

/// Flips one byte after `needle` inside the image's largest layer and re-hashes
/// everything that names it, as a host in control of the registry or disk can.
fn rewrite_layer(layout: &Path, needle: &[u8]) {
    let blobs = layout.join("blobs/sha256");
    let read_json = |hex: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(blobs.join(hex)).unwrap()).unwrap()
    };
    let put = |data: &[u8]| put_blob(layout, data);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let mut manifest = read_json(&manifest_hex);
    let layers = manifest["layers"].as_array().unwrap().clone();
    let (i, layer) = layers
        .iter()
        .enumerate()
        .max_by_key(|(_, l)| l["size"].as_u64().unwrap())
        .unwrap();
    let gzip = layer["mediaType"].as_str().unwrap().ends_with("+gzip");
    let blob = fs::read(blobs.join(&layer["digest"].as_str().unwrap()[7..])).unwrap();
    let mut tar = Vec::new();
    if gzip {
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
    } else {
        tar = blob;
    }
    let at = tar
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the needle is in the layer")
        + needle.len();
    tar[at] ^= 0x20;
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let blob = if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    } else {
        tar
    };
    let (digest, size) = put(&blob);
    manifest["layers"][i]["digest"] = digest.into();
    manifest["layers"][i]["size"] = size.into();
    let mut config = read_json(&manifest["config"]["digest"].as_str().unwrap()[7..]);
    config["rootfs"]["diff_ids"][i] = diff_id.into();
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    write_index(layout, &put(&serde_json::to_vec(&manifest).unwrap()), None);
}
