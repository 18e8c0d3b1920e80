//! OCI image reading, writing and conversion into confidential images; trusted-file
//! measurement and file encryption.
//!
//! - [`workload`]: the `/coffer/workload.json` format, the **image measurement** (byte rule in
//!   the module docs) and [`measure_rootfs`], which the launcher uses to check (and, in
//!   simulation, to measure) the root filesystem it runs on.
//! - [`protect`]: the encrypted-file format (AES-256-GCM in authenticated chunks, bound to the
//!   path) used by `coffer convert --encrypt`.
//! - [`paths`]: canonical in-image paths and globs.
//! - `sgx` (feature `sgx`): `convert --tee sgx`, which puts Gramine into the image and renders,
//!   measures and signs its enclave; [`gramine`] says where everything goes.
//!
//! ```
//! use coffer_image::workload::{WorkloadFile, TrustedFile, FORMAT_VERSION};
//! use coffer_image::Digest;
//! let mut wf = WorkloadFile {
//!     format_version: FORMAT_VERSION,
//!     entrypoint: vec!["/bin/app".into()],
//!     cmd: vec![],
//!     env: vec![],
//!     working_dir: String::new(),
//!     user: String::new(),
//!     trusted_files: vec![TrustedFile {
//!         path: "/bin/app".into(),
//!         sha256: Digest::of(b"app"),
//!         size: 3,
//!         mode: 0o755,
//!     }],
//!     symlinks: vec![],
//!     allowed: vec![],
//!     runtime_mounts: vec![],
//!     encrypted_files: vec![],
//!     isv_prod_id: 0,
//!     isv_svn: 0,
//!     image_measurement: Digest::default(),
//!     sgx: None,
//! };
//! wf.seal();
//! assert!(wf.validate().is_ok());
//! ```

pub mod convert;
mod digest;
mod error;
pub mod gramine;
pub mod layout;
pub mod paths;
pub mod protect;
#[cfg(feature = "sgx")]
pub mod sgx;
pub mod tarball;
pub mod workload;

pub use convert::{convert, ConvertOptions, ConvertReport, Limits, Progress};
pub use digest::{Digest, ParseDigestError};
pub use error::Error;
pub use layout::{Format, ImageRef};
pub use workload::{measure_rootfs, Measured, WorkloadFile};
