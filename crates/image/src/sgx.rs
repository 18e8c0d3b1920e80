//! `coffer convert --tee sgx`: Gramine inside the image, its measured manifest and SIGSTRUCT.
//!
//! After the workload file is final, [`convert_sgx`] renders the Gramine manifest with
//! [`coffer_sgx::gramine`], measures MRENCLAVE with the `libpal.so` it ships in the image,
//! signs the SIGSTRUCT and adds Gramine to the coffer layer (layout in [`crate::gramine`]).
//! The image's ENTRYPOINT becomes `/coffer/launcher --start-gramine-sgx`, which starts
//! Gramine's loader outside the enclave; Gramine then runs the launcher inside it.
//!
//! What the manifest fixes, because inside SGX nothing from the host may configure the
//! launcher (Gramine passes only the variables its manifest names, `loader.env` in
//! `libos/src/libos_init.c`):
//! - **Configuration:** `COFFER_EVIDENCE=gramine`, `COFFER_WORKLOAD` and the trust pin
//!   (`COFFER_ROOT_CA`, a trusted copy of the Coordinator's root CA, or the
//!   Coordinator's measurement, [`CoordinatorPin`]) are measured values; only
//!   [`PASSTHROUGH_ENV`] comes from the host.
//! - **Trusted files:** the workload file's trusted files, every path that reaches one through
//!   symlinks ([`symlink_aliases`]: Gramine's chroot filesystem never shows a link, the host
//!   follows it, and trust is looked up by the path the app opened, `libos/src/fs/chroot/`),
//!   `/coffer/workload.json` and Gramine's runtime glibc.
//! - **Where secrets go:** `/coffer/tls` and every `--secret-dir` are in-enclave tmpfs mounts,
//!   listed to the launcher in `COFFER_SECRET_DIRS`; it writes no secret anywhere else.
//! - **Encrypted files:** `--encrypt` files are written in Gramine's protected-file format
//!   ([`coffer_sgx::gramine::pf`], bound to their own path, keyed by
//!   [`crate::protect::Key::gramine_kdk`]) and mounted `type = "encrypted"`; the workload file
//!   records a keyed digest of each plaintext, which the launcher checks through the mount, so
//!   an older ciphertext put back by the host is refused. Plaintext never touches the host.
//! - **Runtime:** `LD_LIBRARY_PATH` puts Gramine's glibc first ([`crate::gramine::library_path`]),
//!   `sys.enable_sigterm_injection` lets kubelet's SIGTERM reach the app, and `loader.argv` is
//!   fixed: the app's arguments come from the image and the Coordinator's manifest
//!   (`parameters.argv`), never from the pod's `args:`.
//!
//! MRENCLAVE/MRSIGNER go into the config labels and the report. The workload file's `sgx`
//! section stays empty on purpose: the manifest pins the workload file's SHA-256, so the file
//! cannot also carry the MRENCLAVE that depends on it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use coffer_sgx::gramine::{self, EnvValue, GramineInput, LayoutConstants};
use coffer_sgx::SigningKey;

use crate::convert::{convert_with, EnclaveOutput};
use crate::gramine as layout;
use crate::paths;
use crate::workload::{SgxInfo, WorkloadFile, WORKLOAD_PATH};
use crate::{ConvertOptions, ConvertReport, Digest, Error, Progress};

/// Launcher variables taken from the untrusted host: they only say where to reach the
/// Coordinator, which instance this is and how long to wait; everything they lead to is
/// attested. Trust pins, the workload name and paths are never passed through.
pub const PASSTHROUGH_ENV: &[&str] = &[
    "COFFER_ACTIVATE_TIMEOUT",
    "COFFER_COORDINATOR",
    "COFFER_INSTANCE_ID",
];

/// The in-enclave tmpfs directory of the workload's TLS identity (the launcher's `TLS_DIR`).
pub const TLS_DIR: &str = "/coffer/tls";

/// Largest single file of a Gramine installation read into memory.
const MAX_INSTALLED_FILE: u64 = 128 << 20;
/// Largest Gramine installation (library and host files together).
const MAX_INSTALLATION: u64 = 1 << 30;
/// Most files in a Gramine installation.
const MAX_INSTALLED_FILES: usize = 10_000;
/// Most paths symlinks may add to the trusted files.
const MAX_SYMLINK_ALIASES: usize = 500_000;

/// One file Gramine needs in the image.
#[derive(Clone)]
pub struct InstalledFile {
    /// Absolute path in the image (under [`layout::ROOT`]).
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

impl std::fmt::Debug for InstalledFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} bytes, {:o})",
            self.path,
            self.bytes.len(),
            self.mode
        )
    }
}

/// A Gramine installation as it goes into the image: the enclave side under
/// [`layout::LIB_DIR`] and the host loader with its glibc under [`layout::HOST_DIR`].
#[derive(Debug, Clone)]
pub struct Installation {
    /// Sorted by path.
    pub files: Vec<InstalledFile>,
}

