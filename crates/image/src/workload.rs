//! `/coffer/workload.json`: what `coffer convert` records about an image, and the **image
//! measurement** that pins it.
//!
//! The launcher reads this file at start, verifies the trusted files against it and execs the
//! original entrypoint it names. In simulation the launcher recomputes the measurement from the
//! files as it finds them ([`measure_rootfs`]) and uses it as the simulated MRENCLAVE, so a
//! manifest package `{"mrenclave": "<image measurement>"}` pins the image and any tampering
//! (of a trusted file, a link, an encrypted file's ciphertext, or of this file's own
//! entrypoint/env/policy fields) changes the measurement and is refused by the Coordinator.
//!
//! # The image measurement, byte by byte (format version 1)
//!
//! Notation: `u16be`/`u32be`/`u64be` are big-endian integers; `str(s)` is `u32be(len(s)) || s`
//! (UTF-8 bytes); `list(xs)` is `u32be(count) || str(x0) || str(x1) …`; `H` is SHA-256.
//!
//! 1. **Records.** One record per trusted file, symlink and encrypted file; paths are canonical
//!    (absolute, no `.`/`..`/empty components, see [`crate::paths`]) and unique across all three
//!    lists. Encodings:
//!    - trusted file: `0x01 || str(path) || u64be(size) || u32be(mode & 0o7777) || sha256(content)`
//!    - symlink: `0x02 || str(path) || str(target)` (the target exactly as stored)
//!    - encrypted file: `0x03 || str(path) || u64be(size) || u32be(mode & 0o7777) ||
//!      sha256(ciphertext)` (size and hash are those of the protected file as stored in the
//!      image, see [`crate::protect`]; the plaintext's hash is not recorded, so the image does
//!      not leak a confirmable hash of a secret file)
//!    - only produced by [`measure_rootfs`] when a recorded path is absent or of another type:
//!      `0x04 || str(path) || str(what was found)`, which can never equal a recorded value.
//! 2. **Sorting.** All records are sorted by the bytes of their path (plain byte order, so
//!    `/a/b` < `/a0`; the same order as `[u8]::cmp`).
//! 3. **Merkle root** over the sorted records, exactly as RFC 6962 §2.1: leaf hash
//!    `H(0x00 || record)`, interior node `H(0x01 || left || right)`, the left subtree holding the
//!    largest power of two strictly below `n` leaves; the root of an empty list is `H("")`.
//!    A Merkle root (rather than one flat hash) lets a later version prove a single file against
//!    the measurement without the whole list (Gramine issues show 20–30k-entry images).
//! 4. **Measurement** = `H("coffer-image-measurement/v1" || 0x00 || u32be(format_version) ||
//!    list(entrypoint) || list(cmd) || list(env) || str(working_dir) || str(user) ||
//!    list(allowed) || list(runtime_mounts) || u16be(isv_prod_id) || u16be(isv_svn) || root)`.
//!    The original command line, environment and policy are part of it: the launcher obeys
//!    them, so changing them must change the measurement.
//!
//! Not covered: owners (uid/gid, which rootless unpacking changes), timestamps, directories
//! (their existence follows from the files), files that match neither the trusted set nor a
//! record (e.g. `--allowed` or runtime-mounted paths), and `/coffer/workload.json` itself
//! (whose meaningful content is covered by the fields above). The `sgx` section is derived from
//! the measurement and so is not an input to it.

use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::paths;
use crate::{Digest, Error};

/// Path of the workload file inside the converted image.
pub const WORKLOAD_PATH: &str = "/coffer/workload.json";
/// Path of the launcher binary inside the converted image.
pub const LAUNCHER_PATH: &str = "/coffer/launcher";
/// The only format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest workload file the launcher should accept (64 MiB: ~300k records).
pub const MAX_WORKLOAD_FILE: u64 = 64 << 20;

/// Paths that container runtimes mount over the image at start (so their image content is
/// never what the process sees) and that are therefore never hashed.
pub const DEFAULT_RUNTIME_MOUNTS: &[&str] = &[
    "/dev",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/proc",
    "/run/secrets",
    "/sys",
];

