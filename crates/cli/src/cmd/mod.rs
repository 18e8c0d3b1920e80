//! One module per subcommand family; each exposes its clap arguments and a `run` function.

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
pub(crate) mod run;
pub(crate) mod sgx;
pub(crate) mod verify;
