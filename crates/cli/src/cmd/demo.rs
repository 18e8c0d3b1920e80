//! `coffer demo`.

use std::process::ExitCode;

use clap::Args;

use crate::Global;

/// Arguments of `coffer demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {}

/// Runs `coffer demo`.
pub(crate) fn run(_args: DemoArgs, _global: Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`coffer demo` is not built yet")
}