/// The content of `/coffer/workload.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFile {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The original image's `Entrypoint` (may be empty).
    pub entrypoint: Vec<String>,
    /// The original image's `Cmd` (may be empty). The program run is `entrypoint ++ cmd` in
    /// full (unlike GSC, which drops `cmd[0]` when the entrypoint has several elements); an
    /// orchestrator's `args:` replace `cmd`.
    pub cmd: Vec<String>,
    /// The original image's `Env` (`NAME=value` strings).
    pub env: Vec<String>,
    /// The original image's `WorkingDir` (empty = `/`).
    pub working_dir: String,
    /// The original image's `User` (empty = root), as written in the config (`uid[:gid]` or a
    /// name resolved by the runtime).
    pub user: String,
    /// Files the launcher verifies before exec, sorted by path.
    pub trusted_files: Vec<TrustedFile>,
    /// Symbolic links in the image, sorted by path.
    pub symlinks: Vec<Symlink>,
    /// Globs of paths that are writable or untrusted: never hashed, accessible unverified.
    pub allowed: Vec<String>,
    /// Paths mounted over the image at run time, never hashed (see [`DEFAULT_RUNTIME_MOUNTS`]).
    pub runtime_mounts: Vec<String>,
    /// Files stored encrypted ([`crate::protect`] format), sorted by path; the launcher
    /// decrypts them with the manifest secret `image_key` after activation.
    pub encrypted_files: Vec<EncryptedFile>,
    /// ISVPRODID the simulated platform reports for this image (and the SGX build signs).
    pub isv_prod_id: u16,
    /// ISVSVN the simulated platform reports for this image (and the SGX build signs).
    pub isv_svn: u16,
    /// The image measurement: [`WorkloadFile::measurement`] of the fields above.
    pub image_measurement: Digest,
    /// SGX results recorded by a caller that signs the enclave elsewhere
    /// ([`crate::ConvertOptions::sgx`]). `convert --tee sgx` leaves it empty: its Gramine
    /// manifest pins this file's SHA-256, so the file cannot also carry the MRENCLAVE (that goes
    /// into the image labels instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgx: Option<SgxInfo>,
}

/// One trusted regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedFile {
    /// Canonical absolute path.
    pub path: String,
    /// SHA-256 of the content.
    pub sha256: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
}

/// One symbolic link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    /// Canonical absolute path of the link.
    pub path: String,
    /// The target exactly as stored in the layer.
    pub target: String,
}

/// One file stored encrypted in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedFile {
    /// Canonical absolute path (also the path the encryption is bound to).
    pub path: String,
    /// SHA-256 of the protected (encrypted) file as stored.
    pub sha256: Digest,
    /// Size of the protected file as stored.
    pub size: u64,
    /// Permission bits to give the decrypted file.
    pub mode: u32,
    /// For Gramine's format (`--encrypt --tee sgx`): [`crate::protect::Key::plaintext_mac`]
    /// of the plaintext, which the launcher checks through the encrypted mount. Absent for
    /// Coffer's own format, which the launcher decrypts itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_mac: Option<Digest>,
}

/// What `convert --tee sgx` computed for the enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgxInfo {
    /// MRENCLAVE of the Gramine enclave.
    pub mrenclave: Digest,
    /// MRSIGNER (SHA-256 of the signing key's modulus).
    pub mrsigner: Digest,
}

/// The result of measuring a root filesystem against a workload file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// The image measurement of the files as found (equal to the recorded one iff nothing
    /// differs).
    pub measurement: Digest,
    /// Every record the disk does not match, in path order.
    pub differences: Vec<Difference>,
}

impl Measured {
    /// Turns the first difference into [`Error::TrustedFileMismatch`]; `Ok` when none.
    pub fn check(&self) -> Result<(), Error> {
        match self.differences.first() {
            None => Ok(()),
            Some(d) => Err(Error::TrustedFileMismatch {
                path: d.path.clone(),
                difference: d.what.to_string(),
            }),
        }
    }
}

/// One path whose state on disk differs from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path inside the root filesystem.
    pub path: String,
    /// What differs.
    pub what: DifferenceKind,
}

/// What differs between a record and the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DifferenceKind {
    /// Nothing at that path.
    Missing,
    /// Something of another type (directory, link, device…) at that path.
    WrongType {
        /// What was found.
        found: &'static str,
    },
    /// Different content.
    Content {
        /// Recorded SHA-256.
        expected: Digest,
        /// SHA-256 on disk.
        found: Digest,
    },
    /// Different size.
    Size {
        /// Recorded size.
        expected: u64,
        /// Size on disk.
        found: u64,
    },
    /// Different permission bits.
    Mode {
        /// Recorded mode.
        expected: u32,
        /// Mode on disk.
        found: u32,
    },
    /// A symlink pointing elsewhere.
    LinkTarget {
        /// Recorded target.
        expected: String,
        /// Target on disk.
        found: String,
    },
}

