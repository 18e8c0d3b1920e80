//! `coffer run`.

use std::process::ExitCode;

use clap::Args;

use crate::Global;

/// Arguments of `coffer run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {}

/// Runs `coffer run`.
pub(crate) fn run(_args: RunArgs, _global: Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`coffer run` is not built yet")
}
