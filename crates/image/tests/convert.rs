//! Integration tests of `coffer_image::convert` on real images built here from real programs
//! (`/bin/busybox` from busybox-static), checked with the independent tools `skopeo` and
//! `umoci` (Debian packages; `bash scripts/install-deps.sh`).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_image::layout::{Compression, Format};
use coffer_image::protect::{self, Key};
use coffer_image::workload::{DifferenceKind, WorkloadFile};
use coffer_image::{convert, measure_rootfs, ConvertOptions, Digest, Error, ImageRef, Limits};

const SECRET: &[u8] = b"db_password=correct-horse-battery-staple\n";

/// One tar entry of a test layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Raw(Vec<u8>),
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, d, m) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, p, *d).unwrap();
            }
            E::Link(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Hard(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Raw(bytes) => {
                b.get_mut().extend_from_slice(bytes);
            }
        }
    }
    b.into_inner().unwrap()
}

fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

fn sha(b: &[u8]) -> String {
    Digest::of(b).oci()
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = Digest::of(bytes);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d.oci()
}

/// Writes an OCI layout with one image (tag `tag`) made of `layers`.
fn write_oci(dir: &Path, tag: &str, layers: &[(Vec<u8>, Compression)]) {
    fs::create_dir_all(dir).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, c) in layers {
        let blob = compress(tar, *c);
        let mt = match c {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        let d = put_blob(dir, &blob);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        diff_ids.push(sha(tar));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Entrypoint": ["/bin/busybox", "sh", "-c"],
            "Cmd": ["echo hello from $GREETING", "ignored-by-gsc"],
            "Env": ["PATH=/bin", "GREETING=coffer"],
            "WorkingDir": "/app",
            "User": "1000:1000",
            "Labels": {"org.example.z": "1", "org.example.a": "2"}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}]
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = put_blob(dir, &cb);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
        "layers": descs
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &mb);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// The busybox test image: three layers (plain, gzip, zstd) with a symlink, a hard link, a
/// whiteout, an opaque directory and a secret file.
fn busybox_image(dir: &Path) {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (run scripts/install-deps.sh)");
    let l1 = tar_of(&[
        E::Dir("bin/"),
        E::File("bin/busybox", &busybox, 0o755),
        E::Link("bin/sh", "busybox"),
        E::Dir("etc/"),
        E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
        E::File("etc/app.conf", SECRET, 0o640),
        E::Hard("etc/passwd.hard", "etc/passwd"),
        E::File("etc/hosts", b"127.0.0.1 build-host\n", 0o644),
        E::Dir("old/"),
        E::File("old/gone", b"to be whited out", 0o644),
        E::Dir("cache/"),
        E::File("cache/a", b"old cache", 0o644),
        E::Dir("proc/"),
    ]);
    let l2 = tar_of(&[
        E::File("old/.wh.gone", b"", 0o644),
        E::File("cache/.wh..wh..opq", b"", 0o644),
        E::File("cache/b", b"new cache", 0o644),
        E::Dir("app/"),
        E::File("app/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
    ]);
    let l3 = tar_of(&[
        E::Dir("app/"),
        E::File("app/data.txt", b"zstd layer data", 0o600),
    ]);
    write_oci(
        dir,
        "v1",
        &[
            (l1, Compression::None),
            (l2, Compression::Gzip),
            (l3, Compression::Zstd),
        ],
    );
}

fn opts(src: ImageRef, dst: ImageRef, launcher: &Path) -> ConvertOptions {
    ConvertOptions {
        source: src,
        target: dst,
        launcher: launcher.to_path_buf(),
        trusted: vec![],
        allowed: vec![],
        runtime_mounts: vec![],
        encrypt: vec![],
        key: None,
        isv_prod_id: 7,
        isv_svn: 3,
        source_date_epoch: None,
        limits: Limits::default(),
        sgx: None,
    }
}

fn oci(dir: &Path, tag: &str) -> ImageRef {
    ImageRef {
        format: Format::OciDir,
        path: dir.to_path_buf(),
        tag: Some(tag.into()),
    }
}

/// A stand-in for the launcher binary: a real static program (the launcher's own integration
/// test runs the real one).
fn launcher(dir: &Path) -> PathBuf {
    let p = dir.join("launcher");
    fs::copy("/bin/busybox", &p).unwrap();
    p
}

fn noop(_: coffer_image::Progress<'_>) {}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("tool runs (scripts/install-deps.sh installs skopeo and umoci)");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn decompress(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match Compression::sniff(blob) {
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Zstd => out = zstd::decode_all(blob).unwrap(),
        Compression::None => out = blob.to_vec(),
    }
    out
}