impl std::fmt::Display for DifferenceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DifferenceKind::Missing => f.write_str("missing"),
            DifferenceKind::WrongType { found } => write!(f, "expected a file, found a {found}"),
            DifferenceKind::Content { expected, found } => {
                write!(f, "content sha256 {found}, expected {expected}")
            }
            DifferenceKind::Size { expected, found } => {
                write!(f, "size {found}, expected {expected}")
            }
            DifferenceKind::Mode { expected, found } => {
                write!(f, "mode {found:o}, expected {expected:o}")
            }
            DifferenceKind::LinkTarget { expected, found } => {
                write!(f, "link target {found:?}, expected {expected:?}")
            }
        }
    }
}

/// One measurement record as the byte rule in the module docs encodes it.
#[derive(Debug, Clone)]
enum Record<'a> {
    File {
        path: &'a str,
        size: u64,
        mode: u32,
        sha256: Digest,
    },
    Link {
        path: &'a str,
        target: Cow<'a, str>,
    },
    Encrypted {
        path: &'a str,
        size: u64,
        mode: u32,
        sha256: Digest,
    },
    Absent {
        path: &'a str,
        found: &'static str,
    },
}

impl Record<'_> {
    fn path(&self) -> &str {
        match self {
            Record::File { path, .. }
            | Record::Link { path, .. }
            | Record::Encrypted { path, .. }
            | Record::Absent { path, .. } => path,
        }
    }

    fn leaf(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0x00]);
        match self {
            Record::File {
                path,
                size,
                mode,
                sha256,
            } => {
                h.update([0x01]);
                put_str(&mut h, path);
                h.update(size.to_be_bytes());
                h.update((mode & 0o7777).to_be_bytes());
                h.update(sha256.0);
            }
            Record::Link { path, target } => {
                h.update([0x02]);
                put_str(&mut h, path);
                put_str(&mut h, target);
            }
            Record::Encrypted {
                path,
                size,
                mode,
                sha256,
            } => {
                h.update([0x03]);
                put_str(&mut h, path);
                h.update(size.to_be_bytes());
                h.update((mode & 0o7777).to_be_bytes());
                h.update(sha256.0);
            }
            Record::Absent { path, found } => {
                h.update([0x04]);
                put_str(&mut h, path);
                put_str(&mut h, found);
            }
        }
        h.finalize().into()
    }
}

fn put_str(h: &mut Sha256, s: &str) {
    // Lengths are bounded by validation (paths ≤ 4096, the whole file ≤ 64 MiB).
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

fn put_list(h: &mut Sha256, xs: &[String]) {
    h.update((xs.len() as u32).to_be_bytes());
    for x in xs {
        put_str(h, x);
    }
}

/// RFC 6962 Merkle tree hash over leaf hashes.
fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = if n.is_power_of_two() {
                n / 2
            } else {
                1usize << (usize::BITS - 1 - n.leading_zeros())
            };
            let (l, r) = leaves.split_at(k);
            let mut h = Sha256::new();
            h.update([0x01]);
            h.update(merkle_root(l));
            h.update(merkle_root(r));
            h.finalize().into()
        }
    }
}

impl WorkloadFile {
    /// The image measurement of this file's records and fields (module docs give the bytes).
    /// Records must be sorted and unique, as [`WorkloadFile::validate`] checks.
    pub fn measurement(&self) -> Digest {
        let mut recs: Vec<Record<'_>> = self.records();
        recs.sort_by(|a, b| a.path().as_bytes().cmp(b.path().as_bytes()));
        self.measurement_over(&recs)
    }

