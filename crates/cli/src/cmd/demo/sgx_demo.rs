//! `coffer demo --tee sgx`: the SGX (Gramine) image of the demo app, on a machine without SGX.
//!
//! 1. builds the same busybox httpd image as the simulated demo;
//! 2. starts a simulated Coordinator and verifies it, for the root CA the image pins;
//! 3. converts the image with `--tee sgx`: Gramine from `--gramine-dir` goes into the image,
//!    the manifest fixes the launcher's configuration, MRENCLAVE is measured and the SIGSTRUCT
//!    signed;
//! 4. sets a manifest whose package pins that MRENCLAVE and MRSIGNER;
//! 5. checks the image against a model of Gramine's policies (`coffer-gramine-model`): the host
//!    loader's start, the launcher's reads and secret writes, and the app's exec with its
//!    libraries; every refusal or plaintext write is reported;
//! 6. says plainly that no enclave can start here.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};

use super::{
    build_source_image, convert_options, find_busybox, free_port, set_manifest, start_coordinator,
    verify_coordinator, work_dir, DemoArgs, DemoUser, Narration, Shared,
};
use crate::cmd::launcher_binary::find_launcher;

const TOTAL: u32 = 6;

pub(super) fn demo(args: &DemoArgs, cleanup: &Shared, out: &mut Narration) -> anyhow::Result<()> {
    out.say("coffer demo --tee sgx: builds and checks an SGX image; this machine has no SGX, so no enclave starts and the Coordinator runs on SIMULATED hardware");
    if !args.gramine_dir.join("sgx/libpal.so").is_file() {
        bail!(
            "{} is not a Gramine installation (no sgx/libpal.so): install Gramine \
             (https://gramine.readthedocs.io/en/stable/installation.html) or pass \
             --gramine-dir DIR",
            args.gramine_dir.display()
        );
    }
    let work = work_dir("coffer-demo-sgx-", args, cleanup, out)?;

    let busybox = find_busybox()?;
    let src = work.join("image-src");
    build_source_image(&src, &busybox, free_port()?)?;
    out.step(
        1,
        TOTAL,
        format!(
            "built an OCI image of the unmodified busybox httpd ({})",
            busybox.display()
        ),
    );

    let sim_dir = work.join("sim");
    fs::create_dir_all(&sim_dir)?;
    let coord_addr = format!("127.0.0.1:{}", free_port()?);
    start_coordinator(&work, &sim_dir, &coord_addr, cleanup)?;
    let verified = verify_coordinator(&coord_addr, &sim_dir, &work)?;
    out.step(2, TOTAL, format!("started and verified a SIMULATED Coordinator on {coord_addr}; the image will trust only its root CA {}", verified.root_fingerprint));

    let key_path = match &args.sign_key {
        Some(p) => p.clone(),
        None => {
            let key = coffer_sgx::SigningKey::generate(&mut coffer_sgx::rand_core::OsRng)
                .map_err(|e| anyhow::anyhow!("generating the enclave signing key: {e}"))?;
            let p = work.join("enclave-key.pem");
            fs::write(&p, key.to_pem()?.as_bytes())?;
            p
        }
    };
    let launcher = find_launcher(args.launcher.as_deref())?;
    let converted = work.join("image-sgx");
    let (mrenclave, mrsigner) = convert_sgx(
        &src,
        &converted,
        &launcher.path,
        &args.gramine_dir,
        &key_path,
        &verified.root_ca_path,
    )?;
    out.mrenclave = Some(mrenclave.clone());
    out.mrsigner = Some(mrsigner.clone());
    out.step(
        3,
        TOTAL,
        format!("converted it with `coffer convert --tee sgx` (Gramine from {} in the image): MRENCLAVE {mrenclave}, MRSIGNER {mrsigner}", args.gramine_dir.display()),
    );

    let user = DemoUser::generate()?;
    let manifest = sgx_manifest(&mrenclave, &mrsigner, &user.cert_pem);
    fs::write(work.join("manifest.json"), &manifest)?;
    let hash = set_manifest(&coord_addr, &verified, &manifest)?;
    out.step(4, TOTAL, format!("set the manifest (sha256 {hash}): workload `web` pinned to that MRENCLAVE and MRSIGNER (not debug), its secrets to the in-enclave tmpfs /run/secrets"));

    let image = coffer_gramine_model::image::Image::from_oci_layout(&converted)
        .map_err(|e| anyhow::anyhow!("reading the SGX image: {e}"))?;
    let report = coffer_gramine_model::check_image(&image)
        .map_err(|e| anyhow::anyhow!("checking the SGX image: {e}"))?;
    if !report.is_ok() {
        bail!("the SGX image would not start inside Gramine:\n{report}");
    }
    let count = |action: &str| report.steps.iter().filter(|s| s.action == action).count();
    out.step(5, TOTAL, format!(
        "checked the image against a model of Gramine's policies: {} reads, {} writes (all to in-enclave tmpfs), {} execs and {} libraries allowed, the host loader's {} libraries present; nothing refused",
        count("read"), count("write"), count("exec"), count("library"), count("host")
    ));

    let keep = {
        let mut c = cleanup.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        c.run();
        c.keep
    };
    out.step(6, TOTAL, "NO ENCLAVE STARTED: this machine has no SGX. On an SGX host (with aesmd and /dev/sgx_enclave), the image starts from its ENTRYPOINT `/coffer/launcher --start-gramine-sgx`, and a Coordinator with this manifest accepts it only with that MRENCLAVE, in a genuine, non-debug enclave".to_string());
    if keep {
        out.say(format_args!("coffer demo: kept {}", work.display()));
    }
    out.say("coffer demo --tee sgx: SUCCESS — the SGX image is built, measured, signed and consistent with Gramine's policies");
    Ok(())
}

