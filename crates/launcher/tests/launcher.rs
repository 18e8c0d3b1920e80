//! Integration tests of the real `coffer-launcher` binary against an activation server over TLS
//! on 127.0.0.1, starting the real, unmodified static busybox as the app.

mod support;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use support::*;

fn run(mut c: Command) -> (i32, String, String) {
    let out = c.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sim_launcher(image: &Image, server: &Server, sim: &Sim, ca: &Path) -> Command {
    let mut c = launcher(image, server, ca);
    c.env("COFFER_EVIDENCE", "sim")
        .env("COFFER_SIM_DIR", sim.dir.path());
    c
}

/// The app prints what it received: a file written by the launcher, an env var, its argv.
const SHOW: &[&str] = &[
    "/bin/busybox",
    "sh",
    "-c",
    "B=bin/busybox; $B cat coffer/secret.txt; echo; echo env=$DB_PASSWORD image=$FROM_IMAGE; echo argv=\"$@\"; \
     $B head -1 coffer/tls/cert.pem; $B ls -l coffer/secret.txt coffer/tls/key.pem",
    "show",
];

#[test]
fn unmodified_app_receives_file_env_and_argv_secrets() {
    let sim = Sim::new();
    let image = Image::new(SHOW, &["from-cmd"], &[]);
    let answer = Answer {
        files: vec![("/coffer/secret.txt".into(), b"s3cr3t-file".to_vec(), 0o600)],
        env: [("DB_PASSWORD".to_string(), "s3cr3t-env".to_string())].into(),
        argv: Some(
            SHOW.iter()
                .map(|s| s.to_string())
                .chain(["s3cr3t-arg".to_string()])
                .collect(),
        ),
        ..Answer::default()
    };
    let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let (code, out, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("s3cr3t-file"), "{out}");
    assert!(out.contains("env=s3cr3t-env image=image"), "{out}");
    assert!(out.contains("argv=s3cr3t-arg"), "{out}");
    assert!(out.contains("-----BEGIN CERTIFICATE-----"), "{out}");
    for f in ["coffer/secret.txt", "coffer/tls/key.pem"] {
        let line = out.lines().find(|l| l.ends_with(f)).unwrap_or_default();
        assert!(line.starts_with("-rw-------"), "{f} must be 0600: {line:?}");
    }
    // Simulation is said out loud, secrets are not.
    assert!(err.contains("SIMULATED"), "{err}");
    for s in ["s3cr3t-file", "s3cr3t-env", "s3cr3t-arg"] {
        assert!(
            !err.contains(s),
            "secret {s} leaked to the launcher's log: {err}"
        );
    }
    let req = server.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(req.workload, "app");
}

#[test]
fn without_manifest_argv_runs_entrypoint_plus_cmd_or_runtime_args() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "echo", "ep"], &["cmd1", "cmd2"], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let (code, out, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!((code, out.as_str()), (0, "ep cmd1 cmd2\n"), "{err}");
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.args(["--", "--check", "x"]);
    let (code, out, err) = run(c);
    assert_eq!((code, out.as_str()), (0, "ep --check x\n"), "{err}");
}

#[test]
fn exit_status_passes_through() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "sh", "-c", "exit 7"], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let (code, _, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!(code, 7, "{err}");
}

#[test]
fn signals_reach_the_app_which_keeps_the_launchers_pid() {
    let sim = Sim::new();
    let script =
        "echo $$ > pid.txt; trap 'echo got-term; exit 42' TERM; while :; do sleep 0.05; done";
    let image = Image::new(&["/bin/busybox", "sh", "-c", script], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let child = sim_launcher(&image, &server, &sim, &ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = image.root().join("pid.txt");
    let mut app_pid = String::new();
    for _ in 0..2000 {
        app_pid = fs::read_to_string(&pid_file).unwrap_or_default();
        if app_pid.ends_with('\n') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        app_pid.trim(),
        child.id().to_string(),
        "the app must be the launcher's process (exec)"
    );
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("got-term"));
}

#[test]
fn an_untrapped_signal_kills_the_app_like_any_process() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "sh", "-c", "kill -KILL $$"], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let out = sim_launcher(&image, &server, &sim, &ca).output().unwrap();
    assert_eq!(out.status.signal(), Some(9));
}