/// Checks every descriptor in index → manifest → config/layers against the blob's bytes.
fn check_layout_digests(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    let blob = |d: &str| {
        fs::read(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = &index["manifests"][0];
    let mb = blob(md["digest"].as_str().unwrap());
    assert_eq!(sha(&mb), md["digest"].as_str().unwrap());
    assert_eq!(mb.len() as u64, md["size"].as_u64().unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&mb).unwrap();
    let cd = &manifest["config"];
    let cb = blob(cd["digest"].as_str().unwrap());
    assert_eq!(sha(&cb), cd["digest"].as_str().unwrap());
    assert_eq!(cb.len() as u64, cd["size"].as_u64().unwrap());
    let config: serde_json::Value = serde_json::from_slice(&cb).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (l, diff) in layers.iter().zip(diff_ids) {
        let b = blob(l["digest"].as_str().unwrap());
        assert_eq!(sha(&b), l["digest"].as_str().unwrap());
        assert_eq!(b.len() as u64, l["size"].as_u64().unwrap());
        assert_eq!(sha(&decompress(&b)), diff.as_str().unwrap());
    }
    (manifest, config)
}

fn no_leftovers(parent: &Path) {
    let left: Vec<_> = fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("coffer-tmp"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

#[test]
fn busybox_image_converts_and_skopeo_umoci_accept_it() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    busybox_image(&src);
    let out = t.path().join("out");
    let key = Key::from_bytes([42u8; 32]);
    let mut o = opts(oci(&src, "v1"), oci(&out, "cc"), &launcher(t.path()));
    o.encrypt = vec!["/etc/app.conf".into()];
    o.key = Some(key.clone());
    o.allowed = vec!["/cache".into()];
    let report = convert(&o, &noop).unwrap();
    no_leftovers(t.path());

    // Digests in index and manifests are right; the config is as specified.
    let (manifest, config) = check_layout_digests(&out);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 4);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/coffer/launcher"])
    );
    assert!(config["config"].get("Cmd").is_none());
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/bin", "GREETING=coffer"])
    );
    assert_eq!(config["config"]["User"], "1000:1000");
    assert_eq!(config["config"]["Labels"]["org.example.a"], "2");
    assert_eq!(
        config["config"]["Labels"]["dev.coffer.image-measurement"],
        report.image_measurement.hex()
    );
    assert_eq!(report.rewritten_layers, 1);
    // Rewritten layers (here the first, which held the encrypted file, and the zstd one) are
    // written uncompressed; the gzip layer is kept as it was.
    let media: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        media[..3],
        [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar",
        ]
    );

    // The secret's plaintext is in no layer of the output.
    for l in manifest["layers"].as_array().unwrap() {
        let b = fs::read(
            out.join("blobs/sha256")
                .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:")),
        )
        .unwrap();
        let plain = decompress(&b);
        assert!(
            !plain.windows(SECRET.len()).any(|w| w == SECRET),
            "plaintext left in {}",
            l["digest"]
        );
    }

    // skopeo reads it and agrees on the digest.
    let inspect = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:cc", out.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"].as_str().unwrap(), report.manifest_digest.oci());
    assert_eq!(
        v["Labels"]["dev.coffer.image-measurement"],
        report.image_measurement.hex()
    );

    // umoci unpacks it; the rootfs measures to the image measurement.
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:cc", out.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let wf =
        WorkloadFile::from_json(&fs::read(rootfs.join("coffer/workload.json")).unwrap()).unwrap();
    assert_eq!(wf.image_measurement, report.image_measurement);
    assert_eq!(wf.entrypoint, ["/bin/busybox", "sh", "-c"]);
    assert_eq!(wf.cmd, ["echo hello from $GREETING", "ignored-by-gsc"]);
    assert_eq!(
        wf.argv(None),
        [
            "/bin/busybox",
            "sh",
            "-c",
            "echo hello from $GREETING",
            "ignored-by-gsc"
        ]
    );
    assert_eq!(wf.working_dir, "/app");
    assert_eq!(wf.user, "1000:1000");
    assert_eq!((wf.isv_prod_id, wf.isv_svn), (7, 3));
    let paths: Vec<&str> = wf.trusted_files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/app/data.txt",
            "/app/run.sh",
            "/bin/busybox",
            "/coffer/launcher",
            "/etc/passwd",
            "/etc/passwd.hard",
        ],
        "whited-out, opaque-hidden, allowed and runtime-mounted (/etc/hosts) files are not trusted"
    );
    let bb = &wf.trusted_files[2];
    assert_eq!(bb.sha256, Digest::of(&fs::read("/bin/busybox").unwrap()));
    assert_eq!(bb.mode, 0o755);
    assert_eq!(wf.symlinks.len(), 1);
    assert_eq!(
        (wf.symlinks[0].path.as_str(), wf.symlinks[0].target.as_str()),
        ("/bin/sh", "busybox")
    );
    assert_eq!(wf.encrypted_files.len(), 1);
    assert!(!rootfs.join("old/gone").exists());
    assert!(!rootfs.join("cache/a").exists());

    let m = measure_rootfs(&rootfs, &wf).unwrap();
    assert_eq!(m.differences, vec![]);
    assert_eq!(m.measurement, report.image_measurement);

    // The encrypted file decrypts, with the key, to the original; it is bound to its path.
    let ct = fs::read(rootfs.join("etc/app.conf")).unwrap();
    let mut plain = Vec::new();
    protect::decrypt(&key, "/etc/app.conf", &ct[..], &mut plain).unwrap();
    assert_eq!(plain, SECRET);
    assert!(matches!(
        protect::decrypt(&key, "/etc/other", &ct[..], &mut Vec::new()),
        Err(Error::Decrypt { .. })
    ));

    // One tampered byte in busybox is detected and named.
    let bb_path = rootfs.join("bin/busybox");
    let mut bytes = fs::read(&bb_path).unwrap();
    bytes[1000] ^= 0x01;
    fs::write(&bb_path, &bytes).unwrap();
    let m = measure_rootfs(&rootfs, &wf).unwrap();
    assert_ne!(m.measurement, report.image_measurement);
    assert_eq!(m.differences.len(), 1);
    assert_eq!(m.differences[0].path, "/bin/busybox");
    assert!(matches!(
        m.differences[0].what,
        DifferenceKind::Content { .. }
    ));
}