    fn records(&self) -> Vec<Record<'_>> {
        let mut recs = Vec::with_capacity(
            self.trusted_files.len() + self.symlinks.len() + self.encrypted_files.len(),
        );
        recs.extend(self.trusted_files.iter().map(|f| Record::File {
            path: &f.path,
            size: f.size,
            mode: f.mode,
            sha256: f.sha256,
        }));
        recs.extend(self.symlinks.iter().map(|l| Record::Link {
            path: &l.path,
            target: Cow::Borrowed(&l.target),
        }));
        recs.extend(self.encrypted_files.iter().map(|f| Record::Encrypted {
            path: &f.path,
            size: f.size,
            mode: f.mode,
            sha256: f.sha256,
        }));
        recs
    }

    fn measurement_over(&self, sorted: &[Record<'_>]) -> Digest {
        let leaves: Vec<[u8; 32]> = sorted.iter().map(Record::leaf).collect();
        let root = merkle_root(&leaves);
        let mut h = Sha256::new();
        h.update(b"coffer-image-measurement/v1\0");
        h.update(self.format_version.to_be_bytes());
        put_list(&mut h, &self.entrypoint);
        put_list(&mut h, &self.cmd);
        put_list(&mut h, &self.env);
        put_str(&mut h, &self.working_dir);
        put_str(&mut h, &self.user);
        put_list(&mut h, &self.allowed);
        put_list(&mut h, &self.runtime_mounts);
        h.update(self.isv_prod_id.to_be_bytes());
        h.update(self.isv_svn.to_be_bytes());
        h.update(root);
        Digest(h.finalize().into())
    }

    /// Sorts the record lists by path and sets `image_measurement`; used by the converter after
    /// filling the fields.
    pub fn seal(&mut self) {
        self.trusted_files.sort_by(|a, b| a.path.cmp(&b.path));
        self.symlinks.sort_by(|a, b| a.path.cmp(&b.path));
        self.encrypted_files.sort_by(|a, b| a.path.cmp(&b.path));
        self.image_measurement = self.measurement();
    }

    /// Checks the file is well formed: known version, canonical unique sorted paths, sane
    /// modes, and a measurement that matches the records.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Error::InvalidWorkload(m);
        if self.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} (this build reads version {FORMAT_VERSION}; use a matching coffer)",
                self.format_version
            )));
        }
        let ctx = "workload.json";
        let mut all: Vec<&str> = Vec::new();
        for (list, paths) in [
            (
                "trusted_files",
                self.trusted_files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>(),
            ),
            (
                "symlinks",
                self.symlinks.iter().map(|f| f.path.as_str()).collect(),
            ),
            (
                "encrypted_files",
                self.encrypted_files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect(),
            ),
        ] {
            for w in paths.windows(2) {
                if w[0] >= w[1] {
                    return Err(bad(format!(
                        "{list} not sorted or duplicated at {:?}",
                        w[1]
                    )));
                }
            }
            for p in &paths {
                paths::check_canonical(p, ctx)?;
                if *p == "/" {
                    return Err(bad(format!("{list} names the root directory")));
                }
            }
            all.extend(paths);
        }
        all.sort_unstable();
        for w in all.windows(2) {
            if w[0] == w[1] {
                return Err(bad(format!("{:?} is recorded twice", w[0])));
            }
        }
        for m in &self.runtime_mounts {
            paths::check_canonical(m, ctx)?;
        }
        for f in &self.trusted_files {
            if f.mode > 0o7777 {
                return Err(bad(format!(
                    "{}: mode {:o} has bits beyond 0o7777",
                    f.path, f.mode
                )));
            }
        }
        for f in &self.encrypted_files {
            if f.mode > 0o7777 {
                return Err(bad(format!(
                    "{}: mode {:o} has bits beyond 0o7777",
                    f.path, f.mode
                )));
            }
        }
        for l in &self.symlinks {
            if l.target.is_empty() || l.target.contains('\0') {
                return Err(bad(format!("{}: empty or NUL link target", l.path)));
            }
        }
        let m = self.measurement();
        if m != self.image_measurement {
            return Err(bad(format!(
                "image_measurement {} does not match its records ({m})",
                self.image_measurement
            )));
        }
        Ok(())
    }

    /// Parses and validates a workload file (at most [`MAX_WORKLOAD_FILE`] bytes).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() as u64 > MAX_WORKLOAD_FILE {
            return Err(Error::LimitExceeded {
                what: "workload.json".into(),
                limit: MAX_WORKLOAD_FILE,
                hint: "the file is not one `coffer convert` wrote",
            });
        }
        let wf: WorkloadFile =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidWorkload(e.to_string()))?;
        wf.validate()?;
        Ok(wf)
    }

    /// Canonical JSON (pretty, fields in declaration order) as written into the image.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The program to exec: `entrypoint ++ cmd`, or `entrypoint ++ args` when the orchestrator
    /// overrides the arguments.
    pub fn argv(&self, args_override: Option<&[String]>) -> Vec<String> {
        let mut argv = self.entrypoint.clone();
        argv.extend_from_slice(args_override.unwrap_or(&self.cmd));
        argv
    }
}

