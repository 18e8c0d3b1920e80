//! `coffer demo`: the whole Coffer path once, on this machine, on SIMULATED hardware.
//!
//! 1. builds a small OCI image from a real, unmodified program: busybox's `httpd` (the static
//!    busybox from Debian's `busybox-static`), serving `/www`;
//! 2. converts it with the real conversion code (`coffer_image`), which adds the static
//!    launcher and records the image measurement;
//! 3. starts a real Coordinator (`coffer coordinator --simulation`, a child process) on
//!    127.0.0.1 and sets a manifest that pins the image measurement and gives the app a
//!    generated secret (written to `/www/secret.txt`) and a TLS certificate from the
//!    Coordinator's CA (`/www/cert.pem`);
//! 4. verifies the Coordinator as a client would (`coffer verify`: its quote over a fresh nonce,
//!    its root CA, the manifest hash);
//! 5. runs the converted image (`coffer run`: runc when installed and the launcher is static,
//!    else a local process), fetches the app's answer over HTTP and compares the secret with
//!    the one the Coordinator holds, and the certificate with the Coordinator's CA;
//! 6. changes one byte of a trusted file in the image and shows that its activation is refused.
//!
//! Every step prints one line. Children are killed and temporary directories removed at the
//! end, on error, and on Ctrl-C.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};

mod sgx_demo;

use crate::cmd::launcher_binary::{find_launcher, is_static_elf, Launcher};
use crate::cmd::run::{self, RunOptions, StdioMode};
use crate::Global;

/// Arguments of `coffer demo`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    Run the demo (after `bash scripts/install-deps.sh` and `bash scripts/build-launcher.sh`):
        coffer demo

    Keep the working directory to look at the image, manifest and logs afterwards:
        coffer demo --keep

    The SGX variant: Gramine goes into the image; prints MRENCLAVE and MRSIGNER and checks
    the image against a model of Gramine's policies (no enclave starts without SGX):
        coffer demo --tee sgx --gramine-dir /usr/lib/x86_64-linux-gnu/gramine

The demo uses SIMULATED hardware: quotes are signed by a simulation root, not by Intel.")]
pub(crate) struct DemoArgs {
    /// Keep the working directory (images, manifest, logs) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// The launcher to put into the image (default: the static build from
    /// scripts/build-launcher.sh, else `coffer-launcher` next to this executable).
    #[arg(long, value_name = "PATH", env = "COFFER_LAUNCHER")]
    launcher: Option<PathBuf>,
    /// `sgx`: build the SGX (Gramine) image instead, print its MRENCLAVE and MRSIGNER, set a
    /// manifest pinning them, and check the image against a model of Gramine's policies.
    #[arg(long, value_enum, default_value_t = DemoTee::None)]
    tee: DemoTee,
    /// Gramine's library directory for `--tee sgx` (Gramine's packages install it here).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/usr/lib/x86_64-linux-gnu/gramine"
    )]
    gramine_dir: PathBuf,
    /// The enclave signing key for `--tee sgx` (RSA-3072, e = 3); default: a fresh one.
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,
}

/// Which demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DemoTee {
    /// The simulated platform end to end (the app runs).
    None,
    /// The SGX image with Gramine, checked against Gramine's policies.
    Sgx,
}

/// Everything the demo started, for clean-up on any exit path.
#[derive(Default)]
struct Cleanup {
    children: Vec<Child>,
    runc_names: Vec<String>,
    dirs: Vec<PathBuf>,
    keep: bool,
}

