//! `coffer`: run unmodified container images as confidential containers.
//!
//! This binary is glue: every subcommand parses its flags, calls one library crate and prints
//! the result (text for people, `--json` for scripts). The work lives in the crates.

#![forbid(unsafe_code)]

mod cmd;
mod output;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Run unmodified container images as confidential containers (Intel SGX, TDX), with secrets
/// released only after remote attestation.
///
/// The path of a deployment: `coffer convert` turns an image into a confidential one and prints
/// its measurement; a deployment manifest names the trusted measurements and the secrets each
/// workload gets; `coffer coordinator` serves that manifest and verifies every workload's
/// evidence before it releases anything; `coffer verify` lets anyone check the Coordinator first.
///
/// Machines without TEE hardware use the simulated platform. Simulation is never silent: it must
/// be asked for, and every command that uses it says so.
#[derive(Debug, Parser)]
#[command(
    name = "coffer",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_long_help = "EXAMPLES:
    Run the whole path once, on simulated hardware:
        coffer demo

    Verify an Intel DCAP quote against collateral:
        coffer evidence verify --quote quote.bin --collateral collateral.json

ENVIRONMENT:
    COFFER_LOG    log filter, e.g. `info` or `coffer_coordinator=debug` (default: warn)
    NO_COLOR      if set (to anything), logs have no ANSI colours; they have colours only
                  when stderr is a terminal and NO_COLOR is unset
    Options that can be set by a variable show it as [env: NAME] in their command's help.

EXIT STATUS:
    0 success, 1 refused or failed (the message says why), 2 bad command line.")]
pub(crate) struct Cli {
    /// Print machine-readable JSON on stdout instead of text: results, errors as
    /// {"error": {"kind", "message"}}, and a daemon's listening address (`k8s node-agent`
    /// prints nothing but logs).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole Coffer path end to end on simulated hardware.
    Demo(cmd::demo::DemoArgs),
    /// Convert an OCI/Docker image into a confidential image.
    Convert(cmd::convert::ConvertArgs),
    /// Run a converted image on this machine under runc.
    Run(cmd::run::RunArgs),
    /// Run the Coordinator: attestation-gated secrets, PKI and sealed state.
    Coordinator(cmd::coordinator::CoordinatorArgs),
    /// Check, hash and publish deployment manifests.
    #[command(subcommand, after_help = cmd::manifest::GROUP_HELP)]
    Manifest(cmd::manifest::ManifestCmd),
    /// Parse, verify and simulate TEE evidence (DCAP quotes, SEV-SNP reports).
    #[command(subcommand, after_help = cmd::evidence::GROUP_HELP)]
    Evidence(cmd::evidence::EvidenceCmd),
    /// Predict confidential-VM launch measurements (SEV-SNP MEASUREMENT; TDX MRTD, RTMR1-2).
    #[command(subcommand, after_help = cmd::measure::GROUP_HELP)]
    Measure(cmd::measure::MeasureCmd),
    /// Compute and sign SGX enclave measurements (MRENCLAVE, SIGSTRUCT, MRSIGNER).
    #[command(subcommand, after_help = cmd::sgx::GROUP_HELP)]
    Sgx(cmd::sgx::SgxCmd),
    /// Attest a Coordinator, check its manifest and state, detect rollbacks, write or check
    /// offline verification bundles.
    Verify(cmd::verify::VerifyArgs),
    /// Show a Coordinator's state, manifest hash and simulation flag.
    Status(cmd::client::StatusArgs),
    /// Set and read secrets on a Coordinator (client certificate of a manifest user).
    #[command(subcommand, after_help = cmd::client::SECRET_GROUP_HELP)]
    Secret(cmd::client::SecretCmd),
    /// Bring a Coordinator in recovery mode back with a recovery private key.
    Recover(cmd::client::RecoverArgs),
    /// Read a Coordinator's audit log and check its hash chain.
    #[command(subcommand, after_help = cmd::audit::GROUP_HELP)]
    Audit(cmd::audit::AuditCmd),
    /// Kubernetes: render the Helm chart, serve the admission webhook, run the node agent.
    #[command(subcommand, after_help = cmd::k8s::GROUP_HELP)]
    K8s(cmd::k8s::K8sCmd),
}

/// Options every command can read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Global {
    /// `--json` was given.
    pub(crate) json: bool,
}