impl Installation {
    /// Reads Gramine's library directory `dir` (e.g. `/usr/lib/x86_64-linux-gnu/gramine`):
    /// `libsysdb.so`, `sgx/libpal.so`, `sgx/loader` and `runtime/glibc/`. The host loader's
    /// ELF interpreter and the libraries it needs (`DT_NEEDED`, recursively) are taken from
    /// this machine, searched in `host_lib_dirs`, because the loader was built against them;
    /// its `PT_INTERP` is rewritten to [`layout::HOST_INTERPRETER`].
    pub fn read(dir: &Path, host_lib_dirs: &[PathBuf]) -> Result<Self, Error> {
        let mut budget = Budget::default();
        let mut files = Vec::new();
        let need = |rel: &str| -> Result<PathBuf, Error> {
            let p = dir.join(rel);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::Sgx(format!(
                    "{} has no {rel}: pass Gramine's library directory (the one holding \
                     sgx/libpal.so, e.g. /usr/lib/x86_64-linux-gnu/gramine)",
                    dir.display()
                )))
            }
        };
        for (rel, target, mode) in [
            ("libsysdb.so", layout::LIBOS, 0o644),
            ("sgx/libpal.so", layout::LIBPAL, 0o644),
        ] {
            let bytes = budget.read(&need(rel)?)?;
            files.push(InstalledFile {
                path: target.into(),
                bytes,
                mode,
            });
        }
        let glibc = dir.join("runtime/glibc");
        if !glibc.is_dir() {
            return Err(Error::Sgx(format!(
                "{} has no runtime/glibc: Coffer runs apps on Gramine's patched glibc; \
                 pass a complete Gramine installation",
                dir.display()
            )));
        }
        let glibc_real = glibc
            .canonicalize()
            .map_err(|e| Error::io("reading", &glibc, e))?;
        for entry in walkdir::WalkDir::new(&glibc)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry =
                entry.map_err(|e| Error::Sgx(format!("reading {}: {e}", glibc.display())))?;
            if !entry.file_type().is_file() {
                continue;
            }
            // A link may not lead out of the installation.
            let real = entry
                .path()
                .canonicalize()
                .map_err(|e| Error::io("reading", entry.path(), e))?;
            if !real.starts_with(&glibc_real) {
                return Err(Error::Sgx(format!(
                    "{} leads outside {}",
                    entry.path().display(),
                    glibc.display()
                )));
            }
            let rel = entry
                .path()
                .strip_prefix(&glibc)
                .ok()
                .and_then(|r| r.to_str())
                .ok_or_else(|| {
                    Error::Sgx(format!("{} is not a UTF-8 path", entry.path().display()))
                })?;
            let path = format!("{}/{rel}", layout::RUNTIME_GLIBC);
            paths::check_canonical(&path, "Gramine runtime glibc")?;
            let bytes = budget.read(entry.path())?;
            files.push(InstalledFile {
                path,
                bytes,
                mode: 0o755,
            });
        }
        if !files
            .iter()
            .any(|f| f.path.starts_with(layout::RUNTIME_GLIBC) && f.path.ends_with("/libc.so.6"))
        {
            return Err(Error::Sgx(format!(
                "{} has no libc.so.6: not a Gramine runtime glibc",
                glibc.display()
            )));
        }
        files.extend(host_loader(
            &need("sgx/loader")?,
            host_lib_dirs,
            &mut budget,
        )?);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Installation { files })
    }

    fn get(&self, path: &str) -> Option<&InstalledFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Bounds what an installation may make us read.
#[derive(Default)]
struct Budget {
    bytes: u64,
    files: usize,
}

impl Budget {
    fn read(&mut self, p: &Path) -> Result<Vec<u8>, Error> {
        let len = std::fs::metadata(p)
            .map_err(|e| Error::io("reading", p, e))?
            .len();
        self.files += 1;
        self.bytes += len;
        if len > MAX_INSTALLED_FILE
            || self.bytes > MAX_INSTALLATION
            || self.files > MAX_INSTALLED_FILES
        {
            return Err(Error::Sgx(format!(
                "{} is past the Gramine installation limits ({} MiB per file, {} MiB and {} \
                 files in all): is --gramine-dir Gramine's library directory?",
                p.display(),
                MAX_INSTALLED_FILE >> 20,
                MAX_INSTALLATION >> 20,
                MAX_INSTALLED_FILES
            )));
        }
        std::fs::read(p).map_err(|e| Error::io("reading", p, e))
    }
}

/// The ELF facts the host loader bundling needs.
struct ElfDeps {
    /// File offset and size of the `PT_INTERP` string (with its NUL).
    interp: Option<(usize, usize)>,
    /// `DT_NEEDED` names.
    needed: Vec<String>,
}