impl Cleanup {
    fn run(&mut self) {
        for name in self.runc_names.drain(..) {
            if let Some(runc) = run::find_runc() {
                let _ = Command::new(&runc)
                    .args(["kill", &name, "KILL"])
                    .stderr(Stdio::null())
                    .status();
                let _ = Command::new(&runc)
                    .args(["delete", "-f", &name])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            for d in self.dirs.drain(..) {
                let _ = fs::remove_dir_all(&d);
            }
        }
    }
}

type Shared = Arc<Mutex<Cleanup>>;

/// What the demo tells its user: lines on stdout, or with `--json` on stderr and a summary on
/// stdout at the end.
#[derive(Default)]
struct Narration {
    json: bool,
    steps: Vec<String>,
    image_measurement: String,
    mrenclave: Option<String>,
    mrsigner: Option<String>,
}

impl Narration {
    fn say(&self, line: impl std::fmt::Display) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn step(&mut self, n: u32, total: u32, msg: impl std::fmt::Display) {
        let msg = msg.to_string();
        self.say(format_args!("[{n}/{total}] {msg}"));
        self.steps.push(msg);
    }
}

/// Runs `coffer demo`.
pub(crate) fn run(args: DemoArgs, global: Global) -> anyhow::Result<ExitCode> {
    let cleanup: Shared = Arc::new(Mutex::new(Cleanup {
        keep: args.keep,
        ..Cleanup::default()
    }));
    // Ctrl-C: clean up, then exit 130 as a shell would.
    {
        let cleanup = cleanup.clone();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                eprintln!("\ncoffer demo: interrupted, cleaning up");
                if let Ok(mut c) = cleanup.lock() {
                    c.run();
                }
                std::process::exit(130);
            }
        });
    }
    let mut out = Narration {
        json: global.json,
        ..Narration::default()
    };
    let result = match args.tee {
        DemoTee::None => demo(&args, &cleanup, &mut out),
        DemoTee::Sgx => sgx_demo::demo(&args, &cleanup, &mut out),
    };
    if let Ok(mut c) = cleanup.lock() {
        c.run();
    }
    result?;
    if global.json {
        crate::output::print_json(&serde_json::json!({
            "result": "success",
            "simulated": true,
            "tee": if args.tee == DemoTee::Sgx { "sgx" } else { "simulated" },
            "image_measurement": out.image_measurement,
            "mrenclave": out.mrenclave,
            "mrsigner": out.mrsigner,
            "steps": out.steps,
        }))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn demo(args: &DemoArgs, cleanup: &Shared, out: &mut Narration) -> anyhow::Result<()> {
    const TOTAL: u32 = 8;
    out.say("coffer demo: everything below runs on SIMULATED hardware (no SGX/TDX): quotes are signed by a simulation root CA, not by Intel");
    let work = work_dir("coffer-demo-", args, cleanup, out)?;

    // 1. The source image.
    let busybox = find_busybox()?;
    let app_port = free_port()?;
    let src = work.join("image-src");
    build_source_image(&src, &busybox, app_port)?;
    out.step(1, TOTAL, format!("built an OCI image of the unmodified busybox httpd ({}) serving /www on 127.0.0.1:{app_port}", busybox.display()));

    // 2. Convert it.
    let launcher = find_launcher(args.launcher.as_deref())?;
    let converted = work.join("image-confidential");
    let measurement = convert(&src, &converted, &launcher.path)?;
    out.image_measurement.clone_from(&measurement);
    out.step(
        2,
        TOTAL,
        format!(
            "converted it with `coffer convert` (launcher {}): image measurement {measurement}",
            if launcher.is_static {
                "static"
            } else {
                "dynamically linked"
            }
        ),
    );

    // 3. The Coordinator.
    let sim_dir = work.join("sim");
    fs::create_dir_all(&sim_dir)?;
    let coord_port = free_port()?;
    let coord_addr = format!("127.0.0.1:{coord_port}");
    let coordinator = start_coordinator(&work, &sim_dir, &coord_addr, cleanup)?;
    out.step(
        3,
        TOTAL,
        format!("started a Coordinator in SIMULATION mode on {coord_addr} (pid {coordinator})"),
    );

    // 4. Verify it and set the manifest.
    let user = DemoUser::generate()?;
    let manifest = manifest_json(&measurement, &user.cert_pem);
    let manifest_path = work.join("manifest.json");
    fs::write(&manifest_path, &manifest)?;
    let verified = verify_coordinator(&coord_addr, &sim_dir, &work)?;
    out.step(4, TOTAL, format!("verified the Coordinator like `coffer verify` (fresh-nonce quote, simulated platform allowed): root CA {}", verified.root_fingerprint));
    let manifest_hash = set_manifest(&coord_addr, &verified, &manifest)?;
    out.step(5, TOTAL, format!("set the manifest (sha256 {manifest_hash}): workload `web` pinned to the image measurement, gets secret `demo_token` and a certificate"));

    // 6. Run the app through the launcher.
    let mode = run_mode(&launcher);
    let opts = RunOptions {
        coordinator: Some(coord_addr.clone()),
        workload: Some("web".into()),
        root_ca: Some(verified.root_ca_path.clone()),
        sim_dir: Some(sim_dir.clone()),
        name: Some(format!("coffer-demo-{app_port}")),
        ..RunOptions::default()
    };
    let converted_ref = coffer_image::ImageRef {
        format: coffer_image::Format::OciDir,
        path: converted.clone(),
        tag: None,
    };
    let prepared = run::prepare(&converted_ref, &opts, false)?;
    cleanup
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .dirs
        .push(prepared.work_path.clone());
    spawn(&prepared, mode, cleanup)?;
    let body = wait_for_http(app_port, "/secret.txt", &prepared.work_path, cleanup)?;
    let cert_pem = http_get(app_port, "/cert.pem")?;
    let held = read_secret(&coord_addr, &verified, &user)?;
    let served = String::from_utf8_lossy(&body).trim().to_string();
    if !bool::from(subtle_eq(served.as_bytes(), held.as_bytes())) {
        bail!("the app served a secret that differs from the Coordinator's: the activation did not deliver it");
    }
    check_cert_from_ca(&cert_pem, &verified, &coord_addr)?;
    out.step(6, TOTAL, format!("ran the image ({}); the app answered over HTTP with secret demo_token ({} hex chars, equal to the Coordinator's) and a certificate issued by the Coordinator's CA", mode.describe(), served.len()));

    // 7. Tampered image.
    stop_app(cleanup);
    let tampered = run::prepare(
        &converted_ref,
        &RunOptions {
            name: Some(format!("coffer-demo-t{app_port}")),
            ..opts.clone()
        },
        false,
    )?;
    cleanup
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .dirs
        .push(tampered.work_path.clone());
    let target = tampered.rootfs.join("www/index.html");
    let mut bytes = fs::read(&target).context("reading /www/index.html of the unpacked image")?;
    if let Some(b) = bytes.first_mut() {
        *b ^= 0x01;
    }
    fs::write(&target, &bytes)?;
    spawn(&tampered, mode, cleanup)?;
    let (code, stderr) = wait_exit(&tampered.work_path, cleanup)?;
    let reason = stderr
        .lines()
        .find(|l| l.contains("activation refused"))
        .map(str::to_string);
    match (code, reason) {
        (77, Some(line)) => {
            let why = line
                .split("coffer-launcher: error: ")
                .last()
                .unwrap_or(&line)
                .to_string();
            out.step(7, TOTAL, format!("changed one byte of /www/index.html in the image: REFUSED, the app did not start ({why})"));
        }
        (c, _) => bail!(
            "the tampered image was not refused as expected (launcher exit {c}): {}",
            stderr.trim()
        ),
    }

    drop(tampered);
    drop(prepared);
    let keep = {
        let mut c = cleanup.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        c.run();
        c.keep
    };
    out.step(
        8,
        TOTAL,
        if keep {
            format!(
                "cleaned up: stopped the Coordinator and the containers; kept {}",
                work.display()
            )
        } else {
            "cleaned up: stopped the Coordinator and the containers, removed temporary files"
                .to_string()
        },
    );
    out.say("coffer demo: SUCCESS — an unmodified app received its secrets only after (SIMULATED) attestation, and a tampered image was refused");
    Ok(())
}

/// A fresh working directory, removed at clean-up unless `--keep` (then its path is printed).
fn work_dir(
    prefix: &str,
    args: &DemoArgs,
    cleanup: &Shared,
    out: &Narration,
) -> anyhow::Result<PathBuf> {
    let work = tempfile::Builder::new().prefix(prefix).tempdir()?.keep();
    cleanup
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .dirs
        .push(work.clone());
    if args.keep {
        out.say(format_args!(
            "coffer demo: working directory {}",
            work.display()
        ));
    }
    Ok(work)
}

fn subtle_eq(a: &[u8], b: &[u8]) -> subtle_like::Choice {
    subtle_like::ct_eq(a, b)
}

/// Constant-time comparison without another dependency: the demo compares a secret.
mod subtle_like {
    pub(super) struct Choice(bool);
    impl From<Choice> for bool {
        fn from(c: Choice) -> bool {
            c.0
        }
    }
    pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> Choice {
        if a.len() != b.len() {
            return Choice(false);
        }
        let mut d = 0u8;
        for (x, y) in a.iter().zip(b) {
            d |= x ^ y;
        }
        Choice(std::hint::black_box(d) == 0)
    }
}

fn find_busybox() -> anyhow::Result<PathBuf> {
    for p in ["/usr/bin/busybox", "/bin/busybox"] {
        let p = Path::new(p);
        if p.is_file() && is_static_elf(p).unwrap_or(false) {
            return Ok(p.to_path_buf());
        }
    }
    bail!("no static busybox found: install it with `bash scripts/install-deps.sh` (Debian package busybox-static)")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Runc,
    Local,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::Runc => "under runc",
            Mode::Local => "as a local process: runc or a static launcher is missing",
        }
    }
}

