//! A model of Gramine's policies, for tests on a machine without SGX.
//!
//! Coffer's `--tee sgx` images cannot start an enclave here, so this crate checks them against
//! what Gramine would do: [`image`] holds a converted image's root filesystem as the host sees
//! it, [`policy`] reads its Gramine manifest into the rules Gramine enforces, and [`check`]
//! walks the start (the host loader, the launcher's configuration, reads and writes, the app's
//! exec with its interpreter and libraries) and lists every step Gramine would refuse and
//! every secret that would land on the host's disk.
//!
//! ```
//! use coffer_gramine_model::{image::Image, policy::{Access, Policy}};
//! let mut image = Image::new();
//! image.add_file("/usr/bin/app", b"app", 0o755);
//! image.add_link("/bin", "usr/bin");
//! let policy = Policy::from_manifest(&format!(
//!     "libos.entrypoint = \"/coffer/launcher\"\n\
//!      loader.entrypoint.uri = \"file:/coffer/gramine/lib/libsysdb.so\"\n\
//!      loader.entrypoint.sha256 = \"{z}\"\n\
//!      fs.mounts = [{{ type = \"tmpfs\", path = \"/coffer/tls\" }}]\n\
//!      sgx.trusted_files = [{{ uri = \"file:/usr/bin/app\", sha256 = \"{h}\" }}]\n",
//!     z = "00".repeat(32),
//!     h = "a3da1d4b8f4b4d4e6f3c2a24a6b5a3a2c0d3f66c0d24a1e7a5f3a1c4e0b6d2c7",
//! )).unwrap();
//! // The host follows /bin → usr/bin, but trust is looked up by the path opened.
//! assert_eq!(policy.open(&image, "/bin/app"), Access::Denied);
//! assert!(matches!(policy.create("/coffer/tls/key.pem"), Access::InEnclave(_)));
//! assert_eq!(policy.create("/etc/secret"), Access::Denied);
//! ```

pub mod check;
pub mod image;
pub mod policy;

pub use check::{check_image, Report};

/// Why an image or manifest could not be modelled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file of the image layout failed.
    #[error("reading {0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The image layout or a layer is malformed.
    #[error("image: {0}")]
    Image(String),
    /// The Gramine manifest is malformed or uses what the model does not cover.
    #[error("Gramine manifest: {0}")]
    Manifest(String),
}