fn elf_deps(bytes: &[u8], what: &Path) -> Result<ElfDeps, Error> {
    use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
    let bad = |e: String| Error::Sgx(format!("{}: {e}", what.display()));
    let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes)
        .map_err(|e| bad(format!("not a 64-bit ELF file: {e}")))?;
    let endian = header
        .endian()
        .map_err(|e| bad(format!("ELF header: {e}")))?;
    let mut interp = None;
    for ph in header
        .program_headers(endian, bytes)
        .map_err(|e| bad(format!("program headers: {e}")))?
    {
        if ph.p_type(endian) == object::elf::PT_INTERP {
            let off = usize::try_from(ph.p_offset(endian)).map_err(|e| bad(e.to_string()))?;
            let size = usize::try_from(ph.p_filesz(endian)).map_err(|e| bad(e.to_string()))?;
            if off.checked_add(size).is_none_or(|end| end > bytes.len()) || size == 0 {
                return Err(bad("PT_INTERP lies outside the file".into()));
            }
            interp = Some((off, size));
        }
    }
    let sections = header
        .sections(endian, bytes)
        .map_err(|e| bad(format!("section headers: {e}")))?;
    let mut needed = Vec::new();
    for section in sections.iter() {
        if let Some((entries, link)) = section
            .dynamic(endian, bytes)
            .map_err(|e| bad(format!("dynamic section: {e}")))?
        {
            let strings = sections
                .strings(endian, bytes, link)
                .map_err(|e| bad(format!("dynamic strings: {e}")))?;
            for d in entries {
                if d.tag(endian) == object::elf::DT_NEEDED {
                    let name = d
                        .string(endian, strings)
                        .map_err(|_| bad("DT_NEEDED name out of range".into()))?;
                    needed.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    Ok(ElfDeps { interp, needed })
}

/// Gramine's host loader with its interpreter rewritten, the interpreter, and every library
/// it needs, as files under [`layout::HOST_DIR`].
fn host_loader(
    loader: &Path,
    lib_dirs: &[PathBuf],
    budget: &mut Budget,
) -> Result<Vec<InstalledFile>, Error> {
    let mut bytes = budget.read(loader)?;
    let deps = elf_deps(&bytes, loader)?;
    let mut out = Vec::new();
    if let Some((off, size)) = deps.interp {
        let raw = bytes.get(off..off + size).unwrap_or_default();
        let interp = std::str::from_utf8(raw.split(|b| *b == 0).next().unwrap_or_default())
            .map_err(|_| Error::Sgx(format!("{}: PT_INTERP is not UTF-8", loader.display())))?
            .to_string();
        let new = layout::HOST_INTERPRETER.as_bytes();
        if new.len() + 1 > size {
            return Err(Error::Sgx(format!(
                "{}: its interpreter name {interp:?} is too short to rewrite",
                loader.display()
            )));
        }
        // The kernel reads PT_INTERP as a NUL-terminated string; the rest is padding.
        if let Some(slot) = bytes.get_mut(off..off + size) {
            slot.fill(0);
            slot[..new.len()].copy_from_slice(new);
        }
        out.push(InstalledFile {
            path: layout::HOST_INTERPRETER.into(),
            bytes: budget.read(Path::new(&interp))?,
            mode: 0o755,
        });
    }
    out.push(InstalledFile {
        path: layout::LOADER.into(),
        bytes,
        mode: 0o755,
    });
    // Breadth-first over DT_NEEDED; the interpreter is never a DT_NEEDED library of its own.
    let mut queue: Vec<String> = deps.needed;
    let mut seen = BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) || name.starts_with("ld-linux") {
            continue;
        }
        if name.contains('/') || name.is_empty() {
            return Err(Error::Sgx(format!(
                "{}: DT_NEEDED {name:?} is not a library name",
                loader.display()
            )));
        }
        let found = lib_dirs
            .iter()
            .map(|d| d.join(&name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Sgx(format!(
                    "Gramine's loader needs {name}, which is in none of {}; install the \
                     libraries Gramine was built with",
                    lib_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let lib = budget.read(&found)?;
        queue.extend(elf_deps(&lib, &found)?.needed);
        out.push(InstalledFile {
            path: paths::join(layout::HOST_DIR, &name),
            bytes: lib,
            mode: 0o755,
        });
    }
    Ok(out)
}

/// Where this machine keeps its shared libraries, in the order the dynamic linker searches
/// them on Debian and Ubuntu.
pub fn default_host_lib_dirs() -> Vec<PathBuf> {
    [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// The launcher's trust pin for the Coordinator, fixed in the measured manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorPin {
    /// The Coordinator's root CA (PEM), a trusted file; for images converted once the
    /// Coordinator runs (`coffer verify` gives the root).
    RootCa(Vec<u8>),
    /// The Coordinator's SGX identity, checked in its RA-TLS quote with collateral it relays;
    /// images can then be converted before the Coordinator exists. MRENCLAVE, or MRSIGNER with
    /// ISVPRODID and a minimum ISVSVN.
    Measurement {
        /// Expected MRENCLAVE.
        mrenclave: Option<[u8; 32]>,
        /// Expected MRSIGNER.
        mrsigner: Option<[u8; 32]>,
        /// Expected ISVPRODID (required with `mrsigner`).
        isv_prod_id: Option<u16>,
        /// Lowest ISVSVN accepted.
        min_isv_svn: u16,
    },
}

impl CoordinatorPin {
    /// The launcher variables this pin fixes.
    fn env(&self) -> Result<Vec<(&'static str, String)>, Error> {
        match self {
            CoordinatorPin::RootCa(_) => Ok(vec![(
                "COFFER_ROOT_CA",
                layout::COORDINATOR_ROOT_CA.to_string(),
            )]),
            CoordinatorPin::Measurement {
                mrenclave,
                mrsigner,
                isv_prod_id,
                min_isv_svn,
            } => {
                if mrenclave.is_none() && mrsigner.is_none() {
                    return Err(Error::Sgx(
                        "the Coordinator pin names neither MRENCLAVE nor MRSIGNER".into(),
                    ));
                }
                let mut env = Vec::new();
                if let Some(m) = mrenclave {
                    env.push(("COFFER_COORDINATOR_MRENCLAVE", hex::encode(m)));
                }
                if let Some(m) = mrsigner {
                    let Some(prod) = isv_prod_id else {
                        return Err(Error::Sgx(
                            "a Coordinator MRSIGNER pin needs its ISVPRODID".into(),
                        ));
                    };
                    env.push(("COFFER_COORDINATOR_MRSIGNER", hex::encode(m)));
                    env.push(("COFFER_COORDINATOR_ISVPRODID", prod.to_string()));
                    env.push(("COFFER_COORDINATOR_MIN_ISVSVN", min_isv_svn.to_string()));
                }
                Ok(env)
            }
        }
    }
}

/// What the Gramine step needs besides the conversion options.
#[derive(Debug, Clone)]
pub struct GramineOptions {
    /// Gramine, as it goes into the image.
    pub installation: Installation,
    /// The RSA-3072 (e = 3) key that signs the SIGSTRUCT.
    pub key: SigningKey,
    /// `sgx.enclave_size` (a power of two).
    pub enclave_size: u64,
    /// `sgx.max_threads`.
    pub max_threads: u32,
    /// `sgx.debug` (never for production).
    pub debug: bool,
    /// The workload name in the Coordinator's manifest (`COFFER_WORKLOAD`, measured).
    pub workload: String,
    /// How the launcher inside the enclave recognises the Coordinator (measured).
    pub coordinator: CoordinatorPin,
    /// In-enclave tmpfs directories for the manifest's secret files (besides `/coffer/tls`).
    pub secret_dirs: Vec<String>,
}

/// SIGSTRUCT date from `SOURCE_DATE_EPOCH` (BCD `YYYYMMDD`), or 0 without one, so output is
/// reproducible.
pub fn sigstruct_date(source_date_epoch: Option<u64>) -> Result<u32, Error> {
    let Some(e) = source_date_epoch else {
        return Ok(0);
    };
    let t = i64::try_from(e)
        .ok()
        .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok())
        .ok_or_else(|| Error::Sgx(format!("SOURCE_DATE_EPOCH {e} is out of range")))?;
    let year = u16::try_from(t.year())
        .map_err(|_| Error::Sgx(format!("SOURCE_DATE_EPOCH {e} is out of range")))?;
    coffer_sgx::bcd_date(year, u8::from(t.month()), t.day()).map_err(sgx_err)
}

fn sgx_err(e: coffer_sgx::Error) -> Error {
    Error::Sgx(e.to_string())
}

/// Every path that reaches a trusted file through symlinks, with that file's SHA-256.
///
/// Gramine's chroot filesystem never shows a symlink: the host follows it, and the trusted
/// file is looked up by the path the app opened. `/bin/sh` → `busybox`, the ELF interpreter in
/// `/lib64` and every library under a merged-`/usr` `/lib` are therefore trusted only when
/// listed under those paths (GSC walks the tree following links for the same reason). A link
/// to a directory lists every file below it; a link inside the directory it points to (Debian's
/// `/usr/bin/X11 → .`) is not expanded through itself. Links that dangle or climb out of the
/// root add nothing: Gramine could not open them either.
pub fn symlink_aliases(wf: &WorkloadFile) -> Result<Vec<(String, [u8; 32])>, Error> {
    let links: BTreeMap<&str, String> = wf
        .symlinks
        .iter()
        .filter_map(|l| Some((l.path.as_str(), paths::resolve_link(&l.path, &l.target)?)))
        .collect();
    let mut visible: BTreeMap<String, [u8; 32]> = wf
        .trusted_files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.0))
        .collect();
    let real: BTreeSet<String> = visible.keys().cloned().collect();
    // Links resolved to the physical path they name (every link in the target followed too).
    let resolved: Vec<(&str, String)> = links
        .keys()
        .filter_map(|l| Some((*l, resolve_physical(l, &links)?)))
        .collect();
    // A fixpoint: a directory link can expose paths that other links created.
    for _round in 0..16 {
        let mut added: Vec<(String, [u8; 32])> = Vec::new();
        for (link, target) in &resolved {
            if let Some(h) = visible.get(target) {
                if !visible.contains_key(*link) {
                    added.push((link.to_string(), *h));
                }
                continue;
            }
            let prefix = if target == "/" {
                "/".to_string()
            } else {
                format!("{target}/")
            };
            for (p, h) in visible.range(prefix.clone()..) {
                if !p.starts_with(&prefix) {
                    break;
                }
                if paths::is_under(p, link) {
                    continue;
                }
                let alias = paths::join(link, &p[prefix.len()..]);
                if !visible.contains_key(&alias) {
                    added.push((alias, *h));
                }
            }
        }
        if added.is_empty() {
            break;
        }
        visible.extend(added);
        if visible.len() - real.len() > MAX_SYMLINK_ALIASES {
            return Err(Error::Sgx(format!(
                "the image's symlinks expand to more than {MAX_SYMLINK_ALIASES} paths for \
                 Gramine's trusted files; look for a link loop"
            )));
        }
    }
    Ok(visible
        .into_iter()
        .filter(|(p, _)| !real.contains(p))
        .collect())
}

/// The path `path` names once every symlink along it is followed (lexically, at most 40
/// links, as the kernel allows); `None` for loops and escapes.
fn resolve_physical(path: &str, links: &BTreeMap<&str, String>) -> Option<String> {
    let mut current = path.to_string();
    for _hop in 0..40 {
        let mut prefix = String::new();
        let mut substituted = None;
        let comps: Vec<&str> = current.split('/').filter(|c| !c.is_empty()).collect();
        for (i, c) in comps.iter().enumerate() {
            prefix.push('/');
            prefix.push_str(c);
            if let Some(t) = links.get(prefix.as_str()) {
                let rest = comps.get(i + 1..).unwrap_or_default().join("/");
                substituted = Some(if rest.is_empty() {
                    t.clone()
                } else {
                    paths::resolve_link(&paths::join(t, "x"), &rest)?
                });
                break;
            }
        }
        match substituted {
            Some(next) => current = next,
            None => return Some(current),
        }
    }
    None
}

/// The Gramine input for a final workload file (`wf_json` = its bytes as written).
pub fn gramine_input(
    wf: &WorkloadFile,
    wf_json: &[u8],
    g: &GramineOptions,
) -> Result<GramineInput, Error> {
    let mut tmpfs: Vec<String> = vec!["/tmp".into(), TLS_DIR.into()];
    for d in &g.secret_dirs {
        paths::check_canonical(d, "--secret-dir")?;
        if d == "/" || paths::is_under(WORKLOAD_PATH, d) || paths::is_under(layout::ROOT, d) {
            return Err(Error::Sgx(format!(
                "--secret-dir {d} would hide the launcher or Gramine; name a directory of \
                 its own, e.g. /etc/app/secrets"
            )));
        }
        if let Some(t) = wf
            .trusted_files
            .iter()
            .find(|t| paths::is_under(&t.path, d))
        {
            return Err(Error::Sgx(format!(
                "--secret-dir {d} would hide the image's {} (an in-enclave tmpfs starts \
                 empty); name a directory the image does not use",
                t.path
            )));
        }
        tmpfs.push(d.clone());
    }
    let mut allowed: Vec<String> = wf.allowed.clone();
    for m in &wf.runtime_mounts {
        // Runtime-mounted files under /etc (hosts, resolv.conf …) are files; the rest are
        // directories.
        if m.starts_with("/etc/") {
            allowed.push(m.clone());
        } else {
            allowed.push(format!("{}/", m.trim_end_matches('/')));
        }
    }
    let allowed_globs = paths::Globs::new(&allowed)?;
    let mut trusted: Vec<(String, [u8; 32])> = wf
        .trusted_files
        .iter()
        .map(|t| (t.path.clone(), t.sha256.0))
        .collect();
    trusted.extend(symlink_aliases(wf)?.into_iter().filter(|(p, _)| {
        !allowed_globs.is_match(p) && !tmpfs.iter().any(|d| paths::is_under(p, d))
    }));
    trusted.push((WORKLOAD_PATH.to_string(), Digest::of(wf_json).0));
    if let CoordinatorPin::RootCa(pem) = &g.coordinator {
        trusted.push((layout::COORDINATOR_ROOT_CA.to_string(), Digest::of(pem).0));
    }
    // Gramine's runtime glibc; libsysdb.so is pinned by `loader.entrypoint.sha256` and
    // libpal.so is measured, so neither is a trusted file.
    for f in &g.installation.files {
        if paths::is_under(&f.path, layout::RUNTIME_GLIBC) {
            trusted.push((f.path.clone(), Digest::of(&f.bytes).0));
        }
    }
    if let Some(t) = wf
        .trusted_files
        .iter()
        .find(|t| paths::is_under(&t.path, layout::ROOT))
    {
        return Err(Error::Sgx(format!(
            "the image already has {}: Coffer puts Gramine there; convert the original image, \
             not a converted one",
            t.path
        )));
    }
    let libos = g
        .installation
        .get(layout::LIBOS)
        .ok_or_else(|| Error::Sgx("the Gramine installation has no libsysdb.so".into()))?;
    let image_ld_path = wf
        .env
        .iter()
        .find_map(|e| e.strip_prefix("LD_LIBRARY_PATH="));
    let mut env: Vec<(String, EnvValue)> = PASSTHROUGH_ENV
        .iter()
        .map(|n| (n.to_string(), EnvValue::Passthrough))
        .collect();
    for (name, value) in [
        ("COFFER_EVIDENCE", "gramine".to_string()),
        ("COFFER_WORKLOAD", g.workload.clone()),
        ("COFFER_SECRET_DIRS", tmpfs[1..].join(":")),
        ("LD_LIBRARY_PATH", layout::library_path(image_ld_path)),
    ]
    .into_iter()
    .chain(g.coordinator.env()?)
    {
        env.push((name.to_string(), EnvValue::Value(value)));
    }
    Ok(GramineInput {
        libos: (layout::LIBOS.to_string(), Digest::of(&libos.bytes).0),
        args: Vec::new(),
        env,
        trusted_files: trusted,
        allowed_files: allowed,
        tmpfs,
        encrypted_files: wf.encrypted_files.iter().map(|e| e.path.clone()).collect(),
        enclave_size: g.enclave_size,
        max_threads: g.max_threads,
        isv_prod_id: wf.isv_prod_id,
        isv_svn: wf.isv_svn,
        debug: g.debug,
    })
}

/// Converts an image and builds its Gramine enclave (see the module docs).
pub fn convert_sgx(
    opts: &ConvertOptions,
    g: &GramineOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ConvertReport, Error> {
    if opts.sgx.is_some() {
        return Err(Error::Sgx(
            "ConvertOptions::sgx must be empty: convert_sgx computes MRENCLAVE/MRSIGNER itself"
                .into(),
        ));
    }
    let date = sigstruct_date(opts.source_date_epoch)?;
    let libpal = g
        .installation
        .get(layout::LIBPAL)
        .ok_or_else(|| Error::Sgx("the Gramine installation has no sgx/libpal.so".into()))?;
    let hook = |wf: &WorkloadFile, wf_json: &[u8]| -> Result<EnclaveOutput, Error> {
        let input = gramine_input(wf, wf_json, g)?;
        // MRENCLAVE is measured from the libpal.so bytes that go into the image.
        let built = gramine::build(
            &input,
            &libpal.bytes,
            &LayoutConstants::V1,
            &g.key,
            date,
            &mut coffer_sgx::rand_core::OsRng,
        )
        .map_err(sgx_err)?;
        let mut files: Vec<(String, Cow<'_, [u8]>, u32)> = g
            .installation
            .files
            .iter()
            .map(|f| (f.path.clone(), Cow::Borrowed(&f.bytes[..]), f.mode))
            .collect();
        files.push((
            layout::MANIFEST.into(),
            Cow::Owned(built.manifest.into_bytes()),
            0o644,
        ));
        files.push((
            layout::SIG.into(),
            Cow::Owned(built.sigstruct.to_bytes().to_vec()),
            0o644,
        ));
        if let CoordinatorPin::RootCa(pem) = &g.coordinator {
            files.push((
                layout::COORDINATOR_ROOT_CA.into(),
                Cow::Borrowed(&pem[..]),
                0o644,
            ));
        }
        Ok(EnclaveOutput {
            info: SgxInfo {
                mrenclave: Digest(built.measurement.mrenclave),
                mrsigner: Digest(built.sigstruct.mrsigner()),
            },
            files,
            entrypoint_args: vec![layout::START_FLAG.to_string()],
        })
    };
    convert_with(opts, Some(&hook), Some(&encrypt_for_gramine), progress)
}

/// Largest file `--encrypt --tee sgx` encrypts (Gramine's format is written in memory).
const MAX_ENCRYPTED_FILE: u64 = 256 << 20;

/// Writes an `--encrypt` file in Gramine's protected-file format, bound to its own path (the
/// encrypted mount's URI), and returns the plaintext MAC the launcher checks.
fn encrypt_for_gramine(
    key: &crate::protect::Key,
    path: &str,
    plaintext_sha256: &Digest,
    plaintext: &Path,
    out: &mut dyn std::io::Write,
) -> Result<Option<Digest>, Error> {
    use coffer_sgx::rand_core::SeedableRng as _;
    let len = std::fs::metadata(plaintext)
        .map_err(|e| Error::io("reading", plaintext, e))?
        .len();
    if len > MAX_ENCRYPTED_FILE {
        return Err(Error::Sgx(format!(
            "{path}: {len} bytes is more than --encrypt --tee sgx encrypts ({} MiB); deliver it \
             another way",
            MAX_ENCRYPTED_FILE >> 20
        )));
    }
    let content = zeroize::Zeroizing::new(
        std::fs::read(plaintext).map_err(|e| Error::io("reading", plaintext, e))?,
    );
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*key.gramine_seed(path, plaintext_sha256));
    let file =
        gramine::pf::encrypt(&key.gramine_kdk(), path, &content, &mut rng).map_err(sgx_err)?;
    out.write_all(&file)
        .map_err(|e| Error::io("writing", Path::new(path), e))?;
    Ok(Some(key.plaintext_mac(path, plaintext_sha256)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Symlink, TrustedFile, FORMAT_VERSION};

    fn file(path: &str, content: &[u8]) -> TrustedFile {
        TrustedFile {
            path: path.into(),
            sha256: Digest::of(content),
            size: content.len() as u64,
            mode: 0o755,
        }
    }

    fn link(path: &str, target: &str) -> Symlink {
        Symlink {
            path: path.into(),
            target: target.into(),
        }
    }

    fn wf() -> WorkloadFile {
        let mut wf = WorkloadFile {
            format_version: FORMAT_VERSION,
            entrypoint: vec!["/bin/app".into()],
            cmd: vec![],
            env: vec!["LD_LIBRARY_PATH=/opt/app/lib".into()],
            working_dir: String::new(),
            user: String::new(),
            trusted_files: vec![file("/usr/bin/app", b"app"), file("/etc/app.conf", b"conf")],
            symlinks: vec![link("/bin", "usr/bin")],
            allowed: vec!["/data/**".into()],
            runtime_mounts: vec!["/proc".into(), "/etc/hosts".into()],
            encrypted_files: vec![],
            isv_prod_id: 1,
            isv_svn: 2,
            image_measurement: Digest::default(),
            sgx: None,
        };
        wf.seal();
        wf
    }

    fn opts() -> GramineOptions {
        let f = |path: &str, bytes: &[u8]| InstalledFile {
            path: path.into(),
            bytes: bytes.to_vec(),
            mode: 0o644,
        };
        GramineOptions {
            installation: Installation {
                files: vec![
                    f(layout::LIBOS, b"libos"),
                    f(layout::LIBPAL, b"libpal"),
                    f(&format!("{}/libc.so.6", layout::RUNTIME_GLIBC), b"libc"),
                    f(layout::LOADER, b"loader"),
                ],
            },
            // Any valid key: the input step does not sign. The vector key avoids keygen.
            key: SigningKey::from_pem_bytes(include_bytes!(
                "../../../testdata/vectors/sgx-sign/encl.pem"
            ))
            .unwrap(),
            enclave_size: 1 << 30,
            max_threads: 16,
            debug: false,
            workload: "web".into(),
            coordinator: CoordinatorPin::RootCa(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
            secret_dirs: vec!["/etc/app/secrets".into()],
        }
    }

    fn trusted(i: &GramineInput) -> BTreeMap<&str, [u8; 32]> {
        i.trusted_files
            .iter()
            .map(|(p, h)| (p.as_str(), *h))
            .collect()
    }

    #[test]
    fn input_fixes_the_launchers_configuration_and_pins_what_it_reads() {
        let wf = wf();
        let json = wf.to_json();
        let i = gramine_input(&wf, &json, &opts()).unwrap();
        let t = trusted(&i);
        assert_eq!(t[WORKLOAD_PATH], Digest::of(&json).0);
        assert_eq!(
            t[layout::COORDINATOR_ROOT_CA],
            Digest::of(b"-----BEGIN CERTIFICATE-----\n").0
        );
        assert_eq!(
            t["/coffer/gramine/lib/runtime/glibc/libc.so.6"],
            Digest::of(b"libc").0
        );
        // The app opens /bin/app; Gramine looks trust up by that path.
        assert_eq!(t["/bin/app"], Digest::of(b"app").0);
        assert!(!t.contains_key(layout::LIBPAL) && !t.contains_key(layout::LIBOS));
        assert!(
            !t.contains_key(layout::LOADER),
            "the host loader is not enclave code"
        );
        assert_eq!(i.libos, (layout::LIBOS.to_string(), Digest::of(b"libos").0));

        let env: BTreeMap<&str, &EnvValue> = i.env.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let value = |k: &str| match env[k] {
            EnvValue::Value(v) => v.clone(),
            EnvValue::Passthrough => panic!("{k} passes through"),
        };
        assert_eq!(value("COFFER_EVIDENCE"), "gramine");
        assert_eq!(value("COFFER_WORKLOAD"), "web");
        assert_eq!(value("COFFER_ROOT_CA"), layout::COORDINATOR_ROOT_CA);
        assert_eq!(value("COFFER_SECRET_DIRS"), "/coffer/tls:/etc/app/secrets");
        assert!(
            value("LD_LIBRARY_PATH").starts_with("/coffer/gramine/lib/runtime/glibc:/opt/app/lib:")
        );
        let passed: Vec<&str> = env
            .iter()
            .filter(|(_, v)| ***v == EnvValue::Passthrough)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(passed, PASSTHROUGH_ENV);

        assert_eq!(i.tmpfs, ["/tmp", "/coffer/tls", "/etc/app/secrets"]);
        assert!(i.allowed_files.contains(&"/proc/".to_string()));
        assert!(i.allowed_files.contains(&"/etc/hosts".to_string()));
        assert_eq!((i.isv_prod_id, i.isv_svn), (1, 2));
        let text = gramine::render_manifest(&i).unwrap();
        assert!(text.contains("\"file:/data/\""));
        assert!(text.contains("type = \"tmpfs\", path = \"/etc/app/secrets\""));
    }

    #[test]
    fn a_measurement_pin_fixes_the_coordinators_identity_and_ships_no_root() {
        let wf = wf();
        let mut o = opts();
        o.coordinator = CoordinatorPin::Measurement {
            mrenclave: None,
            mrsigner: Some([0x5a; 32]),
            isv_prod_id: Some(9),
            min_isv_svn: 4,
        };
        let i = gramine_input(&wf, &wf.to_json(), &o).unwrap();
        let env: BTreeMap<&str, &EnvValue> = i.env.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            env["COFFER_COORDINATOR_MRSIGNER"],
            &EnvValue::Value(hex::encode([0x5a; 32]))
        );
        assert_eq!(
            env["COFFER_COORDINATOR_ISVPRODID"],
            &EnvValue::Value("9".into())
        );
        assert_eq!(
            env["COFFER_COORDINATOR_MIN_ISVSVN"],
            &EnvValue::Value("4".into())
        );
        assert!(!env.contains_key("COFFER_ROOT_CA"));
        assert!(!trusted(&i).contains_key(layout::COORDINATOR_ROOT_CA));
        o.coordinator = CoordinatorPin::Measurement {
            mrenclave: None,
            mrsigner: Some([0x5a; 32]),
            isv_prod_id: None,
            min_isv_svn: 0,
        };
        let e = gramine_input(&wf, &wf.to_json(), &o).unwrap_err();
        assert!(e.to_string().contains("ISVPRODID"), "{e}");
    }

    #[test]
    fn secret_dirs_that_hide_the_image_or_coffer_are_refused() {
        let wf = wf();
        for (dir, needle) in [
            ("/", "hide the launcher"),
            ("/coffer", "hide the launcher"),
            ("/etc", "/etc/app.conf"),
            ("/etc/../x", "`..`"),
        ] {
            let mut o = opts();
            o.secret_dirs = vec![dir.into()];
            let e = gramine_input(&wf, &wf.to_json(), &o).unwrap_err();
            assert!(e.to_string().contains(needle), "{dir}: {e}");
        }
    }

    #[test]
    fn an_already_converted_image_is_refused() {
        let mut wf = wf();
        wf.trusted_files
            .push(file("/coffer/gramine/lib/libsysdb.so", b"old"));
        wf.seal();
        let e = gramine_input(&wf, &wf.to_json(), &opts()).unwrap_err();
        assert!(e.to_string().contains("converted"), "{e}");
    }

    /// A merged-/usr layout as Debian ships it.
    fn merged_usr() -> WorkloadFile {
        let mut wf = wf();
        wf.trusted_files = vec![
            file("/usr/bin/busybox", b"busybox"),
            file("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"ld"),
            file("/usr/lib/x86_64-linux-gnu/libc.so.6", b"libc"),
            file("/usr/bin/python3.13", b"python"),
        ];
        wf.symlinks = vec![
            link("/bin", "usr/bin"),
            link("/lib", "usr/lib"),
            link("/lib64", "usr/lib64"),
            link(
                "/usr/lib64/ld-linux-x86-64.so.2",
                "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
            link("/usr/bin/sh", "busybox"),
            link("/usr/bin/python3", "python3.13"),
            link("/usr/bin/X11", "."),
            link("/usr/bin/dangling", "nothing"),
            link("/usr/bin/escape", "../../../../etc/passwd"),
            link("/loop/a", "/loop/b"),
            link("/loop/b", "/loop/a"),
        ];
        wf.seal();
        wf
    }

    #[test]
    fn every_path_through_symlinks_is_trusted_with_its_targets_hash() {
        let aliases: BTreeMap<String, [u8; 32]> = symlink_aliases(&merged_usr())
            .unwrap()
            .into_iter()
            .collect();
        let h = |c: &[u8]| Digest::of(c).0;
        for (path, content) in [
            ("/bin/sh", &b"busybox"[..]),
            ("/bin/busybox", b"busybox"),
            ("/usr/bin/sh", b"busybox"),
            ("/bin/python3", b"python"),
            ("/lib64/ld-linux-x86-64.so.2", b"ld"),
            ("/usr/lib64/ld-linux-x86-64.so.2", b"ld"),
            ("/lib/x86_64-linux-gnu/libc.so.6", b"libc"),
            ("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", b"ld"),
            ("/usr/bin/X11/busybox", b"busybox"),
            ("/bin/X11/python3", b"python"),
        ] {
            assert_eq!(aliases.get(path), Some(&h(content)), "{path}");
        }
        // Not expanded through itself, and nothing for loops, dangling links or escapes.
        assert!(!aliases.contains_key("/usr/bin/X11/X11/busybox"));
        for absent in ["/usr/bin/dangling", "/usr/bin/escape", "/loop/a", "/loop/b"] {
            assert!(!aliases.contains_key(absent), "{absent}");
        }
        // Real files are not repeated.
        assert!(!aliases.contains_key("/usr/bin/busybox"));
    }

    #[test]
    fn aliases_under_allowed_or_tmpfs_paths_are_left_to_those() {
        let mut wf = merged_usr();
        wf.allowed = vec!["/usr/lib64/**".into()];
        wf.seal();
        let i = gramine_input(&wf, &wf.to_json(), &opts()).unwrap();
        let t = trusted(&i);
        assert!(!t.contains_key("/usr/lib64/ld-linux-x86-64.so.2"));
        assert!(t.contains_key("/lib64/ld-linux-x86-64.so.2"));
        gramine::render_manifest(&i).unwrap();
    }

    #[test]
    fn host_loader_is_bundled_with_its_interpreter_rewritten() {
        // Any dynamically linked program of this machine stands in for Gramine's loader.
        let loader = Path::new("/bin/true");
        let mut budget = Budget::default();
        let files = host_loader(loader, &default_host_lib_dirs(), &mut budget).unwrap();
        let by_path: BTreeMap<&str, &InstalledFile> =
            files.iter().map(|f| (f.path.as_str(), f)).collect();
        let l = by_path[layout::LOADER];
        let deps = elf_deps(&l.bytes, loader).unwrap();
        let (off, size) = deps.interp.unwrap();
        assert_eq!(
            &l.bytes[off..off + layout::HOST_INTERPRETER.len() + 1],
            format!("{}\0", layout::HOST_INTERPRETER).as_bytes()
        );
        assert!(l.bytes[off..off + size]
            .iter()
            .skip(layout::HOST_INTERPRETER.len())
            .all(|b| *b == 0));
        assert!(by_path.contains_key(layout::HOST_INTERPRETER));
        assert!(by_path.contains_key("/coffer/gramine/host/libc.so.6"));
        // Only the interpreter bytes changed.
        let original = std::fs::read(loader).unwrap();
        assert_eq!(original.len(), l.bytes.len());
        assert_eq!(original[..off], l.bytes[..off]);
        assert_eq!(original[off + size..], l.bytes[off + size..]);

        let e = host_loader(
            loader,
            &[PathBuf::from("/nonexistent")],
            &mut Budget::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("libc.so.6"), "{e}");
        let e = host_loader(Path::new("/etc/passwd"), &[], &mut Budget::default()).unwrap_err();
        assert!(e.to_string().contains("ELF"), "{e}");
    }

    #[test]
    fn the_launcher_and_the_manifest_name_the_same_encrypted_mount_key() {
        assert_eq!(layout::ENCRYPTED_KEY_NAME, gramine::ENCRYPTED_KEY_NAME);
    }

    #[test]
    fn sigstruct_date_follows_source_date_epoch() {
        assert_eq!(sigstruct_date(None).unwrap(), 0);
        assert_eq!(sigstruct_date(Some(0)).unwrap(), 0x1970_0101);
        assert_eq!(sigstruct_date(Some(1_700_000_000)).unwrap(), 0x2023_1114);
        assert_eq!(sigstruct_date(Some(u64::MAX)).unwrap_err().kind(), "sgx");
    }
}