#[test]
fn refused_activation_stops_the_start_with_the_reason() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "touch", "ran"], &[], &[]);
    let answer = Answer {
        refuse: Some("workload app: activation limit of policy X".into()),
        ..Answer::default()
    };
    let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let (code, _, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("activation refused by the Coordinator (policy_mismatch): workload app: activation limit of policy X"), "{err}");
    assert!(!image.root().join("ran").exists());
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "a refusal is not retried"
    );
}

#[test]
fn tampered_trusted_file_changes_the_simulated_measurement_and_is_refused() {
    let sim = Sim::new();
    let image = Image::new(
        &["/bin/busybox", "cat", "etc/app.conf"],
        &[],
        &[("/etc/app.conf", b"mode=safe\n")],
    );
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    fs::write(image.root().join("etc/app.conf"), b"mode=evil\n").unwrap();
    let (code, _, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!(code, 77, "{err}");
    assert!(
        err.contains("measurement is not one of the workload's packages"),
        "{err}"
    );
}

#[test]
fn tampered_trusted_file_is_caught_before_activation_in_a_td() {
    let sim = Sim::new();
    let image = Image::new(
        &["/bin/busybox", "true"],
        &[],
        &[("/etc/app.conf", b"mode=safe\n")],
    );
    let tsm = fake_tsm(&sim.platform, [0x33; 48], false);
    let server = Server::start(&sim.platform, Expect::Tdx([0x33; 48]), Answer::default());
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    fs::write(image.root().join("etc/app.conf"), b"mode=evil\n").unwrap();
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_TSM_ROOT", tsm.path());
    let (code, _, err) = run(c);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("image integrity") && err.contains("/etc/app.conf"),
        "{err}"
    );
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "a modified image must not ask for secrets"
    );
}

/// Inside Gramine the launcher leaves file integrity to Gramine (which checks every trusted
/// file against the measured manifest when it is opened) and reports the workload file's image
/// measurement; it gives the app Gramine's glibc first; and it writes secrets only into the
/// enclave's tmpfs directories.
#[test]
fn inside_gramine_secrets_go_only_to_enclave_tmpfs_and_the_app_gets_gramines_glibc() {
    let sim = Sim::new();
    let image = Image::new(
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo $LD_LIBRARY_PATH; cat run/secrets/token",
        ],
        &[],
        &[],
    );
    let gramine = fake_gramine(&sim.platform, [0x22; 32]);
    let answer = |path: &str| Answer {
        files: vec![(path.into(), b"t0ken".to_vec(), 0o600)],
        ..Answer::default()
    };
    let server = Server::start(
        &sim.platform,
        Expect::Sgx([0x22; 32]),
        answer("/run/secrets/token"),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_ATTESTATION_ROOT", gramine.path())
        .env("COFFER_EVIDENCE", "gramine")
        .env("COFFER_SECRET_DIRS", "/coffer/tls:/run/secrets");
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("{}\nt0ken", coffer_image::gramine::library_path(None))
    );
    let req = server.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(
        req.image_measurement.as_deref(),
        Some(hex::encode(image.measurement()).as_str())
    );

    // A file outside the tmpfs directories would reach the host's disk: nothing is written.
    let server = Server::start(
        &sim.platform,
        Expect::Sgx([0x22; 32]),
        answer("/etc/app/token"),
    );
    let ca = write_pem(sim.dir.path(), "root2.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_ATTESTATION_ROOT", gramine.path())
        .env("COFFER_EVIDENCE", "gramine")
        .env("COFFER_SECRET_DIRS", "/coffer/tls:/run/secrets");
    let (code, _, err) = run(c);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("/etc/app/token") && err.contains("outside the enclave's tmpfs"),
        "{err}"
    );
    assert!(!image.root().join("etc/app/token").exists());
}

