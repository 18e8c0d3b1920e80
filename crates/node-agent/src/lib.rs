//! Coffer's node agent (one binary, run as a DaemonSet on SGX nodes).
//!
//! - [`epc`]: reads the EPC sections from CPUID leaf 0x12 and publishes their total size as the
//!   Node's `sgx.intel.com/epc` capacity through the API server.
//! - [`agent`]: the run loop of the DaemonSet (`run`): keeps the EPC capacity published.
//! - [`device_plugin`]: the kubelet device plugin API `v1beta1` over gRPC on Unix sockets, one
//!   server per resource (`sgx.intel.com/enclave`, `sgx.intel.com/provision`).
#![forbid(unsafe_code)]

pub mod agent;
pub mod device_plugin;
pub mod epc;
mod error;

pub use error::Error;
