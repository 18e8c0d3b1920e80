//! `coffer-launcher`: see the `coffer_launcher` crate.
//!
//! Usage: `coffer-launcher [--check | --help | --version] [--] [ARGS...]`. ARGS replace the
//! image's `Cmd` (as Kubernetes `args:` do); after `--` every argument is the app's, even one
//! that looks like a launcher option.

use std::collections::BTreeMap;
use std::process::ExitCode;

const HELP: &str =
    "coffer-launcher: activates with the Coffer Coordinator, writes the secrets it returns,
then execs the image's original entrypoint. It is the entrypoint of images made by `coffer convert`.

USAGE:
    coffer-launcher [ARGS...]          activate, then exec Entrypoint ++ (ARGS or Cmd)
    coffer-launcher --start-gramine-sgx
                                       (SGX images' ENTRYPOINT) start Gramine's loader on
                                       /coffer/gramine/coffer.manifest.sgx; inside the
                                       enclave the launcher runs with the manifest's argv
                                       and environment, and a pod's args: are ignored
    coffer-launcher --check [ARGS...]  print what would happen, without activating
    coffer-launcher -- ARGS...         ARGS are the app's, even if they start with --

ENVIRONMENT:
    COFFER_COORDINATOR    host:port of the Coordinator (required)
    COFFER_WORKLOAD       workload name in the manifest (required)
    COFFER_ROOT_CA        PEM root CA the Coordinator's TLS certificate must chain to, or
    COFFER_COORDINATOR_MRENCLAVE  its expected MRENCLAVE, or
    COFFER_COORDINATOR_MRSIGNER with _ISVPRODID and _MIN_ISVSVN: checked in its RA-TLS
                          quote with the collateral it relays (GET /api/v1/collateral)
    COFFER_INSTANCE_ID    instance UUID (default: random per start)
    COFFER_EVIDENCE       auto | gramine | tsm | sim (default auto; never falls back to sim)
    COFFER_ATTESTATION_ROOT, COFFER_TSM_ROOT, COFFER_SIM_DIR   evidence interfaces
    COFFER_ROOTFS, COFFER_CHROOT   image root and chroot (for runs outside a container)
    COFFER_ACTIVATE_TIMEOUT        seconds to retry an unreachable Coordinator (default 300)

FILES WRITTEN:
    /coffer/tls/cert.pem, /coffer/tls/key.pem (0600), /coffer/tls/root-ca.pem, and the
    manifest's files (0600 unless the manifest says otherwise)

EXIT STATUS:
    the app's; before it runs: 78 configuration, 65 image/parameters, 71 evidence,
    69 Coordinator unreachable, 75 Coordinator not ready (a secret not set yet),
    76 Coordinator untrusted, 77 activation refused, 74 I/O,
    126/127 app not executable/not found
";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut check = false;
    match args.first().map(String::as_str) {
        Some("--help") | Some("-h") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("--version") => {
            println!("coffer-launcher {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--check") => {
            check = true;
            args.remove(0);
        }
        Some(coffer_image::gramine::START_FLAG) => return start_gramine(&args[1..]),
        _ => {}
    }
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    let host_env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let config = match coffer_launcher::Config::from_env(&host_env) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if check {
        let (report, ok) = coffer_launcher::check_report(&config, &args);
        print!("{report}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(78)
        };
    }
    let plan = match coffer_launcher::prepare(&config, &host_env, &args) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let err = coffer_launcher::exec::exec(&config.rootfs, config.chroot, &plan);
    fail(&err)
}

/// Outside the enclave: replaces this process with Gramine's loader, as the `gramine-sgx`
/// script would, so the container needs no shell. Returns only on failure.
fn start_gramine(ignored_args: &[String]) -> ExitCode {
    use coffer_image::gramine;
    use std::os::unix::process::CommandExt as _;
    if !ignored_args.is_empty() {
        eprintln!(
            "coffer-launcher: ignoring {} argument(s): inside SGX the app's arguments come from \
             the image and the Coordinator's manifest (parameters.argv), which are attested",
            ignored_args.len()
        );
    }
    let argv = gramine::start_argv();
    let host_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let err = std::process::Command::new(&argv[0])
        .arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(gramine::start_env(&host_env))
        .exec();
    eprintln!(
        "coffer-launcher: error: cannot start Gramine's loader {}: {err}; is this an image \
         converted with --tee sgx?",
        argv[0]
    );
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

fn fail(e: &coffer_launcher::Error) -> ExitCode {
    eprintln!("coffer-launcher: error: {e}");
    ExitCode::from(e.exit_status())
}