#[test]
fn gramine_attestation_interface_is_used_when_present() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "echo", "in-enclave"], &[], &[]);
    let gramine = fake_gramine(&sim.platform, [0x22; 32]);
    let server = Server::start(&sim.platform, Expect::Sgx([0x22; 32]), Answer::default());
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_ATTESTATION_ROOT", gramine.path()); // COFFER_EVIDENCE=auto
    let (code, out, err) = run(c);
    assert_eq!((code, out.as_str()), (0, "in-enclave\n"), "{err}");
    assert!(
        err.contains("gramine evidence") && !err.contains("SIMULATED"),
        "{err}"
    );
    // The report data written to the device is the binding of the CSR key.
    let written = fs::read(gramine.path().join("user_report_data")).unwrap();
    let req = server.last_request.lock().unwrap().clone().unwrap();
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&csr.public_key);
    let image: [u8; 32] = hex::decode(req.image_measurement.as_deref().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        written,
        coffer_api::workload_report_data_for_image(&spki, &image).to_vec()
    );
}

#[test]
fn gramine_without_dcap_is_a_clear_error() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &[], &[]);
    let gramine = fake_gramine(&sim.platform, [0x22; 32]);
    fs::write(gramine.path().join("attestation_type"), "none").unwrap();
    let server = Server::start(&sim.platform, Expect::Sgx([0x22; 32]), Answer::default());
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_ATTESTATION_ROOT", gramine.path())
        .env("COFFER_EVIDENCE", "gramine");
    let (code, _, err) = run(c);
    assert_eq!(code, 71, "{err}");
    assert!(err.contains("sgx.remote_attestation"), "{err}");
}

#[test]
fn configfs_tsm_interface_is_used_in_a_tdx_guest() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "echo", "in-td"], &[], &[]);
    let tsm = fake_tsm(&sim.platform, [0x33; 48], false);
    let server = Server::start(&sim.platform, Expect::Tdx([0x33; 48]), Answer::default());
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_TSM_ROOT", tsm.path()); // auto: no Gramine, so configfs-tsm
    let (code, out, err) = run(c);
    assert_eq!((code, out.as_str()), (0, "in-td\n"), "{err}");
    assert!(err.contains("tsm evidence"), "{err}");
}

