//! `coffer sgx …`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::Global;

/// Subcommands of `coffer sgx`.
#[derive(Debug, Subcommand)]
pub(crate) enum SgxCmd {}

/// Runs `coffer sgx …`.
pub(crate) fn run(cmd: SgxCmd, _global: Global) -> anyhow::Result<ExitCode> {
    match cmd {}
}
