//! One module per subcommand family; each exposes its clap arguments and a `run` function.

/// What every `--collateral-dir` reads (`coffer evidence verify`, `coffer coordinator` and the
/// client commands), so their help says the same thing; the lookup is
/// `coffer_coordinator::platform::offline_collateral_file`, then the `coffer-pccs` offline layout.
macro_rules! collateral_dir_layout {
    () => {
        "DIR/<fmspc>.json (FMSPC in lower-case hex), else DIR/collateral.json (a collateral JSON, \
         the dcap-qvl shape), else the --pccs-cache layout of `coffer evidence verify` (one file \
         per item)"
    };
}

pub(crate) mod audit;
pub(crate) mod client;
pub(crate) mod convert;
pub(crate) mod coordinator;
pub(crate) mod demo;
pub(crate) mod evidence;
pub(crate) mod k8s;
pub(crate) mod known;
pub(crate) mod launcher_binary;
pub(crate) mod manifest;
pub(crate) mod measure;
pub(crate) mod registry;
pub(crate) mod run;
pub(crate) mod sgx;
pub(crate) mod verify;