/// In an SEV-SNP guest the launcher sends the report with the VCEK, ASK and ARK from the
/// host's certificate table (the auxblob); a table that lacks one is refused before any
/// request, naming what the host must provide.
#[test]
fn configfs_tsm_in_an_snp_guest_sends_the_report_with_the_hosts_certificates() {
    const VCEK: u128 = 0x63da758d_e664_4564_adc5_f4b93be8accd;
    const ASK: u128 = 0x4ab7b379_bbac_4fe4_a02f_05aef327c782;
    const ARK: u128 = 0xc0b406a4_a803_4952_9743_3fb6014cd0ae;
    let sim = Sim::new();
    let snp = sim.platform.snp();
    let image = Image::new(&["/bin/busybox", "echo", "in-snp-guest"], &[], &[]);
    let table = snp_table(&[
        (ARK, snp.ark_der()),
        (VCEK, snp.vcek_der()),
        (ASK, snp.ask_der()),
    ]);
    let tsm = fake_snp_tsm(&snp, [0x44; 48], table);
    let server = Server::start(&sim.platform, Expect::Snp([0x44; 48]), Answer::default());
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_TSM_ROOT", tsm.path());
    let (code, out, err) = run(c);
    assert_eq!((code, out.as_str()), (0, "in-snp-guest\n"), "{err}");
    let req = server.last_request.lock().unwrap().clone().unwrap();
    assert_eq!(req.evidence.format, coffer_api::EvidenceFormat::SnpReport);
    assert_eq!(req.evidence.certificates.len(), 3);

    let incomplete = snp_table(&[(VCEK, snp.vcek_der()), (ARK, snp.ark_der())]);
    let tsm = fake_snp_tsm(&snp, [0x44; 48], incomplete);
    let server = Server::start(&sim.platform, Expect::Snp([0x44; 48]), Answer::default());
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_TSM_ROOT", tsm.path());
    let (code, _, err) = run(c);
    assert_ne!(code, 0);
    assert!(err.contains("lacks the ASK"), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn configfs_tsm_generation_race_is_refused() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &[], &[]);
    let tsm = fake_tsm(&sim.platform, [0x33; 48], true);
    let server = Server::start(&sim.platform, Expect::Tdx([0x33; 48]), Answer::default());
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_TSM_ROOT", tsm.path())
        .env("COFFER_EVIDENCE", "tsm");
    let (code, _, err) = run(c);
    assert_eq!(code, 71, "{err}");
    assert!(err.contains("generation went from 0 to 2"), "{err}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn no_tee_is_an_error_never_a_fallback_to_simulation() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = launcher(&image, &server, &ca);
    c.env("COFFER_SIM_DIR", sim.dir.path()); // present, but not asked for
    let (code, _, err) = run(c);
    assert_eq!(code, 71, "{err}");
    assert!(
        err.contains("no TEE found") && err.contains("COFFER_EVIDENCE=sim"),
        "{err}"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn path_traversal_in_manifest_files_is_refused() {
    let sim = Sim::new();
    for bad in [
        "/../../escape.txt",
        "/coffer/../x",
        "relative.txt",
        "/bin/busybox",
        "/proc/self/x",
    ] {
        let image = Image::new(&["/bin/busybox", "touch", "ran"], &[], &[]);
        let answer = Answer {
            files: vec![(bad.into(), b"x".to_vec(), 0o600)],
            ..Answer::default()
        };
        let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
        let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
        let (code, _, err) = run(sim_launcher(&image, &server, &sim, &ca));
        assert_eq!(code, 65, "{bad}: {err}");
        assert!(err.contains("parameters:"), "{bad}: {err}");
        assert!(!image.root().join("ran").exists());
        assert!(
            !image.root().join("coffer/tls/key.pem").exists(),
            "{bad}: nothing is written"
        );
        assert!(!image.root().parent().unwrap().join("escape.txt").exists());
    }
}

#[test]
fn symlink_in_the_image_cannot_redirect_a_file_outside_the_root() {
    let sim = Sim::new();
    let outside = tempfile::tempdir().unwrap();
    let image = Image::new(&["/bin/busybox", "cat", "/etc/link/secret"], &[], &[]);
    fs::create_dir_all(image.root().join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.path(), image.root().join("etc/link")).unwrap();
    let answer = Answer {
        files: vec![("/etc/link/secret".into(), b"inside".to_vec(), 0o600)],
        ..Answer::default()
    };
    let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let (code, _, err) = run(sim_launcher(&image, &server, &sim, &ca));
    // The link resolves inside the image root (as it would in the container), never on the host.
    assert!(!outside.path().join("secret").exists(), "{err}");
    let inside = image
        .root()
        .join(outside.path().strip_prefix("/").unwrap())
        .join("secret");
    assert_eq!(fs::read(inside).unwrap(), b"inside", "{code} {err}");
}

#[test]
fn wrong_coordinator_root_is_refused_without_retrying() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "other.pem", &unrelated_root_pem());
    let (code, _, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!(code, 76, "{err}");
    assert!(
        err.contains("not trusted") && err.contains("server certificate"),
        "{err}"
    );
}

/// The host (the pod spec) sets variables that would steer the app; only those the manifest
/// names reach it.
#[test]
fn host_environment_reaches_the_app_only_where_the_manifest_allows() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "env"], &[], &[]);
    let answer = Answer {
        env: [("FROM_MANIFEST".to_string(), "yes".to_string())].into(),
        host_env: vec!["TZ".into()],
        ..Answer::default()
    };
    let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.env("NODE_OPTIONS", "--require /tmp/evil.js")
        .env("PYTHONPATH", "/tmp/evil")
        .env("LD_PRELOAD", "/tmp/evil.so")
        .env("TZ", "Europe/Berlin");
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    for line in [
        "FROM_IMAGE=image",
        "PATH=/bin",
        "FROM_MANIFEST=yes",
        "TZ=Europe/Berlin",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing: {out}");
    }
    for name in ["NODE_OPTIONS", "PYTHONPATH", "LD_PRELOAD", "COFFER_"] {
        assert!(!out.contains(name), "{name} reached the app: {out}");
    }
}