#[test]
fn same_input_options_and_key_give_identical_bytes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    busybox_image(&src);
    let l = launcher(t.path());
    let mk = |name: &str| {
        let dst = ImageRef {
            format: Format::OciArchive,
            path: t.path().join(name),
            tag: Some("r".into()),
        };
        let mut o = opts(oci(&src, "v1"), dst, &l);
        o.encrypt = vec!["/etc/*.conf".into(), "/app/data.txt".into()];
        o.key = Some(Key::from_bytes([9u8; 32]));
        o.source_date_epoch = Some(1_600_000_000);
        convert(&o, &noop).unwrap()
    };
    let a = mk("a.tar");
    let b = mk("b.tar");
    assert_eq!(a.manifest_digest, b.manifest_digest);
    let (ba, bb) = (
        fs::read(t.path().join("a.tar")).unwrap(),
        fs::read(t.path().join("b.tar")).unwrap(),
    );
    assert!(ba == bb, "oci-archive outputs differ");
    // A different key gives a different image (the encrypted bytes change) …
    let dst = ImageRef {
        format: Format::OciArchive,
        path: t.path().join("c.tar"),
        tag: Some("r".into()),
    };
    let mut o = opts(oci(&src, "v1"), dst, &l);
    o.encrypt = vec!["/etc/*.conf".into(), "/app/data.txt".into()];
    o.key = Some(Key::from_bytes([10u8; 32]));
    o.source_date_epoch = Some(1_600_000_000);
    let c = convert(&o, &noop).unwrap();
    assert_ne!(c.image_measurement, a.image_measurement);
    // … and skopeo reads the archive.
    run(Command::new("skopeo").arg("inspect").arg(format!(
        "oci-archive:{}:r",
        t.path().join("a.tar").display()
    )));
}

