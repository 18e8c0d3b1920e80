//! `coffer`: run unmodified container images as confidential containers.
//!
//! This binary is glue: every subcommand parses its flags, calls one library crate and prints
//! the result (text for people, `--json` for scripts). The work lives in the crates.

#![forbid(unsafe_code)]

mod cmd;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    #[command(subcommand)]
    Manifest(cmd::manifest::ManifestCmd),
    /// Parse, verify and simulate TEE evidence (DCAP quotes).
    #[command(subcommand)]
    Evidence(cmd::evidence::EvidenceCmd),
    /// Compute and sign SGX enclave measurements (MRENCLAVE, SIGSTRUCT, MRSIGNER).
    #[command(subcommand)]
    Sgx(cmd::sgx::SgxCmd),
    /// Attest a Coordinator, check its manifest and state, detect rollbacks, write or check
    /// offline verification bundles.
    Verify(cmd::verify::VerifyArgs),
    /// Show a Coordinator's state, manifest hash and simulation flag.
    Status(cmd::client::StatusArgs),
    /// Set and read secrets on a Coordinator (client certificate of a manifest user).
    #[command(subcommand)]
    Secret(cmd::client::SecretCmd),
    /// Bring a Coordinator in recovery mode back with a recovery private key.
    Recover(cmd::client::RecoverArgs),
    /// Read a Coordinator's audit log and check its hash chain.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCmd),
    /// Kubernetes: render the Helm chart, serve the admission webhook, run the node agent.
    #[command(subcommand)]
    K8s(cmd::k8s::K8sCmd),
}

/// Options every command can read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Global {
    /// `--json` was given.
    pub(crate) json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let global = Global { json: cli.json };
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a, global),
        Command::Convert(a) => cmd::convert::run(a, global),
        Command::Run(a) => cmd::run::run(a, global),
        Command::Coordinator(a) => cmd::coordinator::run(a, global),
        Command::Manifest(c) => cmd::manifest::run(c, global),
        Command::Evidence(c) => cmd::evidence::run(c, global),
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
}