/// A server whose certificate chains to the pinned root and carries the Coordinator's name but
/// is not the Coordinator's own RA-TLS certificate (a workload's or the webhook's, under the
/// same root) is refused before anything is sent.
#[test]
fn an_impostor_under_the_coordinators_root_is_refused() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer {
            impostor_certificate: true,
            ..Answer::default()
        },
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let (code, _, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!(code, 76, "{err}");
    assert!(err.contains("not the Coordinator's own"), "{err}");
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing may reach an impostor"
    );
}

#[test]
fn no_coordinator_trust_configured_is_refused() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.env_remove("COFFER_ROOT_CA");
    let (code, _, err) = run(c);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("never trusts a Coordinator on first use"),
        "{err}"
    );
}

#[test]
fn a_coordinator_that_starts_later_is_waited_for() {
    use std::io::BufRead;
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "echo", "late"], &[], &[]);
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let (server, go) = Server::start_later(
        addr,
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
        None,
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut child = sim_launcher(&image, &server, &sim, &ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Open the port only once the launcher has met it closed and said it will retry.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "launcher ended before retrying"
        );
        if line.contains("retrying in") {
            break;
        }
    }
    go.send(()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");
    assert!(server.requests.load(Ordering::SeqCst) >= 1);
}

#[test]
fn an_unreachable_coordinator_ends_with_a_clear_error() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &[], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = reserved.local_addr().unwrap().to_string();
    drop(reserved);
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.env("COFFER_COORDINATOR", &dead)
        .env("COFFER_ACTIVATE_TIMEOUT", "1");
    let (code, _, err) = run(c);
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("unreachable after") && err.contains("retrying in"),
        "{err}"
    );
}

#[test]
fn a_coordinator_waiting_for_a_secret_is_not_blamed_on_the_network() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "touch", "ran"], &[], &[]);
    // As the Coordinator words it (its messages carry their kind).
    let why = "conflict: cannot render the parameters of `app`: user-defined secret `password` \
               has not been set yet; it is set by admin with `coffer secret set password`";
    let answer = Answer {
        not_ready: Some(why.into()),
        ..Answer::default()
    };
    let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.env("COFFER_ACTIVATE_TIMEOUT", "1");
    let (code, _, err) = run(c);
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("is reachable but could not activate `app`")
            && err.contains("secret `password` has not been set yet; it is set by admin"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");
    assert!(!err.contains("conflict: conflict:"), "{err}");
    assert!(!image.root().join("ran").exists());
}