/// Builds a docker-save archive: manifest.json, `<hex>.json` config, `<id>/layer.tar`.
fn docker_archive(path: &Path, layer: &[u8]) {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "echo", "hi"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let chex = Digest::of(&cb).hex();
    let manifest = serde_json::json!([{"Config": format!("{chex}.json"), "RepoTags": ["example/bb:latest"], "Layers": ["abc/layer.tar"]}]);
    let mb = serde_json::to_vec(&manifest).unwrap();
    let tar = tar_of(&[
        E::File(&format!("{chex}.json"), &cb, 0o644),
        E::Dir("abc/"),
        E::File("abc/layer.tar", layer, 0o644),
        E::File("manifest.json", &mb, 0o644),
    ]);
    fs::write(path, tar).unwrap();
}

#[test]
fn docker_archive_in_and_out() {
    let t = tempfile::tempdir().unwrap();
    let busybox = fs::read("/bin/busybox").unwrap();
    let layer = tar_of(&[E::Dir("bin/"), E::File("bin/busybox", &busybox, 0o755)]);
    let input = t.path().join("in.tar");
    docker_archive(&input, &layer);
    let src = ImageRef {
        format: Format::DockerArchive,
        path: input,
        tag: Some("latest".into()),
    };
    let dst = ImageRef {
        format: Format::DockerArchive,
        path: t.path().join("out.tar"),
        tag: Some("example/bb-cc:1".into()),
    };
    let r = convert(&opts(src, dst, &launcher(t.path())), &noop).unwrap();
    assert_eq!(r.workload.cmd, ["/bin/busybox", "echo", "hi"]);
    assert!(r.workload.entrypoint.is_empty());
    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!(
        "docker-archive:{}",
        t.path().join("out.tar").display()
    )));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        v["Labels"]["dev.coffer.image-measurement"],
        r.image_measurement.hex()
    );
    no_leftovers(t.path());
}

/// Converts a one-layer image whose layer is `tar` and returns the error.
fn convert_err(tar: Vec<u8>, limits: Limits) -> Error {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_oci(&src, "x", &[(tar, Compression::Gzip)]);
    let mut o = opts(
        oci(&src, "x"),
        oci(&t.path().join("out"), "x"),
        &launcher(t.path()),
    );
    o.limits = limits;
    let e = convert(&o, &noop).unwrap_err();
    assert!(!t.path().join("out").exists(), "partial output left behind");
    no_leftovers(t.path());
    e
}

