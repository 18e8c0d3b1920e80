//! `coffer run`: the real `coffer` binary unpacks a converted image (made by `coffer convert`
//! from an OCI layout holding the static busybox) and starts its launcher, under runc or as a
//! local process; the launcher's exit status comes back as `coffer run`'s.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::image::{
    busybox_layer, gramine_dir, is_root, launcher, oci_layout, runc, runc_installed,
    sgx_vector_key, stand_in_root_ca,
};

fn coffer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
    c.env("COFFER_LOG", "error");
    c
}

fn is_static(p: &Path) -> bool {
    // ldd (libc-bin) reports static executables either way, depending on the glibc version.
    let out = Command::new("ldd").arg(p).output().unwrap();
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.contains("not a dynamic executable") || s.contains("statically linked")
}

/// A one-layer OCI layout: static busybox, Entrypoint `busybox echo hello`.
fn source_image(dir: &Path) {
    source_image_with(dir, &["/bin/busybox", "echo", "hello"]);
}

fn source_image_with(dir: &Path, entrypoint: &[&str]) {
    oci_layout(
        dir,
        &[&busybox_layer()],
        serde_json::json!({ "Entrypoint": entrypoint, "Env": ["PATH=/bin"] }),
        None,
    );
}

fn converted(tmp: &Path) -> PathBuf {
    let src = tmp.join("src");
    source_image(&src);
    let out = tmp.join("out");
    convert(&src, &format!("oci:{}", out.display()));
    out
}

/// `coffer convert oci:SRC TARGET` with the test's launcher.
fn convert(src: &Path, target: &str) {
    let st = coffer()
        .arg("convert")
        .arg(format!("oci:{}", src.display()))
        .arg(target)
        .arg("--launcher")
        .arg(launcher())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn no_runtime_starts_the_launcher_and_passes_its_exit_status_through() {
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    // No Coordinator configured: the launcher refuses with its configuration status (78),
    // which `coffer run` must return as its own.
    let out = coffer()
        .arg("run")
        .arg(&image)
        .arg("--no-runtime")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("COFFER_COORDINATOR is not set"), "{stderr}");
}

#[test]
fn runc_starts_the_container_and_passes_its_exit_status_through() {
    let runc = runc_installed();
    let l = launcher();
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    let out = coffer()
        .arg("run")
        .arg(&image)
        .arg("--workload")
        .arg("w")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !runc {
        assert!(stderr.contains("runc is not installed"), "{stderr}");
    }
    if runc && !is_static(&l) {
        // A dynamically linked launcher cannot start in an image without a C library: runc
        // reports the exec failure and `coffer run` fails with it.
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("COFFER_COORDINATOR is not set"), "{stderr}");
}

#[test]
fn a_modified_layer_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    // Flip one byte of the biggest blob (the busybox layer).
    let blobs = image.join("blobs/sha256");
    let biggest = fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = fs::read(&biggest).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    fs::write(&biggest, data).unwrap();
    let out = coffer()
        .arg("run")
        .arg(&image)
        .arg("--no-runtime")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("digest") && stderr.contains("corrupt or was modified"),
        "{stderr}"
    );
}

#[test]
fn port_mapping_that_host_networking_cannot_do_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    let out = coffer()
        .args(["run", "-p", "8080:80"])
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("published as itself"), "{stderr}");
}

