//! The Coffer Coordinator: attestation-gated secrets, PKI, sealed state, client API.
//!
//! See [`design`] for the overview and threat model.

#![forbid(unsafe_code)]

pub mod api;
pub mod attest;
pub mod bundle;
pub mod client;
pub mod core;
pub mod design;
pub mod error;
pub mod keyjoin;
pub mod metrics;
pub mod pki;
pub mod platform;
pub mod recovery;
pub mod refusals;
pub mod replica;
pub mod seal;
pub mod secrets;
pub mod serve;
pub mod service_cert;
pub mod state;
pub mod tls;
mod work;

pub use crate::api::router;
pub use crate::core::{Config, Coordinator};
pub use crate::error::{ApiError, Error};
pub use crate::replica::StoreConfig;
pub use crate::serve::serve;
