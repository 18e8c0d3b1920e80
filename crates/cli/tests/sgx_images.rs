//! `coffer convert --tee sgx` on real images, checked against a model of Gramine's policies
//! (`crates/gramine-model`), since no enclave can start on a machine without SGX: busybox with
//! a shebang script, and Debian's python3, redis-server and nginx (merged `/usr`, built with
//! mmdebstrap by `scripts/build-debian-images.sh`). For each, the model follows the host
//! loader's start, the launcher's configuration, reads and writes, and the app's exec with its
//! interpreter and libraries; nothing may be refused and no secret may reach the host's disk.
//! Then the same image is broken the ways earlier conversions were, and the model says so.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use coffer_gramine_model::check::MANIFEST;
use coffer_gramine_model::image::{Image, Node};
use coffer_gramine_model::policy::{Access, MountKind};
use coffer_gramine_model::{check_image, Report};
use common::image::{
    busybox_layer, gramine_dir, oci_layout, rootfs_tarball, sgx_vector_key, stand_in_root_ca,
    static_launcher,
};

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A tar layer of `(path, target)` symlinks and `(path, content, mode)` files.
fn layer(links: &[(&str, &str)], files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, target) in links {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, path, target).unwrap();
    }
    for (path, content, mode) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_size(content.len() as u64);
        tar.append_data(&mut h, path, *content).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Converts the OCI layout `src` with `--tee sgx` and reads the result into the model.
fn convert_sgx(t: &Path, src: &Path, extra: &[&str]) -> Image {
    let root_ca = stand_in_root_ca();
    let pin = ["--coordinator-root-ca", root_ca.to_str().unwrap()];
    convert_sgx_pinned(t, src, &pin, extra)
}

/// [`convert_sgx`] with the Coordinator pin given.
fn convert_sgx_pinned(t: &Path, src: &Path, pin: &[&str], extra: &[&str]) -> Image {
    let out = t.join("sgx");
    let o = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .env("COFFER_LOG", "error")
        .arg("convert")
        .arg(format!("oci:{}", src.display()))
        .arg(format!("oci:{}", out.display()))
        .arg("--launcher")
        .arg(static_launcher())
        .args([
            "--tee",
            "sgx",
            "--workload",
            "app",
            "--secret-dir",
            "/run/secrets",
        ])
        .arg("--sign-key")
        .arg(sgx_vector_key())
        .arg("--gramine-dir")
        .arg(gramine_dir(t))
        .args(pin)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Image::from_oci_layout(&out).unwrap()
}

fn checked(image: &Image) -> Report {
    let r = check_image(image).unwrap();
    assert!(r.is_ok(), "{r}");
    r
}

fn trusted(r: &Report, action: &str, path: &str) {
    assert!(
        r.steps.iter().any(|s| s.action == action
            && s.path == path
            && matches!(s.access, Access::Trusted { .. })),
        "no trusted {action} of {path}:\n{r}"
    );
}

/// The manifest of `image` with `edit` applied, as a host or an older converter would have it.
fn with_manifest(image: &Image, edit: impl Fn(String) -> String) -> Image {
    let text = match image.resolve(MANIFEST) {
        Some((_, Node::File { bytes: Some(b), .. })) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("no manifest: {other:?}"),
    };
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    let mut i = image.clone();
    i.add_file(MANIFEST, edited.as_bytes(), 0o644);
    i
}

fn problems_mention(image: &Image, needle: &str) {
    let r = check_image(image).unwrap();
    assert!(
        r.problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}:\n{r}"
    );
}