#[test]
fn encrypted_files_are_decrypted_with_the_image_key() {
    use coffer_image::protect::{encrypt, Key, Salt};
    let sim = Sim::new();
    let mut image = Image::new(&["/bin/busybox", "cat", "data/model.bin"], &[], &[]);
    let key = Key::from_bytes([9u8; 32]);
    let plain = b"confidential weights".to_vec();
    fs::create_dir_all(image.root().join("data")).unwrap();
    let mut ct = Vec::new();
    encrypt(
        &key,
        "/data/model.bin",
        Salt::random(),
        plain.as_slice(),
        &mut ct,
    )
    .unwrap();
    fs::write(image.root().join("data/model.bin"), &ct).unwrap();
    fs::set_permissions(
        image.root().join("data/model.bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    image
        .wf
        .encrypted_files
        .push(coffer_image::workload::EncryptedFile {
            path: "/data/model.bin".into(),
            sha256: coffer_image::Digest::of(&ct),
            size: ct.len() as u64,
            mode: 0o640,
            plaintext_mac: None,
        });
    image.reseal();
    let answer = Answer {
        image_key: Some(hex::encode([9u8; 32])),
        ..Answer::default()
    };
    let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let (code, out, err) = run(sim_launcher(&image, &server, &sim, &ca));
    assert_eq!((code, out.as_str()), (0, "confidential weights"), "{err}");

    // The wrong key is an integrity failure, and the ciphertext stays as it was.
    let mut image2 = Image::new(&["/bin/busybox", "true"], &[], &[]);
    fs::create_dir_all(image2.root().join("data")).unwrap();
    fs::write(image2.root().join("data/model.bin"), &ct).unwrap();
    fs::set_permissions(
        image2.root().join("data/model.bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    image2.wf.encrypted_files = image.wf.encrypted_files.clone();
    image2.reseal();
    let answer = Answer {
        image_key: Some(hex::encode([8u8; 32])),
        ..Answer::default()
    };
    let server = Server::start(&sim.platform, Expect::Sgx(image2.measurement()), answer);
    let ca = write_pem(sim.dir.path(), "root2.pem", &server.root_ca_pem);
    let (code, _, err) = run(sim_launcher(&image2, &server, &sim, &ca));
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("decrypting /data/model.bin"), "{err}");
    assert_eq!(fs::read(image2.root().join("data/model.bin")).unwrap(), ct);
}

/// Inside Gramine an `--encrypt --tee sgx` file is a Gramine encrypted mount: the launcher
/// writes the mount's key to `/dev/attestation/keys/coffer_image` and checks what the mount
/// shows against the measured workload file, without decrypting anything to disk. Here the
/// image holds the plaintext where the mount would show it.
#[test]
fn inside_gramine_encrypted_mounts_get_their_key_and_an_older_version_is_refused() {
    use coffer_image::protect::Key;
    let sim = Sim::new();
    let key = Key::from_bytes([9u8; 32]);
    let path = "/data/model.bin";
    let current = b"weights v2".to_vec();
    let mut image = Image::new(&["/bin/busybox", "cat", "data/model.bin"], &[], &[]);
    fs::create_dir_all(image.root().join("data")).unwrap();
    fs::write(image.root().join("data/model.bin"), &current).unwrap();
    image
        .wf
        .encrypted_files
        .push(coffer_image::workload::EncryptedFile {
            path: path.into(),
            sha256: coffer_image::Digest::of(b"the ciphertext on the host"),
            size: 4096,
            mode: 0o640,
            plaintext_mac: Some(key.plaintext_mac(path, &coffer_image::Digest::of(&current))),
        });
    image.reseal();
    let gramine = fake_gramine(&sim.platform, [0x22; 32]);
    let start = |image: &Image, image_key: Option<[u8; 32]>, name: &str| {
        let answer = Answer {
            image_key: image_key.map(hex::encode),
            ..Answer::default()
        };
        let server = Server::start(&sim.platform, Expect::Sgx([0x22; 32]), answer);
        let ca = write_pem(sim.dir.path(), name, &server.root_ca_pem);
        let mut c = launcher(image, &server, &ca);
        c.env("COFFER_ATTESTATION_ROOT", gramine.path())
            .env("COFFER_EVIDENCE", "gramine");
        run(c)
    };
    let (code, out, err) = start(&image, Some([9u8; 32]), "r1.pem");
    assert_eq!((code, out.as_str()), (0, "weights v2"), "{err}");
    assert_eq!(
        fs::read(gramine.path().join("keys/coffer_image")).unwrap(),
        key.gramine_kdk().to_vec()
    );

    // The host puts back an older version (Gramine's format would accept it: same path, same
    // key). Refused before the app runs.
    fs::write(image.root().join("data/model.bin"), b"weights v1").unwrap();
    let (code, out, err) = start(&image, Some([9u8; 32]), "r2.pem");
    assert_eq!(code, 65, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("/data/model.bin is not the version"), "{err}");

    // No image_key in the manifest: a clear refusal.
    let (code, _, err) = start(&image, None, "r3.pem");
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("no image_key"), "{err}");
}

#[test]
fn check_prints_the_plan_without_activating() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "true"], &["x"], &[]);
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.arg("--check");
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("evidence: sim (SIMULATED platform"), "{out}");
    assert!(out.contains("trusted files match"), "{out}");
    assert!(
        out.contains("would exec \"/bin/busybox\" with 2 more arguments"),
        "{out}"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
    // And it reports a problem without activating either.
    fs::write(image.root().join("bin/busybox"), b"not busybox").unwrap();
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.arg("--check");
    let (code, out, _) = run(c);
    assert_eq!(code, 78);
    assert!(
        out.contains("FAIL trusted files") && out.contains("/bin/busybox"),
        "{out}"
    );
}

