//! `docker://` references against a real registry on 127.0.0.1: Debian's `docker-registry`
//! (the CNCF distribution server), plain HTTP without auth, and HTTPS with a private CA and
//! htpasswd users, and plain HTTP with bearer tokens from a token server. skopeo pushes the source image, `coffer convert` pulls it and pushes the
//! result, skopeo reads what coffer pushed, `coffer run` pulls it; a second push sends no blob
//! the registry has; a blob modified in the registry's storage is refused.
//!
//! Needs docker-registry, apache2-utils (htpasswd), skopeo and busybox-static
//! (`bash scripts/install-deps.sh`).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
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
    /// Starts a registry storing in `dir`; with `tls` (certificate, key) and `auth` (the
    /// configuration's `auth:` section) if given.
    fn start(dir: &Path, tls: Option<(&Path, &Path)>, auth: Option<&str>) -> Registry {
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
        if let Some(auth) = auth {
            config.push_str(auth);
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
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: coffer-test\n    path: {}\n",
        htpasswd.display()
    );
    let reg = Registry::start(t.path(), Some((&cert, &key)), Some(&auth));
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

/// What the token server was asked for: by whom, for which scopes.
#[derive(Debug, Clone)]
struct TokenRequest {
    user: Option<String>,
    scopes: Vec<String>,
}

/// A token server as Docker Hub, Harbor or GitLab run one beside a registry: HTTP Basic in, an
/// ES256 JWT out (signed by `key`, its certificate in the `x5c` header), granting the scopes
/// asked for. Anonymous requests and wrong passwords get 401. Serves until the test ends.
fn token_server(
    key: &rcgen::KeyPair,
    cert_der: Vec<u8>,
    password: &'static str,
) -> (String, Arc<Mutex<Vec<TokenRequest>>>) {
    use p256::pkcs8::DecodePrivateKey;
    let signer = p256::ecdsa::SigningKey::from_pkcs8_der(&key.serialize_der()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let target = head.split(' ').nth(1).unwrap_or_default();
            let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
            let scopes: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(percent_decode)
                .collect();
            let user = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                if !name.eq_ignore_ascii_case("authorization") {
                    return None;
                }
                let basic = value.trim().strip_prefix("Basic ")?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(basic)
                    .ok()?;
                let (user, pass) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
                (pass == password).then(|| user.to_string())
            });
            log.lock().unwrap().push(TokenRequest {
                user: user.clone(),
                scopes: scopes.clone(),
            });
            let response = match user {
                Some(user) => {
                    let body = serde_json::json!({
                        "token": jwt(&signer, &cert_der, &user, &scopes),
                        "expires_in": 300,
                    })
                    .to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                None => {
                    let body = "{\"details\":\"incorrect username or password\"}";
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (addr, seen)
}

/// A registry token (distribution's `token` auth): issuer and audience as the registry's
/// configuration names them, an `access` claim per scope (`repository:NAME:ACTIONS`).
fn jwt(signer: &p256::ecdsa::SigningKey, cert_der: &[u8], user: &str, scopes: &[String]) -> String {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use p256::ecdsa::signature::Signer;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header =
        serde_json::json!({ "alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(cert_der)] });
    let claims = serde_json::json!({
        "iss": "coffer-test-issuer",
        "sub": user,
        "aud": "coffer-test-registry",
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", scopes.join(" ")),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: p256::ecdsa::Signature = signer.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn registry_with_bearer_token_auth() {
    let t = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let bundle = t.path().join("token-signer.pem");
    fs::write(&bundle, cert.pem()).unwrap();
    let (token_addr, seen) = token_server(&key, cert.der().to_vec(), "t0ken-pw");
    let auth = format!(
        "auth:\n  token:\n    realm: http://{token_addr}/token\n    service: coffer-test-registry\n    issuer: coffer-test-issuer\n    rootcertbundle: {}\n",
        bundle.display()
    );
    let reg = Registry::start(t.path(), None, Some(&auth));
    let a = &reg.addr;
    let src = t.path().join("src");
    source_image(&src);
    ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        "bob:t0ken-pw",
        &format!("oci:{}:1", src.display()),
        &format!("docker://{a}/team/busybox:1"),
    ]));
    let from = format!("docker://{a}/team/busybox:1");
    seen.lock().unwrap().clear();

    // Pulled and pushed with tokens the server issued to bob, one scope per repository.
    let v = json(&ok(&mut convert(
        &from,
        &format!("docker://{a}/team/busybox-cc:1"),
        &t.path().join("cache"),
        &["--tls-verify=false", "--creds", "bob:t0ken-pw"],
    )));
    assert_eq!(
        v["pushed"]["reference"],
        format!("{a}/team/busybox-cc:1"),
        "{v}"
    );
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.user.as_deref() == Some("bob")),
        "{requests:?}"
    );
    let scopes: Vec<&str> = requests
        .iter()
        .flat_map(|r| r.scopes.iter().map(String::as_str))
        .collect();
    assert!(
        scopes.contains(&"repository:team/busybox:pull"),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"repository:team/busybox-cc:pull,push"),
        "{scopes:?}"
    );
    let inspect = json(&ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        "bob:t0ken-pw",
        &format!("docker://{a}/team/busybox-cc:1"),
    ])));
    assert_eq!(
        inspect["Labels"]["dev.coffer.image-measurement"], v["image_measurement"],
        "{inspect}"
    );

    // No credentials, and a wrong password: the token server refuses, and so does coffer,
    // naming an authentication failure; the password is never printed.
    for (i, extra) in [vec![], vec!["--creds", "bob:wr0ng-pw"]]
        .into_iter()
        .enumerate()
    {
        let mut args = vec!["--tls-verify=false"];
        args.extend(extra);
        let out = run(&mut convert(
            &from,
            &format!("oci:{}", t.path().join(format!("denied{i}")).display()),
            &t.path().join(format!("cache-denied{i}")),
            &args,
        ));
        let v = json(&out);
        assert_eq!(v["error"]["kind"], "registry_auth", "{v}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("wr0ng-pw"));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("wr0ng-pw"));
    }
}

fn base64_encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}