#[test]
fn busybox_with_a_shebang_script_runs_inside_gramine_and_broken_manifests_are_caught() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    oci_layout(
        &src,
        &[
            &busybox_layer(),
            &layer(
                &[("bin/sh", "busybox"), ("usr/bin/env", "../../bin/busybox")],
                &[
                    ("app/run.sh", b"#!/usr/bin/env sh\necho hello\n", 0o755),
                    ("app/conf/db.toml", b"password = \"hunter2\"\n", 0o600),
                ],
            ),
        ],
        serde_json::json!({ "Entrypoint": ["/app/run.sh"], "Env": [PATH_ENV] }),
        None,
    );
    let key_file = t.path().join("image.key");
    let image = convert_sgx(
        t.path(),
        &src,
        &[
            "--encrypt",
            "/app/conf/**",
            "--key-out",
            key_file.to_str().unwrap(),
        ],
    );
    let r = checked(&image);
    trusted(&r, "exec", "/app/run.sh");
    // The script's interpreter is a symlink: trusted under its own path.
    trusted(&r, "exec", "/usr/bin/env");
    // `env` finds `sh` through the image's PATH: /bin/sh, also a symlink.
    trusted(&r, "exec", "/bin/sh");
    trusted(&r, "exec", "/coffer/launcher");
    trusted(&r, "read", "/coffer/workload.json");
    trusted(&r, "read", "/coffer/gramine/coordinator-root-ca.pem");
    for f in ["/coffer/tls/key.pem", "/run/secrets/secret"] {
        assert!(
            r.steps
                .iter()
                .any(|s| s.path == f && matches!(s.access, Access::InEnclave(_))),
            "{r}"
        );
    }
    assert!(r.has("host", "/coffer/gramine/host/libc.so.6"), "{r}");
    // The encrypted file is Gramine's format on the host, under an encrypted mount, and only
    // the key the launcher writes opens it.
    assert!(
        r.steps.iter().any(|s| s.path == "/app/conf/db.toml"
            && s.access == Access::InEnclave(MountKind::Encrypted)),
        "{r}"
    );
    let stored = match image.resolve("/app/conf/db.toml") {
        Some((_, Node::File { bytes: Some(b), .. })) => b.clone(),
        other => panic!("{other:?}"),
    };
    assert!(!String::from_utf8_lossy(&stored).contains("hunter2"));
    let key = coffer_image::protect::Key::parse(&fs::read(&key_file).unwrap()).unwrap();
    assert_eq!(
        &coffer_sgx::gramine::pf::decrypt(&key.gramine_kdk(), "/app/conf/db.toml", &stored)
            .unwrap()[..],
        b"password = \"hunter2\"\n"
    );

    // What earlier conversions did, and what a host would like to do, is caught.
    // Symlink paths not listed: the shell is refused.
    problems_mention(
        &with_manifest(&image, |m| {
            m.lines()
                .filter(|l| !l.contains("\"file:/bin/sh\""))
                .collect::<Vec<_>>()
                .join("\n")
        }),
        "Gramine cannot execute /bin/sh",
    );
    // The workload name from the host.
    problems_mention(
        &with_manifest(&image, |m| {
            m.replace(
                "loader.env.COFFER_WORKLOAD = \"app\"",
                "loader.env.COFFER_WORKLOAD = { passthrough = true }",
            )
        }),
        "COFFER_WORKLOAD",
    );
    // Secrets to a host path Gramine would write through in plaintext.
    problems_mention(
        &with_manifest(&image, |m| {
            m.replace("  { type = \"tmpfs\", path = \"/run/secrets\" },\n", "")
                .replace(
                    "sgx.allowed_files = [\n",
                    "sgx.allowed_files = [\n  \"file:/run/secrets/\",\n",
                )
        }),
        "plaintext",
    );
    // No in-enclave TLS directory: Gramine refuses to create the key.
    problems_mention(
        &with_manifest(&image, |m| {
            m.replace("  { type = \"tmpfs\", path = \"/coffer/tls\" },\n", "")
        }),
        "refuses to create /coffer/tls/key.pem",
    );
    // No SIGTERM for the app.
    problems_mention(
        &with_manifest(&image, |m| {
            m.replace(
                "sys.enable_sigterm_injection = true",
                "sys.enable_sigterm_injection = false",
            )
        }),
        "SIGTERM",
    );
    // The encrypted file without its encrypted mount: Gramine would refuse it (or, were it
    // allowed, hand the app ciphertext).
    problems_mention(
        &with_manifest(&image, |m| {
            m.lines()
                .filter(|l| !l.contains("type = \"encrypted\""))
                .collect::<Vec<_>>()
                .join("\n")
        }),
        "not under an encrypted mount",
    );
    // A file the host swapped under a trusted path.
    let mut swapped = image.clone();
    swapped.add_file("/bin/busybox", b"#!/bin/evil\n", 0o755);
    problems_mention(&swapped, "/bin/busybox");
}

/// A Debian image (rootfs tarball + an app layer), converted for SGX and checked.
fn debian(
    name: &str,
    cmd: &[&str],
    app: &[(&str, &[u8], u32)],
) -> (tempfile::TempDir, Image, Report) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    oci_layout(
        &src,
        &[&fs::read(rootfs_tarball(name)).unwrap(), &layer(&[], app)],
        serde_json::json!({ "Cmd": cmd, "Env": [PATH_ENV], "WorkingDir": "/" }),
        None,
    );
    let image = convert_sgx(t.path(), &src, &[]);
    let r = checked(&image);
    (t, image, r)
}

