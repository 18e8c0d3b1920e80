//! `coffer evidence …`: parse, verify and simulate DCAP quotes.

use std::process::ExitCode;

use clap::Subcommand;

use crate::Global;

/// Subcommands of `coffer evidence`.
#[derive(Debug, Subcommand)]
pub(crate) enum EvidenceCmd {}

/// Runs `coffer evidence …`.
pub(crate) fn run(cmd: EvidenceCmd, _global: Global) -> anyhow::Result<ExitCode> {
    match cmd {}
}
