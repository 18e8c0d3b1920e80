//! `coffer manifest …`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::Global;

/// Subcommands of `coffer manifest`.
#[derive(Debug, Subcommand)]
pub(crate) enum ManifestCmd {}

/// Runs `coffer manifest …`.
pub(crate) fn run(cmd: ManifestCmd, _global: Global) -> anyhow::Result<ExitCode> {
    match cmd {}
}
