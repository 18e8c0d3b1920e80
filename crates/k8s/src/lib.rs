//! Coffer on Kubernetes.
//!
//! - [`webhook`]: the mutating admission webhook that turns a pod labelled for Coffer into a
//!   confidential one (launcher environment, SGX resources, quote provider, runtime class).
//! - [`chart`]: the Helm chart's manifests, rendered without Helm by `coffer k8s render`.
#![forbid(unsafe_code)]

pub mod chart;
mod error;
pub mod webhook;

pub use error::Error;
