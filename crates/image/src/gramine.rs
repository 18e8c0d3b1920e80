//! Where Gramine lives in an image converted with `--tee sgx`, and how it is started.
//!
//! The converter (`sgx` feature) writes these paths and the launcher reads them, so they live
//! here, outside the feature gate. Everything Gramine needs is inside the image under
//! [`ROOT`], so the enclave that runs is the one that was measured:
//!
//! | path | what | in the enclave |
//! |---|---|---|
//! | `/coffer/gramine/lib/` | the `--gramine-dir` installation: `libsysdb.so`, `sgx/libpal.so`, `runtime/glibc/` | `libpal.so` is measured into MRENCLAVE, the rest are trusted files |
//! | `/coffer/gramine/host/` | Gramine's untrusted host loader and the glibc it was linked with | no (host side) |
//! | `/coffer/gramine/coffer.manifest.sgx`, `coffer.sig` | the measured manifest and its SIGSTRUCT | measured |
//! | `/coffer/gramine/coordinator-root-ca.pem` | the Coordinator's root CA, the launcher's trust pin | trusted file |
//!
//! The image's ENTRYPOINT is `/coffer/launcher` [`START_FLAG`]: the static launcher, outside
//! the enclave, execs Gramine's loader ([`start_argv`]) as the `gramine-sgx` script does
//! (`tools/gramine.in` in Gramine's sources), without needing a shell in the image. Gramine then
//! starts `/coffer/launcher` inside the enclave with the argv and environment fixed in the
//! manifest.

/// Everything Gramine-related in a converted SGX image lives under here.
pub const ROOT: &str = "/coffer/gramine";
/// The copy of the `--gramine-dir` installation.
pub const LIB_DIR: &str = "/coffer/gramine/lib";
/// Gramine's LibOS, the enclave's first ELF (`loader.entrypoint.uri`).
pub const LIBOS: &str = "/coffer/gramine/lib/libsysdb.so";
/// Gramine's enclave PAL, measured into MRENCLAVE.
pub const LIBPAL: &str = "/coffer/gramine/lib/sgx/libpal.so";
/// Gramine's patched glibc. Apps load it instead of the image's, so their system calls go
/// straight into the LibOS instead of being trapped and emulated (as GSC arranges).
pub const RUNTIME_GLIBC: &str = "/coffer/gramine/lib/runtime/glibc";
/// Gramine's untrusted host loader (`sgx/loader`), with the glibc it needs beside it.
pub const HOST_DIR: &str = "/coffer/gramine/host";
/// The host loader inside [`HOST_DIR`].
pub const LOADER: &str = "/coffer/gramine/host/loader";
/// The host loader's ELF interpreter: its `PT_INTERP` is rewritten to this path, so it runs in
/// images without glibc (busybox, distroless static) and never with an image's older glibc.
pub const HOST_INTERPRETER: &str = "/coffer/gramine/host/ld.so";
/// The application name Gramine is started with: it reads `<APPLICATION>.manifest.sgx` and
/// `<APPLICATION>.sig`.
pub const APPLICATION: &str = "/coffer/gramine/coffer";
/// The signed manifest.
pub const MANIFEST: &str = "/coffer/gramine/coffer.manifest.sgx";
/// The SIGSTRUCT.
pub const SIG: &str = "/coffer/gramine/coffer.sig";
/// The Coordinator's root CA pinned at conversion (`--coordinator-root-ca`).
pub const COORDINATOR_ROOT_CA: &str = "/coffer/gramine/coordinator-root-ca.pem";
/// The key name of the image's encrypted mounts (`--encrypt --tee sgx`): the launcher writes
/// the key to `/dev/attestation/keys/coffer_image`.
pub const ENCRYPTED_KEY_NAME: &str = "coffer_image";
/// The launcher's first argument in an SGX image's ENTRYPOINT: start Gramine.
pub const START_FLAG: &str = "--start-gramine-sgx";

/// Library directories searched after Gramine's glibc and the image's own `LD_LIBRARY_PATH`.
/// Gramine searches the ELF interpreter only in `LD_LIBRARY_PATH` once it is set
/// (`find_interp` in `libos/src/libos_rtld.c`), so these include its defaults `/lib` and
/// `/lib64`.
pub const SYSTEM_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
    "/lib64",
];

/// The app's `LD_LIBRARY_PATH` inside the enclave: Gramine's glibc first, then the image's own
/// entries (from its config `Env`), then [`SYSTEM_LIBRARY_DIRS`]. The manifest fixes the same
/// value for the launcher, and the launcher gives it to the app.
pub fn library_path(image_ld_library_path: Option<&str>) -> String {
    let mut dirs: Vec<&str> = vec![RUNTIME_GLIBC];
    for d in image_ld_library_path
        .unwrap_or("")
        .split(':')
        .chain(SYSTEM_LIBRARY_DIRS.iter().copied())
    {
        if d.starts_with('/') && !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs.join(":")
}

/// The command the launcher execs outside the enclave to start Gramine
/// (`gramine-sgx coffer` without the script). Gramine ignores host arguments when the manifest
/// fixes `loader.argv` (`pal/src/pal_main.c`), so none are passed.
pub fn start_argv() -> Vec<String> {
    [LOADER, LIBPAL, "init", APPLICATION]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The host loader's environment: only what finds its glibc, so nothing from the image's or
/// the pod's `LD_*` steers the untrusted loader into a crash that looks like an enclave bug.
/// Gramine gives the enclave only the variables its manifest names.
pub fn start_env(host_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = host_env
        .iter()
        .filter(|(k, _)| !k.starts_with("LD_"))
        .cloned()
        .collect();
    env.push(("LD_LIBRARY_PATH".into(), HOST_DIR.into()));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gramine_glibc_comes_first_and_image_dirs_are_kept_in_order() {
        assert_eq!(
            library_path(Some("/opt/app/lib::relative:/usr/lib")),
            "/coffer/gramine/lib/runtime/glibc:/opt/app/lib:/usr/lib:/lib/x86_64-linux-gnu:\
             /usr/lib/x86_64-linux-gnu:/lib:/lib64"
        );
        assert!(library_path(None).starts_with(RUNTIME_GLIBC));
        assert!(library_path(None).ends_with(":/lib64"));
    }

    #[test]
    fn host_loader_gets_only_its_own_library_path() {
        let env = start_env(&[
            ("LD_PRELOAD".into(), "/evil.so".into()),
            ("LD_LIBRARY_PATH".into(), "/evil".into()),
            ("COFFER_COORDINATOR".into(), "c:1".into()),
        ]);
        assert_eq!(
            env,
            vec![
                ("COFFER_COORDINATOR".into(), "c:1".into()),
                ("LD_LIBRARY_PATH".into(), HOST_DIR.into()),
            ]
        );
        assert_eq!(start_argv()[0], LOADER);
        assert_eq!(start_argv()[2], "init");
        assert!(HOST_INTERPRETER.len() < "/lib64/ld-linux-x86-64.so.2".len());
    }
}