/// What a record's path holds on disk.
enum Found {
    File {
        size: u64,
        mode: u32,
        sha256: Digest,
    },
    Link {
        target: String,
    },
    Absent(&'static str),
}

/// Recomputes the image measurement of `wf`'s records from the files under `root` (the
/// unpacked root filesystem), and lists every record the disk does not match.
///
/// Never follows a symlink: a record's parent components must be real directories inside
/// `root` (an intermediate symlink is refused with [`Error::UnsafePath`], as it could point
/// outside the root), and the final component is examined with `lstat` and, for files, opened
/// and re-checked (same inode) before hashing. Files are hashed on all available cores.
///
/// `wf` is validated first ([`WorkloadFile::validate`]); the caller must treat the result's
/// measurement, not `wf.image_measurement`, as what is on disk.
pub fn measure_rootfs(root: &Path, wf: &WorkloadFile) -> Result<Measured, Error> {
    wf.validate()?;
    let root_meta = fs::metadata(root).map_err(|e| Error::io("reading", root, e))?;
    if !root_meta.is_dir() {
        return Err(Error::io(
            "reading",
            root,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "the root is not a directory",
            ),
        ));
    }
    // Parent directories are checked once each.
    let mut parents: Vec<&str> = wf
        .trusted_files
        .iter()
        .map(|f| paths::parent(&f.path))
        .chain(wf.symlinks.iter().map(|l| paths::parent(&l.path)))
        .chain(wf.encrypted_files.iter().map(|f| paths::parent(&f.path)))
        .collect();
    parents.sort_unstable();
    parents.dedup();
    let mut checked_dirs: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut missing_dirs: std::collections::HashSet<String> = std::collections::HashSet::new();
    for p in parents {
        check_parents(root, p, &mut checked_dirs, &mut missing_dirs)?;
    }

    // Work items: (index into a combined list, host path, is_link).
    enum Item<'a> {
        File(&'a str),
        Link(&'a str),
    }
    let items: Vec<Item<'_>> = wf
        .trusted_files
        .iter()
        .map(|f| Item::File(&f.path))
        .chain(wf.symlinks.iter().map(|l| Item::Link(&l.path)))
        .chain(wf.encrypted_files.iter().map(|f| Item::File(&f.path)))
        .collect();
    let results: Vec<Mutex<Option<Result<Found, Error>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = match item {
                    Item::File(p) if missing_dirs.contains(paths::parent(p)) => {
                        Ok(Found::Absent("missing"))
                    }
                    Item::Link(p) if missing_dirs.contains(paths::parent(p)) => {
                        Ok(Found::Absent("missing"))
                    }
                    Item::File(p) => examine_file(&host_path(root, p)),
                    Item::Link(p) => examine_link(&host_path(root, p)),
                };
                if let Some(slot) = results.get(i) {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    let mut found: Vec<Found> = Vec::with_capacity(items.len());
    for slot in results {
        let r = slot.into_inner().unwrap_or_else(|e| e.into_inner());
        match r {
            Some(r) => found.push(r?),
            None => return Err(Error::InvalidWorkload("internal: unmeasured record".into())),
        }
    }

    let mut recs: Vec<Record<'_>> = Vec::with_capacity(found.len());
    let mut differences = Vec::new();
    let mut it = found.into_iter();
    for f in &wf.trusted_files {
        let got = it.next().unwrap_or(Found::Absent("missing"));
        recs.push(compare_file(
            &f.path,
            f.size,
            f.mode,
            f.sha256,
            got,
            false,
            &mut differences,
        ));
    }
    for l in &wf.symlinks {
        match it.next().unwrap_or(Found::Absent("missing")) {
            Found::Link { target } => {
                if target != l.target {
                    differences.push(Difference {
                        path: l.path.clone(),
                        what: DifferenceKind::LinkTarget {
                            expected: l.target.clone(),
                            found: target.clone(),
                        },
                    });
                }
                recs.push(Record::Link {
                    path: &l.path,
                    target: Cow::Owned(target),
                });
            }
            Found::File { .. } => {
                differences.push(Difference {
                    path: l.path.clone(),
                    what: DifferenceKind::WrongType {
                        found: "regular file",
                    },
                });
                recs.push(Record::Absent {
                    path: &l.path,
                    found: "regular file",
                });
            }
            Found::Absent(what) => {
                differences.push(Difference {
                    path: l.path.clone(),
                    what: absent_kind(what),
                });
                recs.push(Record::Absent {
                    path: &l.path,
                    found: what,
                });
            }
        }
    }
    for f in &wf.encrypted_files {
        let got = it.next().unwrap_or(Found::Absent("missing"));
        recs.push(compare_file(
            &f.path,
            f.size,
            f.mode,
            f.sha256,
            got,
            true,
            &mut differences,
        ));
    }
    differences.sort_by(|a, b| a.path.cmp(&b.path));
    recs.sort_by(|a, b| a.path().as_bytes().cmp(b.path().as_bytes()));
    Ok(Measured {
        measurement: wf.measurement_over(&recs),
        differences,
    })
}

fn absent_kind(what: &'static str) -> DifferenceKind {
    if what == "missing" {
        DifferenceKind::Missing
    } else {
        DifferenceKind::WrongType { found: what }
    }
}

fn compare_file<'a>(
    path: &'a str,
    size: u64,
    mode: u32,
    sha256: Digest,
    got: Found,
    encrypted: bool,
    differences: &mut Vec<Difference>,
) -> Record<'a> {
    match got {
        Found::File {
            size: fsize,
            mode: fmode,
            sha256: fsha,
        } => {
            let what = if fsha != sha256 {
                Some(DifferenceKind::Content {
                    expected: sha256,
                    found: fsha,
                })
            } else if fsize != size {
                Some(DifferenceKind::Size {
                    expected: size,
                    found: fsize,
                })
            } else if fmode != mode {
                Some(DifferenceKind::Mode {
                    expected: mode,
                    found: fmode,
                })
            } else {
                None
            };
            if let Some(what) = what {
                differences.push(Difference {
                    path: path.to_string(),
                    what,
                });
            }
            if encrypted {
                Record::Encrypted {
                    path,
                    size: fsize,
                    mode: fmode,
                    sha256: fsha,
                }
            } else {
                Record::File {
                    path,
                    size: fsize,
                    mode: fmode,
                    sha256: fsha,
                }
            }
        }
        Found::Link { .. } => {
            differences.push(Difference {
                path: path.to_string(),
                what: DifferenceKind::WrongType { found: "symlink" },
            });
            Record::Absent {
                path,
                found: "symlink",
            }
        }
        Found::Absent(what) => {
            differences.push(Difference {
                path: path.to_string(),
                what: absent_kind(what),
            });
            Record::Absent { path, found: what }
        }
    }
}

