//! `coffer coordinator`.

use std::process::ExitCode;

use clap::Args;

use crate::Global;

/// Arguments of `coffer coordinator`.
#[derive(Debug, Args)]
pub(crate) struct CoordinatorArgs {}

/// Runs `coffer coordinator`.
pub(crate) fn run(_args: CoordinatorArgs, _global: Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`coffer coordinator` is not built yet")
}