/// Starts `coffer run` with a launcher that keeps retrying an unreachable Coordinator (a
/// long-running container), waits until the launcher is up, then stops it the way a
/// terminal or a service manager does. Returns the exit code and what `coffer run` printed.
fn stopped_run(extra: &[&str], signals: &[rustix::process::Signal]) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let image = converted(tmp.path());
    let sim = tmp.path().join("sim");
    let st = coffer()
        .args(["evidence", "sim-platform", "--dir"])
        .arg(&sim)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let ca = rcgen::generate_simple_self_signed(vec!["coordinator".into()]).unwrap();
    fs::write(tmp.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let work_parent = tmp.path().join("tmp");
    fs::create_dir(&work_parent).unwrap();
    let name = format!("coffer-stop-test-{}", std::process::id());
    let mut child = coffer()
        .env("TMPDIR", &work_parent)
        .arg("run")
        .arg(&image)
        .args([
            "--coordinator",
            "127.0.0.1:1",
            "--workload",
            "w",
            "--name",
            &name,
        ])
        .arg("--root-ca")
        .arg(tmp.path().join("ca.pem"))
        .arg("--sim-dir")
        .arg(&sim)
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("retrying") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
    }
    let pid = rustix::process::Pid::from_child(&child);
    for (i, sig) in signals.iter().enumerate() {
        rustix::process::kill_process(pid, *sig).unwrap();
        if i + 1 < signals.len() {
            while !seen.contains("coffer run: stopping") {
                line.clear();
                assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
                seen.push_str(&line);
            }
        }
    }
    let code = child.wait().unwrap().code();
    std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
    // Nothing is left behind: no unpacked image, no container.
    let left: Vec<_> = fs::read_dir(&work_parent).unwrap().flatten().collect();
    assert!(left.is_empty(), "work directories left: {left:?}\n{seen}");
    if let Some(runc) = runc() {
        let list = Command::new(runc).args(["list", "-q"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(!list.lines().any(|l| l == name), "container left: {list}");
    }
    (code, seen)
}

#[test]
fn a_stop_request_reaches_the_local_process_and_leaves_nothing_behind() {
    use rustix::process::Signal;
    let (code, stderr) = stopped_run(&["--no-runtime"], &[Signal::TERM]);
    // The launcher has no SIGTERM handler while it waits: it ends as a shell reports it.
    assert_eq!(code, Some(128 + 15), "{stderr}");
    assert!(stderr.contains("coffer run: stopping"), "{stderr}");
}

#[test]
fn a_second_stop_request_kills_the_container_and_removes_it() {
    use rustix::process::Signal;
    let runc = runc_installed();
    if !runc || !is_static(&launcher()) || !is_root() {
        eprintln!("skipped: needs runc, root and the static launcher (scripts/test.sh builds it)");
        return;
    }
    // PID 1 of a container ignores SIGTERM it has no handler for: the first request is
    // forwarded and ignored, the second ends the wait with SIGKILL.
    let (code, stderr) = stopped_run(&[], &[Signal::TERM, Signal::INT]);
    assert_eq!(code, Some(128 + 9), "{stderr}");
}

/// A `docker save` archive in the pre-25 form, whose member names carry no digests
/// (`<id>/layer.tar`, `<id>.json`), holding the converted image's config and uncompressed layers.
fn legacy_docker_archive(layout: &Path, archive: &Path) {
    let blob = |digest: &str| {
        fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let json = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
    let index = json(fs::read(layout.join("index.json")).unwrap());
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let mut tar = tar::Builder::new(fs::File::create(archive).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data).unwrap();
    };
    add(
        "config.json",
        &blob(manifest["config"]["digest"].as_str().unwrap()),
    );
    let mut names = Vec::new();
    for (i, l) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let mut plain = blob(l["digest"].as_str().unwrap());
        if l["mediaType"].as_str().unwrap().ends_with("+gzip") {
            let gz = std::mem::take(&mut plain);
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
                .unwrap();
        }
        let name = format!("layer{i}/layer.tar");
        add(&name, &plain);
        names.push(name);
    }
    let m =
        serde_json::json!([{ "Config": "config.json", "RepoTags": ["app:cc"], "Layers": names }]);
    add("manifest.json", &serde_json::to_vec(&m).unwrap());
    tar.finish().unwrap();
}

fn flip_busybox_banner(archive: &Path) {
    let mut data = fs::read(archive).unwrap();
    let at = data
        .windows(8)
        .position(|w| w == b"BusyBox ")
        .expect("busybox's banner in the archive");
    data[at] ^= 1;
    fs::write(archive, data).unwrap();
}