/// `coffer convert --tee sgx` through the real conversion code; returns (MRENCLAVE, MRSIGNER).
fn convert_sgx(
    src: &Path,
    out: &Path,
    launcher: &Path,
    gramine_dir: &Path,
    key: &Path,
    root_ca: &Path,
) -> anyhow::Result<(String, String)> {
    let opts = convert_options(src, out, launcher);
    let key_pem = fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let g = coffer_image::sgx::GramineOptions {
        installation: coffer_image::sgx::Installation::read(
            gramine_dir,
            &coffer_image::sgx::default_host_lib_dirs(),
        )?,
        key: coffer_sgx::SigningKey::from_pem_bytes(&key_pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?,
        enclave_size: 1 << 30,
        max_threads: 16,
        debug: false,
        workload: "web".into(),
        coordinator: coffer_image::sgx::CoordinatorPin::RootCa(fs::read(root_ca)?),
        secret_dirs: vec!["/run/secrets".into()],
    };
    let report = coffer_image::sgx::convert_sgx(&opts, &g, &|_| {})
        .context("converting the demo image for SGX")?;
    let sgx = report
        .sgx
        .ok_or_else(|| anyhow::anyhow!("the SGX conversion reported no MRENCLAVE"))?;
    Ok((sgx.mrenclave.hex(), sgx.mrsigner.hex()))
}

/// A manifest for the SGX image: the package pins MRENCLAVE and MRSIGNER, the secrets go to
/// the image's in-enclave tmpfs directories.
fn sgx_manifest(mrenclave: &str, mrsigner: &str, user_cert_pem: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "packages": { "web": {
            "tee": "sgx", "mrenclave": mrenclave, "mrsigner": mrsigner,
            "isv_prod_id": 1, "isv_svn": 1, "debug": false, "secret_dirs": ["/run/secrets"]
        } },
        "workloads": { "web": {
            "package": "web",
            "parameters": { "files": {
                "/run/secrets/token": { "content": "{{ secrets.demo_token.key.hex }}\n" }
            } }
        } },
        "secrets": {
            "demo_token": { "type": "symmetric", "size": 256, "shared": true }
        },
        "users": { "demo": { "certificate": user_cert_pem, "roles": ["reader"] } },
        "roles": { "reader": { "resource": "secrets", "names": ["demo_token"], "actions": ["read"] } }
    }))
    .unwrap_or_default()
}