#[test]
fn chroot_mode_shows_the_image_as_root() {
    let sim = Sim::new();
    let image = Image::new(
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "/bin/busybox ls /; /bin/busybox head -1 /coffer/tls/root-ca.pem",
        ],
        &[],
        &[],
    );
    let server = Server::start(
        &sim.platform,
        Expect::Sgx(image.measurement()),
        Answer::default(),
    );
    let ca = write_pem(sim.dir.path(), "root.pem", &server.root_ca_pem);
    let mut c = sim_launcher(&image, &server, &sim, &ca);
    c.env("COFFER_CHROOT", "1");
    let (code, out, err) = run(c);
    let is_root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        assert_eq!(code, 0, "{err}");
        let listing: Vec<&str> = out.lines().collect();
        assert_eq!(listing[..2], ["bin", "coffer"], "{out}");
        assert!(out.contains("-----BEGIN CERTIFICATE-----"));
    } else {
        assert_eq!(code, 126, "{err}");
        assert!(
            err.contains("chroot") && err.contains("needs root"),
            "{err}"
        );
    }
}

fn real_manifest(image: &Image) -> serde_json::Value {
    serde_json::json!({
        "packages": { "app": { "tee": "sgx", "mrenclave": hex::encode(image.measurement()) } },
        "workloads": { "app": { "package": "app", "parameters": {
            "files": { "/etc/app/token": { "content": "{{ secrets.token.key.hex }}" } },
            "env": { "TOKEN": "{{ secrets.token.key.hex }}" }
        } } },
        "secrets": { "token": { "type": "symmetric", "size": 256, "shared": true } }
    })
}

const SHOW_TOKEN: &[&str] = &[
    "/bin/busybox",
    "sh",
    "-c",
    "bin/busybox cat etc/app/token; echo; echo \"env $TOKEN\"",
];

#[test]
fn real_coordinator_activates_and_the_app_gets_the_same_secret_in_file_and_env() {
    let sim = Sim::new();
    let image = Image::new(SHOW_TOKEN, &[], &[]);
    let coord = real_coordinator([7u8; 32], [0x44; 32], real_manifest(&image));
    let ca = write_pem(sim.dir.path(), "root.pem", &coord.root_ca_pem);
    let mut c = Command::new(LAUNCHER);
    c.env_clear()
        .env("COFFER_COORDINATOR", &coord.addr)
        .env("COFFER_WORKLOAD", "app")
        .env("COFFER_ROOT_CA", &ca)
        .env("COFFER_EVIDENCE", "sim")
        .env("COFFER_SIM_DIR", sim.dir.path())
        .env("COFFER_ROOTFS", image.root());
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0].len(), 64, "{out}");
    assert_eq!(lines[1], format!("env {}", lines[0]));
}