#[test]
fn archives_run_in_every_form_convert_writes_and_a_modified_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_image(&src);
    for form in ["oci-archive", "docker-archive"] {
        let archive = tmp.path().join(format!("{form}.tar"));
        convert(&src, &format!("{form}:{}:app:cc", archive.display()));
        for reference in [
            format!("{form}:{}", archive.display()),
            archive.display().to_string(),
        ] {
            let out = coffer()
                .args(["run", &reference, "--no-runtime"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{reference}: {stderr}");
            assert!(stderr.contains("COFFER_COORDINATOR is not set"), "{stderr}");
        }
        // One byte of busybox changed inside the archive: its layer's digest no longer matches.
        flip_busybox_banner(&archive);
        let out = coffer()
            .args([
                "run",
                &format!("{form}:{}", archive.display()),
                "--no-runtime",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{form}: {stderr}");
        assert!(
            stderr.contains("corrupt or was modified"),
            "{form}: {stderr}"
        );
    }
    // An older `docker save` archive names no blob digests: the layer's uncompressed content
    // is checked against the config's diff_id instead.
    let legacy = tmp.path().join("legacy.tar");
    let c = tmp.path().join("c");
    fs::create_dir(&c).unwrap();
    legacy_docker_archive(&converted(&c), &legacy);
    let reference = format!("docker-archive:{}:app:cc", legacy.display());
    let out = coffer()
        .args(["run", &reference, "--no-runtime"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    flip_busybox_banner(&legacy);
    let out = coffer()
        .args(["run", &reference, "--no-runtime"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("corrupt or was modified") && stderr.contains("layer 1"),
        "{stderr}"
    );
}

#[test]
fn the_container_has_its_own_hostname_hosts_and_hostname_files() {
    let runc = runc_installed();
    if !runc || !is_root() {
        eprintln!("skipped: needs runc and root (CI has both)");
        return;
    }
    // No launcher here: `coffer run` is the runtime, and busybox reports what it sees.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_image_with(&src, &["/bin/busybox"]);
    let script = "busybox hostname; busybox cat /etc/hostname; \
                  busybox grep -c 'web-1$' /etc/hosts; echo \"HOSTNAME=$HOSTNAME\"; ulimit -n";
    let out = coffer()
        .arg("run")
        .arg(format!("oci:{}", src.display()))
        .args(["--hostname", "web-1", "--", "sh", "-c", script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        // Open files: containerd's default limit.
        "web-1\nweb-1\n1\nHOSTNAME=web-1\n1024\n",
        "{stderr}"
    );
    // This machine's hostname is untouched.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "web-1");

    // Without a runtime these cannot be honoured: refused, not dropped.
    let out = coffer()
        .arg("run")
        .arg(format!("oci:{}", src.display()))
        .args(["--no-runtime", "--hostname", "web-1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("need a container runtime"), "{stderr}");
}

/// An SGX image starts Gramine's loader from its ENTRYPOINT with neither a shell nor a C
/// library in the image: the host loader runs on the glibc Coffer bundled beside it. `echo`
/// stands in for Gramine's loader (this machine has no SGX), so the container prints exactly
/// the command line Gramine's loader would get.
#[test]
fn an_sgx_image_starts_gramines_loader_without_a_shell_or_libc_in_the_image() {
    let runc = runc_installed();
    if !runc || !is_static(&launcher()) || !is_root() {
        eprintln!("skipped: needs runc, root and the static launcher (scripts/test.sh builds it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source_image(&src);
    let gramine = gramine_dir(tmp.path());
    let convert_sgx = |libpal: &Path| {
        fs::copy(libpal, gramine.join("sgx/libpal.so")).unwrap();
        let out = tmp.path().join("sgx");
        let _ = fs::remove_dir_all(&out);
        let o = coffer()
            .arg("convert")
            .arg(format!("oci:{}", src.display()))
            .arg(format!("oci:{}", out.display()))
            .arg("--launcher")
            .arg(launcher())
            .args(["--tee", "sgx", "--workload", "web", "--sign-key"])
            .arg(sgx_vector_key())
            .arg("--gramine-dir")
            .arg(&gramine)
            .arg("--coordinator-root-ca")
            .arg(stand_in_root_ca())
            .output()
            .unwrap();
        (out, o)
    };
    // A libpal.so that is no ELF shared object cannot be measured: refused, nothing written.
    let (out, o) = convert_sgx(&gramine.join("libsysdb.so"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("libpal"), "{stderr}");
    assert!(!out.exists());
    let (out, o) = convert_sgx(&gramine.join("runtime/glibc/libc.so.6"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let run = coffer()
        .arg("run")
        .arg(&out)
        .args(["--coordinator", "127.0.0.1:9", "--", "pod", "args"])
        .env("LD_PRELOAD", "/nonexistent.so")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "/coffer/gramine/lib/sgx/libpal.so init /coffer/gramine/coffer\n",
        "{stderr}"
    );
    // The pod's arguments are named as ignored, not silently dropped.
    assert!(stderr.contains("ignoring 2 argument(s)"), "{stderr}");
}