fn raw_header(name: &str, kind: u8, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    let bytes = h.as_mut_bytes();
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    bytes[156] = kind;
    let mut h = tar::Header::from_byte_slice(bytes).clone();
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn dotdot_path_is_refused() {
    let mut raw = raw_header("../etc/evil", b'0', 1);
    raw.extend_from_slice(b"x");
    raw.extend_from_slice(&[0u8; 511]);
    let e = convert_err(tar_of(&[E::Raw(raw)]), Limits::default());
    assert!(
        matches!(
            e,
            Error::UnsafePath {
                reason: "contains a `..` component",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn escaping_symlink_is_refused() {
    let e = convert_err(
        tar_of(&[E::Dir("a/"), E::Link("a/l", "../../../etc/shadow")]),
        Limits::default(),
    );
    assert!(
        matches!(e, Error::UnsafePath { reason, .. } if reason.contains("climbs out")),
        "{e}"
    );
    let e = convert_err(tar_of(&[E::Link("l", "/../../etc")]), Limits::default());
    assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
}

/// Converts a one-layer image and returns the report and the output's layer tars.
fn convert_one(t: &Path, name: &str, tar: Vec<u8>) -> (coffer_image::ConvertReport, Vec<Vec<u8>>) {
    let src = t.join(format!("{name}-src"));
    write_oci(&src, "x", &[(tar, Compression::Gzip)]);
    let out = t.join(format!("{name}-out"));
    let report = convert(&opts(oci(&src, "x"), oci(&out, "x"), &launcher(t)), &noop).unwrap();
    let (manifest, _) = check_layout_digests(&out);
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            decompress(&fs::read(out.join("blobs/sha256").join(d)).unwrap())
        })
        .collect();
    (report, layers)
}

fn entry_names(tar: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn device_nodes_and_fifos_are_dropped_and_not_measured() {
    // What every root filesystem tarball (mmdebstrap, `docker import`) holds under /dev.
    let t = tempfile::tempdir().unwrap();
    let app = E::File("app/run", b"#!/bin/sh\n", 0o755);
    let with = tar_of(&[
        E::Dir("dev/"),
        E::Raw(raw_header("dev/null", b'3', 0)),
        E::Raw(raw_header("dev/sda", b'4', 0)),
        E::Raw(raw_header("dev/initctl", b'6', 0)),
        E::Dir("app/"),
        app,
    ]);
    let (report, layers) = convert_one(t.path(), "with", with);
    assert_eq!(
        report.dropped_special_files,
        ["/dev/null", "/dev/sda", "/dev/initctl"]
    );
    assert_eq!(report.rewritten_layers, 1);
    let names = entry_names(&layers[0]);
    assert!(names.iter().any(|n| n.ends_with("app/run")), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("null") || n.contains("sda") || n.contains("initctl")),
        "{names:?}"
    );
    // The measurement is that of the same image without them: nothing the runtime unpacks
    // differs from what the launcher checks.
    let without = tar_of(&[
        E::Dir("dev/"),
        E::Dir("app/"),
        E::File("app/run", b"#!/bin/sh\n", 0o755),
    ]);
    let (plain, _) = convert_one(t.path(), "without", without);
    assert!(plain.dropped_special_files.is_empty());
    assert_eq!(report.image_measurement, plain.image_measurement);
}

#[test]
fn huge_extension_header_is_refused() {
    let raw = raw_header("././@LongLink", b'L', 1 << 30);
    let e = convert_err(tar_of(&[E::Raw(raw)]), Limits::default());
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
}

#[test]
fn decompression_bomb_and_entry_count_are_bounded() {
    let zeros = vec![0u8; 4 << 20];
    let tar = tar_of(&[E::File("big", &zeros, 0o644)]);
    let e = convert_err(
        tar,
        Limits {
            max_unpacked_size: 1 << 20,
            ..Limits::default()
        },
    );
    assert!(
        matches!(e, Error::LimitExceeded { limit, .. } if limit == 1 << 20),
        "{e}"
    );
    let tar = tar_of(&[
        E::File("a", b"1", 0o644),
        E::File("b", b"2", 0o644),
        E::File("c", b"3", 0o644),
    ]);
    let e = convert_err(
        tar,
        Limits {
            max_entries: 2,
            ..Limits::default()
        },
    );
    assert!(matches!(e, Error::LimitExceeded { limit: 2, .. }), "{e}");
}

#[test]
fn bad_blob_digest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let tar = tar_of(&[E::File("a", b"hello", 0o644)]);
    write_oci(&src, "x", &[(tar.clone(), Compression::None)]);
    // Flip one byte of the layer blob (same size).
    let blob = src.join("blobs/sha256").join(Digest::of(&tar).hex());
    let mut b = fs::read(&blob).unwrap();
    let i = b.iter().position(|&c| c == b'h').unwrap();
    b[i] = b'j';
    fs::write(&blob, &b).unwrap();
    let out = t.path().join("out");
    let e = convert(
        &opts(oci(&src, "x"), oci(&out, "x"), &launcher(t.path())),
        &noop,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::DigestMismatch { ref what, .. } if what.starts_with("layer 1")),
        "{e}"
    );
    assert!(!out.exists());
    no_leftovers(t.path());
    // A wrong size in the descriptor is caught before reading.
    let mut b2 = b.clone();
    b2.push(0);
    fs::write(&blob, &b2).unwrap();
    let e = convert(
        &opts(oci(&src, "x"), oci(&out, "x"), &launcher(t.path())),
        &noop,
    )
    .unwrap_err();
    assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
}

#[test]
fn wrong_diff_id_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_oci(
        &src,
        "x",
        &[(tar_of(&[E::File("a", b"hello", 0o644)]), Compression::Gzip)],
    );
    // Rewrite the config with a wrong diff_id (and fix the manifest/index digests).
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join("blobs/sha256").join(&md)).unwrap()).unwrap();
    let cd = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join("blobs/sha256").join(&cd)).unwrap()).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::json!(Digest::of(b"other").oci());
    let cb = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = serde_json::json!(put_blob(&src, &cb));
    manifest["config"]["size"] = serde_json::json!(cb.len());
    let mb = serde_json::to_vec(&manifest).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = serde_json::json!(put_blob(&src, &mb));
    index["manifests"][0]["size"] = serde_json::json!(mb.len());
    fs::write(src.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let e = convert(
        &opts(
            oci(&src, "x"),
            oci(&t.path().join("out"), "x"),
            &launcher(t.path()),
        ),
        &noop,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::DigestMismatch { ref what, .. } if what.contains("diff_ids")),
        "{e}"
    );
    no_leftovers(t.path());
}