/// `root` joined with a canonical image path.
fn host_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Checks every component of the canonical directory `dir` (and its ancestors) is a real
/// directory under `root`, not a symlink. A missing directory is remembered (its records are
/// reported missing); a symlink is an error.
fn check_parents(
    root: &Path,
    dir: &str,
    checked: &mut std::collections::HashSet<String>,
    missing: &mut std::collections::HashSet<String>,
) -> Result<(), Error> {
    if dir == "/" || checked.contains(dir) {
        return Ok(());
    }
    let up = paths::parent(dir);
    check_parents(root, up, checked, missing)?;
    if missing.contains(up) {
        missing.insert(dir.to_string());
        return Ok(());
    }
    let hp = host_path(root, dir);
    match fs::symlink_metadata(&hp) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::UnsafePath {
                path: dir.to_string(),
                context: format!("root filesystem {}", root.display()),
                reason:
                    "is a symlink where the image has a directory (it could point outside the root)",
            })
        }
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            missing.insert(dir.to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            missing.insert(dir.to_string());
        }
        Err(e) => return Err(Error::io("reading", hp, e)),
    }
    checked.insert(dir.to_string());
    Ok(())
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else {
        "regular file"
    }
}

fn examine_file(hp: &Path) -> Result<Found, Error> {
    let meta = match fs::symlink_metadata(hp) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Absent("missing")),
        Err(e) => return Err(Error::io("reading", hp, e)),
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(hp).map_err(|e| Error::io("reading link", hp, e))?;
        return Ok(Found::Link {
            target: target.to_string_lossy().into_owned(),
        });
    }
    if !ft.is_file() {
        return Ok(Found::Absent(kind_name(&ft)));
    }
    let mut file = fs::File::open(hp).map_err(|e| Error::io("opening", hp, e))?;
    let opened = file.metadata().map_err(|e| Error::io("reading", hp, e))?;
    if opened.ino() != meta.ino() || opened.dev() != meta.dev() || !opened.is_file() {
        return Err(Error::io(
            "reading",
            hp,
            std::io::Error::other("the file was replaced while it was being measured"),
        ));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("reading", hp, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(Found::File {
        size,
        mode: opened.permissions().mode() & 0o7777,
        sha256: Digest(h.finalize().into()),
    })
}

fn examine_link(hp: &Path) -> Result<Found, Error> {
    match fs::symlink_metadata(hp) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(hp).map_err(|e| Error::io("reading link", hp, e))?;
            Ok(Found::Link {
                target: target.to_string_lossy().into_owned(),
            })
        }
        Ok(m) if m.is_file() => Ok(Found::File {
            size: 0,
            mode: 0,
            sha256: Digest::default(),
        }),
        Ok(m) => Ok(Found::Absent(kind_name(&m.file_type()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Absent("missing")),
        Err(e) => Err(Error::io("reading", hp, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn sample(root: &Path) -> WorkloadFile {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc/app")).unwrap();
        fs::write(root.join("bin/app"), b"#!app").unwrap();
        fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("etc/app/conf"), b"x=1").unwrap();
        fs::set_permissions(root.join("etc/app/conf"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(root.join("etc/app/secret"), b"CIPHERTEXT").unwrap();
        fs::set_permissions(
            root.join("etc/app/secret"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        symlink("app", root.join("bin/sh")).unwrap();
        let mut wf = WorkloadFile {
            format_version: FORMAT_VERSION,
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: "/".into(),
            user: "1000".into(),
            trusted_files: vec![
                TrustedFile {
                    path: "/etc/app/conf".into(),
                    sha256: Digest::of(b"x=1"),
                    size: 3,
                    mode: 0o644,
                },
                TrustedFile {
                    path: "/bin/app".into(),
                    sha256: Digest::of(b"#!app"),
                    size: 5,
                    mode: 0o755,
                },
            ],
            symlinks: vec![Symlink {
                path: "/bin/sh".into(),
                target: "app".into(),
            }],
            allowed: vec!["/tmp".into()],
            runtime_mounts: DEFAULT_RUNTIME_MOUNTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            encrypted_files: vec![EncryptedFile {
                path: "/etc/app/secret".into(),
                sha256: Digest::of(b"CIPHERTEXT"),
                size: 10,
                mode: 0o600,
                plaintext_mac: None,
            }],
            isv_prod_id: 1,
            isv_svn: 2,
            image_measurement: Digest::default(),
            sgx: None,
        };
        wf.seal();
        wf
    }

    #[test]
    fn merkle_root_follows_rfc6962_shape() {
        let l: Vec<[u8; 32]> = (0u8..3).map(|i| [i; 32]).collect();
        let node = |a: [u8; 32], b: [u8; 32]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update([1]);
            h.update(a);
            h.update(b);
            h.finalize().into()
        };
        assert_eq!(merkle_root(&l), node(node(l[0], l[1]), l[2]));
        assert_eq!(merkle_root(&l[..1]), l[0]);
        let five: Vec<[u8; 32]> = (0u8..5).map(|i| [i; 32]).collect();
        let left = node(node(five[0], five[1]), node(five[2], five[3]));
        assert_eq!(merkle_root(&five), node(left, five[4]));
        assert_eq!(merkle_root(&[]), <[u8; 32]>::from(Sha256::digest([])));
    }

    #[test]
    fn measure_rootfs_matches_untouched_tree() {
        let d = tempfile::tempdir().unwrap();
        let wf = sample(d.path());
        let m = measure_rootfs(d.path(), &wf).unwrap();
        assert_eq!(m.differences, vec![]);
        assert_eq!(m.measurement, wf.image_measurement);
        m.check().unwrap();
        let back = WorkloadFile::from_json(&wf.to_json()).unwrap();
        assert_eq!(back, wf);
    }

    #[test]
    fn a_tampered_byte_changes_the_measurement_and_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let wf = sample(d.path());
        fs::write(d.path().join("bin/app"), b"#!apq").unwrap();
        let m = measure_rootfs(d.path(), &wf).unwrap();
        assert_ne!(m.measurement, wf.image_measurement);
        assert_eq!(m.differences.len(), 1);
        assert_eq!(m.differences[0].path, "/bin/app");
        assert!(matches!(
            m.differences[0].what,
            DifferenceKind::Content { .. }
        ));
        assert!(
            matches!(m.check(), Err(Error::TrustedFileMismatch { path, .. }) if path == "/bin/app")
        );
    }

    #[test]
    fn mode_link_missing_and_type_differences() {
        let d = tempfile::tempdir().unwrap();
        let wf = sample(d.path());
        fs::set_permissions(
            d.path().join("etc/app/conf"),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        fs::remove_file(d.path().join("bin/sh")).unwrap();
        symlink("/etc/passwd", d.path().join("bin/sh")).unwrap();
        fs::remove_file(d.path().join("etc/app/secret")).unwrap();
        fs::create_dir(d.path().join("etc/app/secret")).unwrap();
        let m = measure_rootfs(d.path(), &wf).unwrap();
        assert_ne!(m.measurement, wf.image_measurement);
        let kinds: Vec<(&str, &DifferenceKind)> = m
            .differences
            .iter()
            .map(|x| (x.path.as_str(), &x.what))
            .collect();
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        assert!(matches!(
            kinds[0],
            ("/bin/sh", DifferenceKind::LinkTarget { .. })
        ));
        assert!(matches!(
            kinds[1],
            (
                "/etc/app/conf",
                DifferenceKind::Mode {
                    expected: 0o644,
                    found: 0o666
                }
            )
        ));
        assert!(matches!(
            kinds[2],
            (
                "/etc/app/secret",
                DifferenceKind::WrongType { found: "directory" }
            )
        ));
        fs::remove_file(d.path().join("bin/app")).unwrap();
        let m = measure_rootfs(d.path(), &wf).unwrap();
        assert!(m
            .differences
            .iter()
            .any(|x| x.path == "/bin/app" && x.what == DifferenceKind::Missing));
    }

    #[test]
    fn symlinked_parent_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let wf = sample(d.path());
        fs::create_dir_all(outside.path().join("app")).unwrap();
        fs::write(outside.path().join("app/conf"), b"x=1").unwrap();
        fs::remove_dir_all(d.path().join("etc")).unwrap();
        symlink(outside.path(), d.path().join("etc")).unwrap();
        let e = measure_rootfs(d.path(), &wf).unwrap_err();
        assert!(
            matches!(e, Error::UnsafePath { ref path, .. } if path == "/etc"),
            "{e}"
        );
    }

    #[test]
    fn every_field_is_measured() {
        let d = tempfile::tempdir().unwrap();
        let wf = sample(d.path());
        let base = wf.measurement();
        let mut variants: Vec<WorkloadFile> = Vec::new();
        let mut v = wf.clone();
        v.cmd.clear();
        variants.push(v);
        let mut v = wf.clone();
        v.entrypoint.push("x".into());
        variants.push(v);
        let mut v = wf.clone();
        v.env.push("A=1".into());
        variants.push(v);
        let mut v = wf.clone();
        v.working_dir = "/x".into();
        variants.push(v);
        let mut v = wf.clone();
        v.user = "0".into();
        variants.push(v);
        let mut v = wf.clone();
        v.allowed.push("/**".into());
        variants.push(v);
        let mut v = wf.clone();
        v.runtime_mounts.pop();
        variants.push(v);
        let mut v = wf.clone();
        v.isv_svn += 1;
        variants.push(v);
        let mut v = wf.clone();
        v.trusted_files[0].mode = 0o777;
        variants.push(v);
        let mut v = wf.clone();
        v.symlinks[0].target = "b".into();
        variants.push(v);
        let mut v = wf.clone();
        v.encrypted_files[0].size += 1;
        variants.push(v);
        // Moving the same entry from entrypoint to cmd must differ too (length prefixes).
        let mut v = wf.clone();
        v.cmd.insert(0, v.entrypoint.remove(0));
        variants.push(v);
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v.measurement(), base, "variant {i}");
        }
    }

    #[test]
    fn validation_refuses_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let wf = sample(d.path());
        let mut v = wf.clone();
        v.image_measurement = Digest::default();
        assert!(
            matches!(v.validate(), Err(Error::InvalidWorkload(m)) if m.contains("does not match"))
        );
        let mut v = wf.clone();
        v.format_version = 2;
        assert!(
            matches!(v.validate(), Err(Error::InvalidWorkload(m)) if m.contains("format version"))
        );
        let mut v = wf.clone();
        v.trusted_files[0].path = "/bin/../etc/shadow".into();
        assert!(matches!(v.validate(), Err(Error::UnsafePath { .. })));
        let mut v = wf.clone();
        v.trusted_files.reverse();
        assert!(matches!(v.validate(), Err(Error::InvalidWorkload(m)) if m.contains("not sorted")));
        let mut v = wf.clone();
        v.symlinks[0].path = "/bin/app".into();
        v.image_measurement = v.measurement();
        assert!(matches!(v.validate(), Err(Error::InvalidWorkload(m)) if m.contains("twice")));
        assert!(matches!(
            WorkloadFile::from_json(b"{\"format_version\":1}"),
            Err(Error::InvalidWorkload(_))
        ));
    }

    #[test]
    fn argv_is_entrypoint_then_cmd_in_full() {
        let d = tempfile::tempdir().unwrap();
        let mut wf = sample(d.path());
        wf.entrypoint = vec!["/bin/sh".into(), "-c".into()];
        wf.cmd = vec!["echo hi".into(), "x".into()];
        assert_eq!(wf.argv(None), ["/bin/sh", "-c", "echo hi", "x"]);
        assert_eq!(wf.argv(Some(&["y".to_string()])), ["/bin/sh", "-c", "y"]);
    }
}