#[test]
fn debian_python_runs_on_gramines_glibc_through_merged_usr_links() {
    let (_t, image, r) = debian(
        "python",
        &["python3", "/app/server.py"],
        &[("app/server.py", b"print('hello')\n", 0o644)],
    );
    // Found through PATH as /usr/bin/python3, a link to python3.11: trusted under that path.
    trusted(&r, "exec", "/usr/bin/python3");
    trusted(
        &r,
        "interpreter",
        "/coffer/gramine/lib/runtime/glibc/ld-linux-x86-64.so.2",
    );
    trusted(&r, "library", "/coffer/gramine/lib/runtime/glibc/libc.so.6");
    trusted(&r, "library", "/coffer/gramine/lib/runtime/glibc/libm.so.6");
    // libz and libexpat come from the image, under /lib (a link to usr/lib in Debian 12).
    assert!(
        r.steps
            .iter()
            .any(|s| s.action == "library" && s.path.ends_with("/libz.so.1")),
        "{r}"
    );
    // Listing only real files (as before symlink paths were trusted): the soname link
    // libz.so.1 → libz.so.1.2.13 is refused wherever the dynamic linker looks.
    problems_mention(
        &with_manifest(&image, |m| {
            m.lines()
                .filter(|l| !l.contains("/libz.so.1\""))
                .collect::<Vec<_>>()
                .join("\n")
        }),
        "needs libz.so.1: Gramine refuses /lib/x86_64-linux-gnu/libz.so.1",
    );
    // Without Gramine's glibc first, the app would run on the image's: caught.
    problems_mention(
        &with_manifest(&image, |m| {
            m.lines()
                .filter(|l| !l.starts_with("loader.env.LD_LIBRARY_PATH"))
                .collect::<Vec<_>>()
                .join("\n")
        }),
        "not Gramine's",
    );
}

/// Pinning the Coordinator by MRSIGNER instead of its root CA: the manifest fixes the
/// identity, the image carries no root CA, and the model finds nothing to refuse.
#[test]
fn a_coordinator_pinned_by_measurement_needs_no_root_ca_in_the_image() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    oci_layout(
        &src,
        &[&busybox_layer()],
        serde_json::json!({ "Entrypoint": ["/bin/busybox", "true"], "Env": [PATH_ENV] }),
        None,
    );
    let signer = "5a".repeat(32);
    let image = convert_sgx_pinned(
        t.path(),
        &src,
        &[
            "--coordinator-mrsigner",
            &signer,
            "--coordinator-isv-prod-id",
            "3",
            "--coordinator-min-isv-svn",
            "2",
        ],
        &[],
    );
    let r = checked(&image);
    assert!(image
        .resolve("/coffer/gramine/coordinator-root-ca.pem")
        .is_none());
    assert!(!r.has("read", "/coffer/gramine/coordinator-root-ca.pem"));
    let text = match image.resolve(MANIFEST) {
        Some((_, Node::File { bytes: Some(b), .. })) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    for line in [
        format!(
            "loader.env.COFFER_COORDINATOR_MRSIGNER = \"{}\"",
            "5a".repeat(32)
        ),
        "loader.env.COFFER_COORDINATOR_ISVPRODID = \"3\"".to_string(),
        "loader.env.COFFER_COORDINATOR_MIN_ISVSVN = \"2\"".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    // Without any pin the model says the launcher would trust nothing.
    problems_mention(
        &with_manifest(&image, |m| {
            m.lines()
                .filter(|l| !l.contains("COFFER_COORDINATOR_MRSIGNER"))
                .collect::<Vec<_>>()
                .join("\n")
        }),
        "no trust pin",
    );
}

#[test]
fn debian_redis_and_nginx_find_every_library_inside_gramine() {
    let (_t, _, r) = debian("redis", &["redis-server"], &[]);
    trusted(&r, "exec", "/usr/bin/redis-server");
    assert!(
        r.steps.iter().filter(|s| s.action == "library").count() >= 4,
        "{r}"
    );

    let (_t, _, r) = debian("nginx", &["nginx", "-g", "daemon off;"], &[]);
    trusted(&r, "exec", "/usr/sbin/nginx");
    for lib in [
        "libssl.so.3",
        "libcrypto.so.3",
        "libpcre2-8.so.0",
        "libz.so.1",
    ] {
        assert!(
            r.steps
                .iter()
                .any(|s| s.action == "library" && s.path.ends_with(&format!("/{lib}"))),
            "nginx loads {lib}:\n{r}"
        );
    }
}