fn main() -> ExitCode {
    let cli = parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
    init_logging();
    let global = Global { json: cli.json };
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a, global),
        Command::Convert(a) => cmd::convert::run(a, global),
        Command::Run(a) => cmd::run::run(a, global),
        Command::Coordinator(a) => cmd::coordinator::run(a, global),
        Command::Manifest(c) => cmd::manifest::run(c, global),
        Command::Evidence(c) => cmd::evidence::run(c, global),
        Command::Measure(c) => cmd::measure::run(c, global),
        Command::Sgx(c) => cmd::sgx::run(c, global),
        Command::Verify(a) => cmd::verify::verify(a, global),
        Command::Status(a) => cmd::client::status(a, global),
        Command::Secret(c) => cmd::client::secret(c, global),
        Command::Recover(a) => cmd::client::recover(a, global),
        Command::Audit(c) => cmd::audit::run(c, global),
        Command::K8s(c) => cmd::k8s::run(c, global),
    };
    match result {
        Ok(code) => code,
        Err(err) => output::report_error(&err, global),
    }
}

/// Parses the command line as clap does, then refuses the flag combinations that clap cannot
/// express itself (they depend on a flag's value, or on whether a flag came from the command
/// line rather than the environment) with the same usage error (exit status 2).
fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let refused = match matches.subcommand() {
        Some(("verify", m)) => cmd::verify::bundle_conflict(m).map(|msg| (vec!["verify"], msg)),
        Some(("coordinator", m)) => {
            cmd::coordinator::embedded_store_conflict(m).map(|msg| (vec!["coordinator"], msg))
        }
        Some(("evidence", m)) => match m.subcommand() {
            Some(("sim-quote", m)) => {
                cmd::evidence::sim_quote_conflict(m).map(|msg| (vec!["evidence", "sim-quote"], msg))
            }
            _ => None,
        },
        _ => None,
    };
    // Every client command but verify: a pinned root CA means no attestation.
    let refused = refused.or_else(|| {
        let (mut path, mut leaf) = (Vec::new(), &matches);
        while let Some((name, m)) = leaf.subcommand() {
            path.push(name);
            leaf = m;
        }
        if path == ["verify"] {
            return None;
        }
        cmd::client::pinned_root_conflict(leaf).map(|msg| (path, msg))
    });
    if let Some((path, message)) = refused {
        let mut sub = &mut command;
        for name in path {
            sub = sub
                .find_subcommand_mut(name)
                .expect("the subcommand that was just parsed");
        }
        return Err(sub.error(clap::error::ErrorKind::ArgumentConflict, message));
    }
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colours only for a person at a terminal (and never with NO_COLOR): log files and
    // collectors get plain text.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's EXAMPLES and notes render as written: no line that the 100-column
    /// help would re-wrap, and every example continued with `\` goes on, indented, on the next
    /// line (a single `\` in the source would swallow the line break).
    #[test]
    fn help_texts_render_as_written() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if let Some(text) = cmd.get_after_help() {
                let text = text.to_string();
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in lines.iter().enumerate() {
                    if line.chars().count() > 100 {
                        problems.push(format!("{path}: line longer than 100 columns: {line}"));
                    }
                    let indent = |l: &str| l.len() - l.trim_start().len();
                    if line.ends_with(" \\") {
                        match lines.get(i + 1) {
                            Some(next)
                                if !next.trim().is_empty() && indent(next) >= indent(line) => {}
                            _ => problems.push(format!("{path}: dangling continuation: {line}")),
                        }
                    }
                    if line.trim_start().starts_with("coffer ") && line.contains("\\ ") {
                        problems.push(format!("{path}: swallowed line break: {line}"));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, problems);
            }
        }
        let mut problems = Vec::new();
        walk(&super::Cli::command(), "", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    fn parse(args: &[&str]) -> Result<super::Cli, clap::Error> {
        super::parse(std::iter::once("coffer").chain(args.iter().copied()))
    }

    /// `args` is a usage error (exit status 2) that names `flag`.
    fn assert_conflict(args: &[&str], flag: &str) {
        match parse(args) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    clap::error::ErrorKind::ArgumentConflict,
                    "{args:?}"
                );
                assert_eq!(e.exit_code(), 2);
                assert!(e.to_string().contains(flag), "{e}");
            }
        }
    }

    /// Flag combinations that would otherwise be silently ignored are usage errors (exit
    /// status 2) naming both flags; what does apply stays accepted.
    #[test]
    fn ignored_flag_combinations_are_refused() {
        use clap::error::ErrorKind;
        let refused = |args: &[&str], both: [&str; 2]| {
            let text = match parse(args) {
                Ok(_) => panic!("{args:?} was accepted"),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{args:?}: {e}");
                    assert_eq!(e.exit_code(), 2);
                    e.to_string()
                }
            };
            for flag in both {
                assert!(text.contains(flag), "{args:?}: {text}");
            }
        };
        let secret = ["secret", "set", "s", "--cert", "c.pem", "--key", "k.pem"];
        for pair in [
            ["--file", "--hex"],
            ["--value", "--file"],
            ["--value", "--hex"],
        ] {
            let mut args = secret.to_vec();
            args.extend([pair[0], "v.bin", pair[1], "00"]);
            refused(&args, pair);
        }
        let (m, r) = ("ab".repeat(32), "11".repeat(48));
        let sim = ["evidence", "sim-quote", "--out", "q.bin", "--tee"];
        for (extra, both) in [
            (["tdx", "--mrenclave", &m], ["--mrenclave", "--tee tdx"]),
            (["tdx", "--mrsigner", &m], ["--mrsigner", "--tee tdx"]),
            (
                ["tdx", "--isv-prod-id", "0"],
                ["--isv-prod-id", "--tee tdx"],
            ),
            (["tdx", "--isv-svn", "1"], ["--isv-svn", "--tee tdx"]),
        ] {
            refused(&[&sim[..], &extra[..]].concat(), both);
        }
        for rtmr in ["--mrtd", "--rtmr0", "--rtmr3"] {
            let args = [&sim[..], &["sgx", "--mrenclave", &m, rtmr, &r]].concat();
            refused(&args, [rtmr, "--tee sgx"]);
        }
        let bundle = ["verify", "--bundle", "b.json"];
        for extra in [
            &["--coordinator", "10.0.0.5:4433"][..],
            &["--collateral-dir", "collateral"],
            &["--root-ca-out", "root.pem"],
            &["--known-state", "known.json"],
            &["--no-remember"],
        ] {
            refused(&[&bundle[..], extra].concat(), ["--bundle", extra[0]]);
        }

        let accepted = [
            &[
                "evidence",
                "sim-quote",
                "--tee",
                "tdx",
                "--mrtd",
                &r,
                "--debug",
                "--out",
                "q",
            ][..],
            &[
                "evidence",
                "sim-quote",
                "--tee",
                "sgx",
                "--mrenclave",
                &m,
                "--isv-svn",
                "2",
                "--out",
                "q",
            ],
            &[
                "secret", "set", "s", "--hex", "00", "--cert", "c.pem", "--key", "k.pem",
            ],
            &[
                "verify",
                "--bundle",
                "b.json",
                "--root-ca",
                "root.pem",
                "--expected-mrenclave",
                &m,
            ],
            &[
                "verify",
                "--bundle",
                "b.json",
                "--allow-simulation",
                "--sim-dir",
                "sim",
            ],
            &[
                "verify",
                "--coordinator",
                "10.0.0.5:4433",
                "--collateral-dir",
                "c",
                "--no-remember",
            ],
        ];
        for args in accepted {
            if let Err(e) = parse(args) {
                panic!("{args:?} was refused: {e}");
            }
        }
    }

    /// What `coffer coordinator --help` says a flag needs, clap enforces.
    #[test]
    fn coordinator_flags_that_need_others() {
        use clap::error::ErrorKind;
        for args in [
            &["coordinator", "--data-dir", "d", "--simulation"][..],
            &["coordinator", "--data-dir", "d", "--sim-dir", "sim"],
            &[
                "coordinator",
                "--data-dir",
                "d",
                "--etcd-cert",
                "c.pem",
                "--etcd-key",
                "k.pem",
            ],
            &[
                "coordinator",
                "--data-dir",
                "d",
                "--etcd-cert",
                "c.pem",
                "--etcd-ca",
                "ca.pem",
            ],
            &["coordinator", "--data-dir", "d", "--etcd-key", "k.pem"],
        ] {
            match parse(args) {
                Ok(_) => panic!("{args:?} was accepted"),
                Err(e) => assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{args:?}"),
            }
        }
        // etcd-only flags next to the embedded store would be ignored: refused, naming it.
        for flag in [
            &["--etcd-prefix", "/x"][..],
            &["--replica-name", "r0"],
            &["--join-timeout", "5"],
            &["--accept-tcb-status", "SWHardeningNeeded"],
        ] {
            let mut args = vec!["coordinator", "--data-dir", "d"];
            args.extend(flag);
            assert_conflict(&args, flag[0]);
        }
        // With a pinned root CA nothing is attested: attestation flags would be ignored.
        let pinned = ["status", "--root-ca", "ca.pem"];
        let mrenclave = "ab".repeat(32);
        for flag in [
            &["--expected-mrenclave", mrenclave.as_str()][..],
            &["--allow-simulation", "--sim-dir", "sim"],
            &["--accept-tcb-status", "SWHardeningNeeded"],
        ] {
            let mut args = pinned.to_vec();
            args.extend(flag);
            assert_conflict(&args, flag[0]);
        }
        assert!(parse(&pinned).is_ok());
        let verify = [
            "verify",
            "--root-ca",
            "ca.pem",
            "--expected-mrenclave",
            &mrenclave,
        ];
        assert!(parse(&verify).is_ok());
        let etcd = [
            "coordinator",
            "--data-dir",
            "d",
            "--store",
            "etcd",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
            "--etcd-prefix",
            "/x",
            "--replica-name",
            "r0",
        ];
        assert!(parse(&etcd).is_ok());
    }
}