fn run_mode(launcher: &Launcher) -> Mode {
    if launcher.is_static && run::find_runc().is_some() && run::is_root() {
        Mode::Runc
    } else {
        Mode::Local
    }
}

fn spawn(p: &run::Prepared, mode: Mode, cleanup: &Shared) -> anyhow::Result<()> {
    let child = match mode {
        Mode::Runc => {
            let runc = run::find_runc().ok_or_else(|| anyhow::anyhow!("runc disappeared"))?;
            p.spawn_runc(&runc, StdioMode::Logs)?
        }
        Mode::Local => p.spawn_local(StdioMode::Logs)?,
    };
    let mut c = cleanup.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    if let Mode::Runc = mode {
        c.runc_names.push(p.name.clone());
    }
    c.children.push(child);
    Ok(())
}

/// Stops the app containers started so far (the Coordinator, child 0, keeps running).
fn stop_app(cleanup: &Shared) {
    if let Ok(mut c) = cleanup.lock() {
        if let Some(runc) = run::find_runc() {
            for name in c.runc_names.drain(..) {
                let _ = Command::new(&runc)
                    .args(["kill", &name, "KILL"])
                    .stderr(Stdio::null())
                    .status();
                let _ = Command::new(&runc)
                    .args(["delete", "-f", &name])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let coordinator = if c.children.is_empty() {
            None
        } else {
            Some(c.children.remove(0))
        };
        for mut ch in c.children.drain(..) {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        c.children.extend(coordinator);
    }
}

fn last_child_exit(cleanup: &Shared) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let mut c = cleanup.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    match c.children.last_mut() {
        Some(ch) => Ok(ch.try_wait()?),
        None => Ok(None),
    }
}

const APP_DEADLINE: Duration = Duration::from_secs(60);

fn wait_for_http(port: u16, path: &str, work: &Path, cleanup: &Shared) -> anyhow::Result<Vec<u8>> {
    let start = Instant::now();
    loop {
        if let Ok(body) = http_get(port, path) {
            return Ok(body);
        }
        if let Some(st) = last_child_exit(cleanup)? {
            let log = fs::read_to_string(work.join("stderr.log")).unwrap_or_default();
            bail!("the app ended ({st}) before answering: {}", log.trim());
        }
        if start.elapsed() > APP_DEADLINE {
            let log = fs::read_to_string(work.join("stderr.log")).unwrap_or_default();
            bail!(
                "the app did not answer on 127.0.0.1:{port} within {} s: {}",
                APP_DEADLINE.as_secs(),
                log.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(work: &Path, cleanup: &Shared) -> anyhow::Result<(i32, String)> {
    let start = Instant::now();
    loop {
        if let Some(st) = last_child_exit(cleanup)? {
            let log = fs::read_to_string(work.join("stderr.log")).unwrap_or_default();
            return Ok((st.code().unwrap_or(-1), log));
        }
        if start.elapsed() > APP_DEADLINE {
            bail!(
                "the tampered image's launcher neither started nor stopped within {} s",
                APP_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (busybox httpd speaks no TLS); returns the body of a 200.
fn http_get(port: u16, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = Vec::new();
    s.take(1 << 20).read_to_end(&mut resp)?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header"))?;
    let status_line = String::from_utf8_lossy(resp.get(..head_end).unwrap_or(&[]))
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if !status_line.contains(" 200") {
        bail!("GET {path}: {status_line}");
    }
    Ok(resp.get(head_end + 4..).unwrap_or(&[]).to_vec())
}

/// Writes an OCI image layout with one layer: the static busybox as /bin/busybox (and /bin/sh),
/// /www/index.html, and Entrypoint `busybox httpd -f -p 127.0.0.1:PORT -h /www`.
fn build_source_image(dir: &Path, busybox: &Path, port: u16) -> anyhow::Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    let put = |data: &[u8]| -> anyhow::Result<String> {
        let hex = hex::encode(Sha256::digest(data));
        fs::write(dir.join("blobs/sha256").join(&hex), data)?;
        Ok(format!("sha256:{hex}"))
    };
    let mut tar = tar::Builder::new(Vec::new());
    let add_dir = |t: &mut tar::Builder<Vec<u8>>, path: &str| -> anyhow::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        t.append_data(&mut h, path, std::io::empty())?;
        Ok(())
    };
    for d in ["bin/", "www/", "etc/"] {
        add_dir(&mut tar, d)?;
    }
    let file =
        |t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| -> anyhow::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(0);
            t.append_data(&mut h, path, data)?;
            Ok(())
        };
    file(&mut tar, "bin/busybox", &fs::read(busybox)?, 0o755)?;
    file(
        &mut tar,
        "www/index.html",
        b"<h1>Hello from an unmodified busybox httpd</h1>\n",
        0o644,
    )?;
    file(
        &mut tar,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(0);
    tar.append_link(&mut h, "bin/sh", "busybox")?;
    let layer = tar.into_inner()?;
    let layer_digest = put(&layer)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/busybox", "httpd", "-f", "-v", "-p", format!("127.0.0.1:{port}"), "-h", "/www"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/"
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "coffer demo: busybox httpd" }]
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = put(&config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }]
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = put(&manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "demo" }
        }]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// The manifest: workload `web` pinned to the image measurement, a generated secret and a
/// certificate for the app, and a demo user who may read the secret (to compare).
fn manifest_json(measurement: &str, user_cert_pem: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "packages": { "web": { "tee": "sgx", "mrenclave": measurement } },
        "workloads": { "web": {
            "package": "web",
            "parameters": { "files": {
                "/www/secret.txt": { "content": "{{ secrets.demo_token.key.hex }}\n", "mode": "0644" },
                "/www/cert.pem": { "content": "{{ secrets.web_cert.cert.pem }}", "mode": "0644" },
                "/etc/web/key.pem": { "content": "{{ secrets.web_cert.private.pem }}" }
            } }
        } },
        "secrets": {
            "demo_token": { "type": "symmetric", "size": 256, "shared": true },
            "web_cert": { "type": "certificate", "shared": true, "certificate": {
                "subject": { "common_name": "web.demo" }, "sans": ["localhost"], "key_type": "ecdsa-p256"
            } }
        },
        "users": { "demo": { "certificate": user_cert_pem, "roles": ["reader"] } },
        "roles": { "reader": { "resource": "secrets", "names": ["demo_token"], "actions": ["read"] } }
    }))
    .unwrap_or_default()
}

/// Converts with the real conversion code (what `coffer convert` runs); returns the image
/// measurement (hex).
fn convert(src: &Path, out: &Path, launcher: &Path) -> anyhow::Result<String> {
    let report = coffer_image::convert(&convert_options(src, out, launcher), &|_| {})
        .context("converting the demo image")?;
    Ok(report.image_measurement.hex())
}

/// The demo's conversion: OCI layout to OCI layout, every file trusted, ISVPRODID/ISVSVN 1.
fn convert_options(src: &Path, out: &Path, launcher: &Path) -> coffer_image::ConvertOptions {
    use coffer_image::{ConvertOptions, Format, ImageRef, Limits};
    ConvertOptions {
        source: ImageRef {
            format: Format::OciDir,
            path: src.to_path_buf(),
            tag: None,
        },
        target: ImageRef {
            format: Format::OciDir,
            path: out.to_path_buf(),
            tag: None,
        },
        launcher: launcher.to_path_buf(),
        trusted: vec![],
        allowed: vec![],
        runtime_mounts: vec![],
        encrypt: vec![],
        key: None,
        isv_prod_id: 1,
        isv_svn: 1,
        source_date_epoch: None,
        limits: Limits::default(),
        sgx: None,
    }
}

/// Starts `coffer coordinator --simulation` (this executable) and waits until it listens.
fn start_coordinator(
    work: &Path,
    sim_dir: &Path,
    addr: &str,
    cleanup: &Shared,
) -> anyhow::Result<u32> {
    let exe = std::env::current_exe()?;
    let log_path = work.join("coordinator.log");
    let log = fs::File::create(&log_path)?;
    let child = Command::new(exe)
        .arg("coordinator")
        .arg("--simulation")
        .arg("--sim-dir")
        .arg(sim_dir)
        .arg("--data-dir")
        .arg(work.join("coordinator-data"))
        .arg("--listen")
        .arg(addr)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting `coffer coordinator`")?;
    let pid = child.id();
    cleanup
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .children
        .insert(0, child);
    let start = Instant::now();
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(pid);
        }
        let exited = {
            let mut c = cleanup.lock().map_err(|_| anyhow::anyhow!("lock"))?;
            match c.children.first_mut() {
                Some(ch) => ch.try_wait()?,
                None => None,
            }
        };
        if let Some(st) = exited {
            bail!(
                "the Coordinator ended ({st}): {}",
                fs::read_to_string(&log_path).unwrap_or_default().trim()
            );
        }
        if start.elapsed() > APP_DEADLINE {
            bail!(
                "the Coordinator did not listen on {addr} within {} s",
                APP_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The attested Coordinator.
struct VerifiedCoordinator {
    root_der: Vec<u8>,
    root_ca_path: PathBuf,
    root_fingerprint: String,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `coffer verify`'s check: the Coordinator's quote over a fresh nonce verifies (simulated
/// platform allowed, explicitly), binds its root CA, shows the MRENCLAVE of this very `coffer`
/// executable (what the simulated platform measures), and the TLS channel ends in it.
fn verify_coordinator(
    addr: &str,
    sim_dir: &Path,
    work: &Path,
) -> anyhow::Result<VerifiedCoordinator> {
    use coffer_coordinator::attest::{attest, Expectations};
    use coffer_coordinator::platform::{CollateralSource, EvidenceVerifier};
    let path = sim_dir.join(coffer_coordinator::platform::SIM_PLATFORM_FILE);
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let sim = coffer_evidence::sim::SimPlatform::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let verifier = EvidenceVerifier::new(
        sim.trust_anchors(),
        CollateralSource::Simulated {
            sim: Box::new(sim),
            cache: Default::default(),
        },
    );
    let own = coffer_coordinator::platform::own_measurement()?;
    let expect = Expectations {
        allow_simulation: true,
        mrenclaves: &[own],
        tcb_statuses: &[],
    };
    let attested = runtime()?
        .block_on(attest(
            addr,
            &verifier,
            &expect,
            coffer_coordinator::core::now_unix(),
        ))
        .map_err(|e| anyhow::anyhow!("verifying the Coordinator: {e}"))?;
    if !attested.simulation {
        bail!("the demo Coordinator does not report simulation; refusing to continue");
    }
    let root_ca_path = work.join("coordinator-root-ca.pem");
    fs::write(&root_ca_path, &attested.root_pem)?;
    Ok(VerifiedCoordinator {
        root_fingerprint: format!(
            "sha256:{}",
            &hex::encode(Sha256::digest(&attested.root_der))[..16]
        ),
        root_der: attested.root_der,
        root_ca_path,
    })
}

fn client(
    addr: &str,
    v: &VerifiedCoordinator,
    id: Option<&coffer_coordinator::tls::ClientIdentity>,
) -> anyhow::Result<coffer_coordinator::client::Client> {
    Ok(coffer_coordinator::client::Client::new(
        addr,
        &coffer_coordinator::tls::Trust::RootCa(v.root_der.clone()),
        id,
    )?)
}

/// Sets the manifest and checks the Coordinator reports the hash computed here.
fn set_manifest(addr: &str, v: &VerifiedCoordinator, manifest: &str) -> anyhow::Result<String> {
    let local = coffer_manifest::Manifest::parse(manifest.as_bytes())
        .map_err(|e| anyhow::anyhow!("the demo manifest is invalid: {e:?}"))?
        .hash_hex();
    let resp: coffer_api::ManifestResponse = runtime()?.block_on(async {
        let mut c = client(addr, v, None)?;
        let (st, bytes) = c
            .request(
                hyper_method_post(),
                "/api/v1/manifest",
                Some(manifest.as_bytes().to_vec()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("setting the manifest: {e}"))?;
        coffer_coordinator::client::decode::<coffer_api::ManifestResponse>(st, &bytes)
            .map_err(|e| anyhow::anyhow!("setting the manifest: {e}"))
    })?;
    if resp.manifest_hash != local {
        bail!(
            "the Coordinator reports manifest {}, the demo computed {local}",
            resp.manifest_hash
        );
    }
    Ok(local)
}

fn hyper_method_post() -> coffer_coordinator::client::Method {
    coffer_coordinator::client::Method::POST
}

/// The demo user who may read `demo_token` (client certificate for the secrets API).
struct DemoUser {
    cert_pem: String,
    identity: coffer_coordinator::tls::ClientIdentity,
}

impl DemoUser {
    fn generate() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coffer demo user");
        let cert = params.self_signed(&key)?;
        Ok(DemoUser {
            cert_pem: cert.pem(),
            identity: coffer_coordinator::tls::ClientIdentity {
                chain: vec![cert.der().to_vec()],
                key_pkcs8: key.serialize_der(),
            },
        })
    }
}

/// Reads `demo_token` as the demo user; returns it as hex (what the app's file holds).
fn read_secret(addr: &str, v: &VerifiedCoordinator, user: &DemoUser) -> anyhow::Result<String> {
    use base64::Engine as _;
    let resp: coffer_api::SecretsResponse = runtime()?.block_on(async {
        let mut c = client(addr, v, Some(&user.identity))?;
        c.get("/api/v1/secrets?names=demo_token")
            .await
            .map_err(|e| anyhow::anyhow!("reading demo_token from the Coordinator: {e}"))
    })?;
    let s = resp
        .secrets
        .get("demo_token")
        .ok_or_else(|| anyhow::anyhow!("the Coordinator did not return demo_token"))?;
    let b64 = s
        .value
        .as_ref()
        .or(s.private.as_ref())
        .ok_or_else(|| anyhow::anyhow!("demo_token has no value"))?;
    Ok(hex::encode(
        base64::engine::general_purpose::STANDARD.decode(b64)?,
    ))
}

/// Checks that the certificate the app serves chains to the Coordinator's root CA (through
/// the current intermediate, fetched over the attested channel).
fn check_cert_from_ca(cert_pem: &[u8], v: &VerifiedCoordinator, addr: &str) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let quote: coffer_api::QuoteResponse = runtime()?.block_on(async {
        let mut c = client(addr, v, None)?;
        c.get("/api/v1/quote")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    let intermediate = CertificateDer::from_pem_slice(quote.intermediate_ca_pem.as_bytes())?;
    let leaf = CertificateDer::from_pem_slice(cert_pem)
        .context("the app's /cert.pem is not a PEM certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(v.root_der.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()?;
    use rustls::client::danger::ServerCertVerifier as _;
    verifier
        .verify_server_cert(
            &leaf,
            &[intermediate],
            &ServerName::try_from("localhost")?,
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "the app's certificate does not chain to the Coordinator's root CA: {e}"
            )
        })?;
    Ok(())
}