#[test]
fn coordinator_checked_by_its_ra_tls_measurement() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "echo", "attested"], &[], &[]);
    let coord = real_coordinator([7u8; 32], [0x44; 32], real_manifest(&image));
    let base = |mrenclave: [u8; 32]| {
        let mut c = Command::new(LAUNCHER);
        c.env_clear()
            .env("COFFER_COORDINATOR", &coord.addr)
            .env("COFFER_WORKLOAD", "app")
            .env("COFFER_COORDINATOR_MRENCLAVE", hex::encode(mrenclave))
            .env("COFFER_EVIDENCE", "sim")
            .env("COFFER_SIM_DIR", sim.dir.path())
            .env("COFFER_ROOTFS", image.root());
        c
    };
    let (code, out, err) = run(base([0x44; 32]));
    assert_eq!((code, out.as_str()), (0, "attested\n"), "{err}");
    let (code, _, err) = run(base([0x45; 32]));
    assert_eq!(code, 76, "{err}");
    assert!(
        err.contains("MRENCLAVE 4444") && err.contains("is not the expected 4545"),
        "{err}"
    );

    // By signer: the Coordinator's MRSIGNER, product and a minimum SVN (what survives an
    // upgrade of the Coordinator signed by the same key).
    let by_signer = |prod: &str, min_svn: &str| {
        let mut c = base([0; 32]);
        c.env_remove("COFFER_COORDINATOR_MRENCLAVE")
            .env(
                "COFFER_COORDINATOR_MRSIGNER",
                hex::encode(coffer_coordinator::platform::sim_mrsigner()),
            )
            .env("COFFER_COORDINATOR_ISVPRODID", prod)
            .env("COFFER_COORDINATOR_MIN_ISVSVN", min_svn);
        run(c)
    };
    let (code, out, err) = by_signer("1", "1");
    assert_eq!((code, out.as_str()), (0, "attested\n"), "{err}");
    let (code, _, err) = by_signer("1", "2");
    assert_eq!(code, 76, "{err}");
    assert!(err.contains("ISVSVN 1 is below the minimum 2"), "{err}");
    let (code, _, err) = by_signer("2", "0");
    assert_eq!(code, 76, "{err}");
    assert!(err.contains("ISVPRODID 1 is not the expected 2"), "{err}");
}

/// The collateral a launcher pinning the Coordinator's measurement uses comes from the
/// Coordinator, through a host that may alter it: genuine collateral works (here with Gramine's
/// legacy RA-TLS extension), altered collateral is refused, and nothing is activated.
#[test]
fn relayed_collateral_is_verified_and_altered_collateral_is_refused() {
    let sim = Sim::new();
    let image = Image::new(&["/bin/busybox", "echo", "pinned"], &[], &[]);
    let genuine = sim
        .platform
        .collateral(coffer_coordinator::core::now_unix())
        .to_json();
    let start = |collateral: Option<Vec<u8>>| {
        let answer = Answer {
            collateral,
            ..Answer::default()
        };
        let server = Server::start(&sim.platform, Expect::Sgx(image.measurement()), answer);
        let mut c = Command::new(LAUNCHER);
        c.env_clear()
            .env("COFFER_COORDINATOR", &server.addr)
            .env("COFFER_WORKLOAD", "app")
            // The test server's certificate quote: the default simulated SGX identity.
            .env("COFFER_COORDINATOR_MRENCLAVE", hex::encode([0u8; 32]))
            .env("COFFER_EVIDENCE", "sim")
            .env("COFFER_SIM_DIR", sim.dir.path())
            .env("COFFER_ACTIVATE_TIMEOUT", "1")
            .env("COFFER_ROOTFS", image.root());
        let r = run(c);
        (r, server.requests.load(Ordering::SeqCst))
    };
    let ((code, out, err), activations) = start(Some(genuine.clone().into_bytes()));
    assert_eq!((code, out.as_str()), (0, "pinned\n"), "{err}");
    assert_eq!(activations, 1);

    // One byte of the TCB info's signature altered on the way.
    let mut altered = coffer_evidence::Collateral::from_json(genuine.as_bytes()).unwrap();
    altered.tcb_info_signature[0] ^= 1;
    let ((code, _, err), activations) = start(Some(altered.to_json().into_bytes()));
    assert_eq!(code, 76, "{err}");
    assert!(
        err.contains("RA-TLS") || err.contains("collateral"),
        "{err}"
    );
    assert_eq!(
        activations, 0,
        "nothing is sent to an unverified Coordinator"
    );

    // No collateral at all: the launcher waits (transient), then gives up.
    let ((code, _, err), activations) = start(None);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("/api/v1/collateral"), "{err}");
    assert_eq!(activations, 0);
}