#[test]
fn truncated_archive_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    busybox_image(&src);
    let archive = t.path().join("img.tar");
    let dst = ImageRef {
        format: Format::OciArchive,
        path: archive.clone(),
        tag: Some("v1".into()),
    };
    convert(&opts(oci(&src, "v1"), dst, &launcher(t.path())), &noop).unwrap();
    let bytes = fs::read(&archive).unwrap();
    let cut = t.path().join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let src = ImageRef {
        format: Format::OciArchive,
        path: cut,
        tag: Some("v1".into()),
    };
    let e = convert(
        &opts(src, oci(&t.path().join("out"), "x"), &launcher(t.path())),
        &noop,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Malformed { ref reason, .. } if reason.contains("truncated")),
        "{e}"
    );
    assert!(!t.path().join("out").exists());
    no_leftovers(t.path());
}

#[test]
fn missing_launcher_and_existing_output_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_oci(
        &src,
        "x",
        &[(tar_of(&[E::File("a", b"1", 0o644)]), Compression::None)],
    );
    let e = convert(
        &opts(
            oci(&src, "x"),
            oci(&t.path().join("o"), "x"),
            &t.path().join("nope"),
        ),
        &noop,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("bash scripts/build-launcher.sh"),
        "{e}"
    );
    let e = convert(
        &opts(oci(&src, "x"), oci(&src, "x"), &launcher(t.path())),
        &noop,
    )
    .unwrap_err();
    assert!(matches!(e, Error::OutputExists(_)), "{e}");
    let mut o = opts(
        oci(&src, "x"),
        oci(&t.path().join("o"), "x"),
        &launcher(t.path()),
    );
    o.encrypt = vec!["/a".into()];
    assert!(matches!(convert(&o, &noop).unwrap_err(), Error::BadKey(_)));
}

#[test]
fn hard_link_to_an_encrypted_file_must_be_encrypted_too() {
    let tar = tar_of(&[E::File("s", b"secret", 0o600), E::Hard("s2", "s")]);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_oci(&src, "x", &[(tar, Compression::None)]);
    let mut o = opts(
        oci(&src, "x"),
        oci(&t.path().join("o"), "x"),
        &launcher(t.path()),
    );
    o.encrypt = vec!["/s".into()];
    o.key = Some(Key::from_bytes([1; 32]));
    let e = convert(&o, &noop).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(ref m) if m.contains("hard link")),
        "{e}"
    );
    no_leftovers(t.path());
}
