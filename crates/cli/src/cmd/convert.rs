//! `coffer convert`.

use std::process::ExitCode;

use clap::Args;

use crate::Global;

/// Arguments of `coffer convert`.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {}

/// Runs `coffer convert`.
pub(crate) fn run(_args: ConvertArgs, _global: Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`coffer convert` is not built yet")
}
