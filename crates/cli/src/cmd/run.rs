//! `coffer run`: run a converted image on this machine, under `runc` (the OCI runtime) or, with
//! `--no-runtime`, as a plain local process on the unpacked root filesystem.
//!
//! The image (an OCI layout directory or an oci-archive) is unpacked with every blob's digest
//! checked and every layer path confined to the root filesystem; an OCI runtime bundle
//! (`config.json` built with `oci-spec`'s runtime types) is written next to it and started with
//! `runc run`. The container shares the host's network namespace, so a Coordinator on
//! 127.0.0.1 is reachable and the app's ports are published as they are (`-p 8080` documents
//! and checks that; a different host port cannot be mapped without a network namespace). The
//! container's exit status is `coffer run`'s.

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use anyhow::{bail, Context};
use clap::Args;
use coffer_image::layout::{self, Compression, Format, Layer};
use coffer_image::{ImageRef, Limits};
use rustix::process::Signal;
use sha2::{Digest, Sha256};

use crate::output::Failure;
use crate::Global;

/// Arguments of `coffer run`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:
    Run a converted image against a Coordinator on this machine (simulated hardware):
        coffer run ./web-confidential --coordinator 127.0.0.1:4433 --workload web \\
            --root-ca coordinator-root.pem --sim-dir ./sim -p 8080

    Without runc, as a local process (chroot into the unpacked image when run as root):
        coffer run ./web-confidential --no-runtime --coordinator 127.0.0.1:4433 --workload web \\
            --root-ca coordinator-root.pem --sim-dir ./sim

    An image in an archive, in any form `coffer convert` writes (oci:, oci-archive:,
    docker-archive:, each with an optional :TAG):
        coffer run docker-archive:web-confidential.tar:web:cc --coordinator 127.0.0.1:4433 ...

    Straight from a registry (pulled through the shared blob cache):
        coffer run docker://registry.example/app-cc:1 --coordinator 10.0.0.5:4433 ...

    Replace the image's Cmd, as `docker run IMAGE ARGS` does:
        coffer run ./web-confidential ... -- httpd -f -p 9090

NETWORK:
    The container uses the host's network namespace: the app's ports are reachable on this
    machine as they are, and 127.0.0.1 is this machine. `-p PORT` (or `-p PORT:PORT`) states
    that a port is published; `-p HOST:CONTAINER` with different numbers is refused. The
    container has its own hostname (--hostname, default this machine's), /etc/hostname and
    /etc/hosts (this machine's plus that name), and this machine's /etc/resolv.conf.

LIMITS:
    RLIMIT_NOFILE 1024 (containerd's default spec), Docker's default capabilities, and
    no_new_privileges.

STOPPING:
    SIGTERM, SIGINT (Ctrl-C) and SIGHUP are forwarded to the container; after 10 s, or on a
    second signal, it is killed with SIGKILL. The container and the unpacked image are removed
    either way (unless --keep).

EXIT STATUS:
    The app's, or 128+N when it was ended by signal N (as a shell reports it); before the app
    runs, the launcher's (78 configuration, 69 Coordinator unreachable, 75 Coordinator not
    ready, 77 activation refused; `coffer-launcher --help` lists all); 1 when `coffer run`
    itself fails (image modified or unreadable, bad flags).")]
pub(crate) struct RunArgs {
    /// The converted image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG],
    /// docker://REGISTRY/NAME[:TAG|@DIGEST] (pulled), or a bare layout directory or archive.
    pub(crate) image: String,
    /// Coordinator address (`host:port`), passed to the launcher as COFFER_COORDINATOR.
    #[arg(long)]
    pub(crate) coordinator: Option<String>,
    /// Workload name in the manifest (COFFER_WORKLOAD).
    #[arg(long)]
    pub(crate) workload: Option<String>,
    /// The Coordinator's root CA (PEM, e.g. from `coffer verify`), mounted read-only for the
    /// launcher (COFFER_ROOT_CA).
    #[arg(long, value_name = "PEM")]
    pub(crate) root_ca: Option<PathBuf>,
    /// Use the SIMULATED platform in DIR (sim-platform.json) for the launcher's evidence
    /// (COFFER_EVIDENCE=sim). Never use for production secrets.
    #[arg(long, value_name = "DIR")]
    pub(crate) sim_dir: Option<PathBuf>,
    /// Set an environment variable in the container (`KEY=VALUE`, or `KEY` to copy it from
    /// this environment). Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub(crate) env: Vec<String>,
    /// Bind-mount a host path (`HOST:CONTAINER[:ro]`). Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub(crate) volume: Vec<String>,
    /// Publish a port (`PORT` or `PORT:PORT`; host networking publishes ports as they are).
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    pub(crate) publish: Vec<String>,
    /// Container name (runc container id); default `coffer-` and random digits.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// The container's hostname (its own UTS namespace; also HOSTNAME, /etc/hostname and a line
    /// in /etc/hosts). Default: this machine's, as Docker does on the host network.
    #[arg(long, value_name = "NAME")]
    pub(crate) hostname: Option<String>,
    /// Run the launcher as a local process on the unpacked image instead of under runc.
    #[arg(long)]
    pub(crate) no_runtime: bool,
    /// Keep the unpacked image and bundle directory afterwards (its path is printed).
    #[arg(long)]
    pub(crate) keep: bool,
    #[command(flatten)]
    pub(crate) registry: crate::cmd::registry::RegistryArgs,
    /// Arguments replacing the image's Cmd.
    #[arg(last = true)]
    pub(crate) args: Vec<String>,
}

/// The parts of an image's config that a run needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageConfig {
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) working_dir: String,
    pub(crate) user: String,
}

impl ImageConfig {
    fn argv(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.entrypoint.clone();
        argv.extend_from_slice(if args.is_empty() { &self.cmd } else { args });
        argv
    }
}

/// Which image `coffer run` was given: a reference as `coffer convert` takes one
/// (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:TAG]`), or a bare path
/// (a layout directory, or an archive of either kind).
pub(crate) fn image_ref(arg: &str) -> anyhow::Result<ImageRef> {
    if let Some((prefix, _)) = arg.split_once(':') {
        if matches!(prefix, "oci" | "oci-archive" | "docker-archive") || !Path::new(arg).exists() {
            return Ok(arg.parse()?);
        }
    }
    let path = PathBuf::from(arg);
    // The docker-archive loader also reads an OCI layout inside an archive.
    let format = if path.is_dir() {
        Format::OciDir
    } else {
        Format::DockerArchive
    };
    Ok(ImageRef {
        format,
        path,
        tag: None,
    })
}

/// Unpacks `image` into `work/rootfs`, checking every blob against its digest before a single
/// entry is written; returns the image's config.
pub(crate) fn unpack_image(
    image: &ImageRef,
    work: &Path,
) -> anyhow::Result<(PathBuf, ImageConfig)> {
    let scratch = work.join("image");
    fs::create_dir_all(&scratch)?;
    let loaded = layout::load(image, &scratch, &Limits::default())
        .with_context(|| format!("reading image {image}"))?;
    let rootfs = work.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    // Each blob is read twice (checked, then unpacked): the bar counts both passes.
    let bar = std::io::stderr().is_terminal().then(|| {
        let total: u64 = (loaded.layers.iter())
            .filter_map(|l| fs::metadata(&l.file).ok())
            .map(|m| 2 * m.len())
            .sum();
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "unpacking [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    for layer in &loaded.layers {
        verify_layer(layer, bar.as_ref())?;
        apply_layer(&layer.file, &rootfs, bar.as_ref())
            .with_context(|| format!("unpacking {}", layer.name))?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // The unpacked rootfs is all that is needed from here on.
    let _ = fs::remove_dir_all(&scratch);
    let c = loaded.config.config().clone().unwrap_or_default();
    let cfg = ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
    };
    Ok((rootfs, cfg))
}

/// Checks a layer blob against the digest its manifest names or, where the source names none
/// (a `docker save` archive), its uncompressed content against the config's diff_id.
fn verify_layer(layer: &Layer, bar: Option<&indicatif::ProgressBar>) -> anyhow::Result<()> {
    let open = || open_blob(&layer.file, bar);
    let (found, expected) = match &layer.digest {
        Some(d) => {
            let mut hash = Sha256::new();
            std::io::copy(&mut open()?, &mut hash)?;
            (hash.finalize(), d)
        }
        None => {
            let mut hash = Sha256::new();
            std::io::copy(&mut decompressed(open()?)?, &mut hash)?;
            (hash.finalize(), &layer.diff_id)
        }
    };
    if found.as_slice() != expected.as_bytes() {
        bail!(
            "{}: content has digest sha256:{}, the image says {}; the image is corrupt or was modified",
            layer.name,
            hex::encode(found),
            expected.oci()
        );
    }
    Ok(())
}

/// A blob for reading, counted on the progress bar if there is one.
fn open_blob(path: &Path, bar: Option<&indicatif::ProgressBar>) -> anyhow::Result<Box<dyn Read>> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(match bar {
        Some(b) => Box::new(b.wrap_read(f)),
        None => Box::new(f),
    })
}

/// The uncompressed tar stream of a layer blob (plain, gzip or zstd, told apart by magic bytes).
fn decompressed(mut f: Box<dyn Read>) -> anyhow::Result<Box<dyn Read>> {
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic)?;
    let head = magic.get(..n).unwrap_or(&[]).to_vec();
    let stream = std::io::Cursor::new(head.clone()).chain(f);
    Ok(match Compression::sniff(&head) {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
        Compression::None => Box::new(stream),
    })
}

/// Applies one (verified) layer with OCI whiteouts, refusing entries that would land outside
/// `rootfs`.
fn apply_layer(
    blob: &Path,
    rootfs: &Path,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let reader = decompressed(open_blob(blob, bar)?)?;
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    // Owners, modes and xattrs are applied below, in the order the kernel needs: chown clears
    // setuid/setgid and `security.capability`, so the mode and xattrs go on after it. Headers
    // whose numeric owner fields are empty mean owner 0 (the tar crate's own code refuses them).
    ar.set_preserve_ownerships(false);
    ar.set_overwrite(true);
    ar.set_unpack_xattrs(false);
    // Directory times are set once the layer is done (later entries inside would change them).
    let mut dir_times: Vec<(PathBuf, filetime::FileTime)> = Vec::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let mut rel = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::RootDir | Component::CurDir => {}
                _ => bail!("entry {} leaves the root filesystem", raw.display()),
            }
        }
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            let dir = rootfs.join(&parent);
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    remove_any(&e.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&rootfs.join(&parent).join(hidden))?;
            continue;
        }
        let kind = entry.header().entry_type();
        match kind {
            // `coffer convert` drops these (the runtime provides /dev); an image made
            // elsewhere may still carry them, and they are never part of the measurement.
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => continue,
            tar::EntryType::Directory => {}
            _ => {
                // Replace, never write through, whatever a lower layer left at the path.
                let dest = rootfs.join(&rel);
                if fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                    fs::remove_file(&dest)?;
                }
            }
        }
        let header = entry.header();
        let owner = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = entry_xattrs(&mut entry)?;
        if !entry.unpack_in(rootfs)? {
            bail!("entry {} leaves the root filesystem", raw.display());
        }
        let dest = rootfs.join(&rel);
        if kind == tar::EntryType::Link {
            // A hard link has no owner or mode of its own: changing them would change (and
            // chown would strip the setgid bit of) the file it links to.
            continue;
        }
        if is_root() && owner != (0, 0) {
            let (uid, gid) = (
                u32::try_from(owner.0).unwrap_or(0),
                u32::try_from(owner.1).unwrap_or(0),
            );
            std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))
                .with_context(|| format!("setting the owner of {}", rel.display()))?;
        }
        if matches!(
            kind,
            tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse
                | tar::EntryType::Directory
        ) {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", rel.display()))?;
        }
        for (key, value) in &xattrs {
            set_xattr(&dest, key, value)
                .with_context(|| format!("setting xattr {key} on {}", rel.display()))?;
        }
        if kind == tar::EntryType::Directory {
            dir_times.push((dest, filetime::FileTime::from_unix_time(mtime as i64, 0)));
        }
    }
    for (dir, t) in dir_times.iter().rev() {
        filetime::set_file_times(dir, *t, *t)
            .with_context(|| format!("setting the times of {}", dir.display()))?;
    }
    Ok(())
}

/// The extended attributes a tar entry carries (PAX `SCHILY.xattr.NAME`), as runtimes
/// unpack them: file capabilities (`security.capability`) and the like.
fn entry_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// Sets one xattr without following a symlink. Without root, the namespaces only root may
/// write (`security.*`, `trusted.*`) are skipped, as rootless runtimes do.
fn set_xattr(path: &Path, key: &str, value: &[u8]) -> std::io::Result<()> {
    match xattr::set(path, key, value) {
        Ok(()) => Ok(()),
        Err(e) if !is_root() && !key.starts_with("user.") => {
            tracing::debug!(key, error = %e, "xattr skipped without root");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether this process runs as root (uid of `/proc/self`).
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Where `runc` is, if installed.
pub(crate) fn find_runc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
}

/// A run, ready to start.
pub(crate) struct Prepared {
    /// The work directory (unpacked image, bundle); removed on drop unless kept.
    pub(crate) _work: Option<tempfile::TempDir>,
    pub(crate) work_path: PathBuf,
    pub(crate) rootfs: PathBuf,
    pub(crate) config: ImageConfig,
    /// Container env additions (launcher settings and `-e`), in order.
    pub(crate) env: Vec<(String, String)>,
    /// Bind mounts: host path, container path, read-only.
    pub(crate) mounts: Vec<(PathBuf, String, bool)>,
    pub(crate) args: Vec<String>,
    pub(crate) name: String,
    pub(crate) hostname: String,
}

/// What `coffer run` needs, independent of clap (the demo builds it directly).
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    pub(crate) coordinator: Option<String>,
    pub(crate) workload: Option<String>,
    pub(crate) root_ca: Option<PathBuf>,
    pub(crate) sim_dir: Option<PathBuf>,
    pub(crate) env: Vec<String>,
    pub(crate) volume: Vec<String>,
    pub(crate) publish: Vec<String>,
    pub(crate) name: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) args: Vec<String>,
}

/// Open files allowed in the container: containerd's default spec (`RLIMIT_NOFILE` 1024/1024).
const NOFILE_LIMIT: u64 = 1024;

const SIM_MOUNT: &str = "/coffer/run/sim";
const CA_MOUNT: &str = "/coffer/run/coordinator-root-ca.pem";

/// Unpacks the image and collects the settings.
pub(crate) fn prepare(image: &ImageRef, opts: &RunOptions, keep: bool) -> anyhow::Result<Prepared> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut mounts: Vec<(PathBuf, String, bool)> = Vec::new();
    if let Some(c) = &opts.coordinator {
        env.push(("COFFER_COORDINATOR".into(), c.clone()));
    }
    if let Some(w) = &opts.workload {
        env.push(("COFFER_WORKLOAD".into(), w.clone()));
    }
    if let Some(ca) = &opts.root_ca {
        let ca = fs::canonicalize(ca).with_context(|| format!("--root-ca {}", ca.display()))?;
        mounts.push((ca, CA_MOUNT.into(), true));
        env.push(("COFFER_ROOT_CA".into(), CA_MOUNT.into()));
    }
    if let Some(d) = &opts.sim_dir {
        let d = fs::canonicalize(d).with_context(|| format!("--sim-dir {}", d.display()))?;
        if !d.join("sim-platform.json").is_file() {
            bail!("--sim-dir {}: no sim-platform.json (create one with `coffer evidence sim-platform --dir DIR` or let `coffer coordinator --simulation --sim-dir DIR` create it)", d.display());
        }
        mounts.push((d, SIM_MOUNT.into(), true));
        env.push(("COFFER_EVIDENCE".into(), "sim".into()));
        env.push(("COFFER_SIM_DIR".into(), SIM_MOUNT.into()));
    }
    for e in &opts.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.into(), v.into())),
            Some(_) => bail!("-e {e:?}: empty variable name"),
            None => match std::env::var(e) {
                Ok(v) => env.push((e.clone(), v)),
                Err(_) => bail!("-e {e}: not set in this environment (use -e {e}=VALUE)"),
            },
        }
    }
    for v in &opts.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (host, cont, ro) = match parts.as_slice() {
            [h, c] => (*h, *c, false),
            [h, c, "ro"] => (*h, *c, true),
            [h, c, "rw"] => (*h, *c, false),
            _ => bail!("-v {v:?}: use HOST:CONTAINER[:ro]"),
        };
        if !cont.starts_with('/') || cont.split('/').any(|c| c == "..") {
            bail!("-v {v:?}: the container path must be absolute without ..");
        }
        let host = fs::canonicalize(host).with_context(|| format!("-v {v}: host path"))?;
        mounts.push((host, cont.into(), ro));
    }
    for p in &opts.publish {
        let ok = match p.split_once(':') {
            None => p.parse::<u16>().is_ok(),
            Some((h, c)) => h.parse::<u16>().is_ok() && h == c,
        };
        if !ok {
            bail!("-p {p}: the container shares the host network, so a port is published as itself; use -p PORT");
        }
    }
    let work = tempfile::Builder::new().prefix("coffer-run-").tempdir()?;
    let work_path = work.path().to_path_buf();
    let (rootfs, config) = unpack_image(image, &work_path)?;
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("coffer-{}", &uuid_hex()[..12]));
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        bail!("--name {name:?}: letters, digits, '-', '_' and '.' only");
    }
    let hostname = match &opts.hostname {
        Some(h) => valid_hostname(h)?.to_string(),
        None => fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| valid_hostname(h).is_ok())
            .unwrap_or_else(|| "localhost".into()),
    };
    let work = if keep {
        let _ = work.keep();
        None
    } else {
        Some(work)
    };
    Ok(Prepared {
        _work: work,
        work_path,
        rootfs,
        config,
        env,
        mounts,
        args: opts.args.clone(),
        name,
        hostname,
    })
}

/// A hostname as the kernel and resolvers take it: 1 to 63 bytes of letters, digits, '-' and
/// '.', not starting with '-' or '.'.
fn valid_hostname(h: &str) -> anyhow::Result<&str> {
    let ok = (1..=63).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with(['-', '.']);
    if !ok {
        bail!("--hostname {h:?}: use 1 to 63 letters, digits, '-' and '.'");
    }
    Ok(h)
}

/// The container's /etc/hosts: this machine's (the container shares its network), plus a
/// line for the container's hostname when that names no address yet.
fn hosts_file(host_hosts: Option<&str>, hostname: &str) -> String {
    let mut hosts = host_hosts
        .unwrap_or("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        .to_string();
    let named = hosts.lines().any(|l| {
        let l = l.split('#').next().unwrap_or_default();
        l.split_whitespace().skip(1).any(|n| n == hostname)
    });
    if !named {
        if !hosts.is_empty() && !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    hosts
}

fn uuid_hex() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

impl Prepared {
    fn full_env(&self) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        // As Docker: HOSTNAME first, so the image's Env and `-e` can override it.
        env.insert("HOSTNAME".into(), self.hostname.clone());
        order.push("HOSTNAME".into());
        for kv in &self.config.env {
            if let Some((k, v)) = kv.split_once('=') {
                if env.insert(k.into(), v.into()).is_none() {
                    order.push(k.into());
                }
            }
        }
        for (k, v) in &self.env {
            if env.insert(k.clone(), v.clone()).is_none() {
                order.push(k.clone());
            }
        }
        order
            .into_iter()
            .filter_map(|k| env.get(&k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    /// Writes `config.json` for runc.
    pub(crate) fn write_bundle(&self) -> anyhow::Result<PathBuf> {
        use oci_spec::runtime::{
            LinuxNamespaceType, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
            RootBuilder, Spec, UserBuilder,
        };
        let argv = self.config.argv(&self.args);
        if argv.is_empty() {
            bail!("the image has no Entrypoint or Cmd");
        }
        let mut spec = Spec::default();
        let env: Vec<String> = self
            .full_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let (uid, gid) = numeric_user(&self.config.user);
        let process = ProcessBuilder::default()
            .terminal(false)
            .args(argv)
            .env(env)
            .cwd(if self.config.working_dir.is_empty() {
                "/".to_string()
            } else {
                self.config.working_dir.clone()
            })
            .user(UserBuilder::default().uid(uid).gid(gid).build()?)
            .capabilities(default_capabilities()?)
            .rlimits(vec![PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(NOFILE_LIMIT)
                .hard(NOFILE_LIMIT)
                .build()?])
            .no_new_privileges(true)
            .build()?;
        spec.set_process(Some(process));
        spec.set_root(Some(
            RootBuilder::default()
                .path(self.rootfs.clone())
                .readonly(false)
                .build()?,
        ));
        if let Some(linux) = spec.linux_mut() {
            if let Some(ns) = linux.namespaces_mut() {
                // Host network (loopback Coordinator, ports as-is); the UTS namespace stays,
                // so the hostname is the container's own.
                ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
            }
        }
        spec.set_hostname(Some(self.hostname.clone()));
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (host, cont, ro) in &self.mounts {
            let mut options = vec!["rbind".to_string()];
            options.push(if *ro { "ro" } else { "rw" }.to_string());
            mounts.push(
                MountBuilder::default()
                    .destination(PathBuf::from(cont))
                    .typ("bind")
                    .source(host.clone())
                    .options(options)
                    .build()?,
            );
        }
        // As runtimes do: the container's own /etc/hostname and /etc/hosts, and this machine's
        // resolver configuration (the network is this machine's).
        let hostname_file = self.work_path.join("hostname");
        fs::write(&hostname_file, format!("{}\n", self.hostname))?;
        let hosts = fs::read_to_string("/etc/hosts").ok();
        let hosts_path = self.work_path.join("hosts");
        fs::write(&hosts_path, hosts_file(hosts.as_deref(), &self.hostname))?;
        let mut files = vec![("/etc/hostname", hostname_file), ("/etc/hosts", hosts_path)];
        if Path::new("/etc/resolv.conf").is_file() {
            files.push(("/etc/resolv.conf", PathBuf::from("/etc/resolv.conf")));
        }
        for (dest, source) in files {
            mounts.push(
                MountBuilder::default()
                    .destination(PathBuf::from(dest))
                    .typ("bind")
                    .source(source)
                    .options(vec!["rbind".to_string(), "ro".to_string()])
                    .build()?,
            );
        }
        spec.set_mounts(Some(mounts));
        let bundle = self.work_path.clone();
        let mut f = fs::File::create(bundle.join("config.json"))?;
        f.write_all(serde_json::to_string_pretty(&spec)?.as_bytes())?;
        Ok(bundle)
    }

    /// Starts the container under runc (`runc run --bundle … NAME`), stdio inherited unless
    /// `quiet`.
    pub(crate) fn spawn_runc(&self, runc: &Path, stdio: StdioMode) -> anyhow::Result<Child> {
        let bundle = self.write_bundle()?;
        let mut c = Command::new(runc);
        c.arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&self.name)
            .stdin(Stdio::null());
        stdio.apply(&mut c, &self.work_path)?;
        c.spawn()
            .with_context(|| format!("starting {}", runc.display()))
    }

    /// Starts the image's entrypoint (the launcher) as a local process with COFFER_ROOTFS set
    /// to the unpacked image (and COFFER_CHROOT=1 when root, so the app sees the image as `/`).
    pub(crate) fn spawn_local(&self, stdio: StdioMode) -> anyhow::Result<Child> {
        let argv = self.config.argv(&self.args);
        let Some(program) = argv.first() else {
            bail!("the image has no Entrypoint or Cmd")
        };
        if !program.starts_with('/') {
            bail!("entrypoint {program:?} is not an absolute path inside the image");
        }
        let host_program = self.rootfs.join(program.trim_start_matches('/'));
        let mut c = Command::new(&host_program);
        c.args(argv.iter().skip(1)).env_clear().stdin(Stdio::null());
        for (k, v) in self.full_env() {
            c.env(k, v);
        }
        // Outside a container the mounts are the host paths themselves.
        for (host, cont, _) in &self.mounts {
            if cont == CA_MOUNT {
                c.env("COFFER_ROOT_CA", host);
            } else if cont == SIM_MOUNT {
                c.env("COFFER_SIM_DIR", host);
            }
        }
        c.env("COFFER_ROOTFS", &self.rootfs);
        c.env("COFFER_CHROOT", if is_root() { "1" } else { "0" });
        stdio.apply(&mut c, &self.work_path)?;
        c.spawn()
            .with_context(|| format!("starting {}", host_program.display()))
    }
}

/// Where a started container's output goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StdioMode {
    /// This process's stdout/stderr.
    Inherit,
    /// Files `stdout.log`/`stderr.log` in the work directory (the demo).
    Logs,
}

impl StdioMode {
    fn apply(self, c: &mut Command, work: &Path) -> anyhow::Result<()> {
        if let StdioMode::Logs = self {
            c.stdout(fs::File::create(work.join("stdout.log"))?);
            c.stderr(fs::File::create(work.join("stderr.log"))?);
        }
        Ok(())
    }
}

/// Docker's default capability set: the launcher needs CAP_CHOWN, CAP_SETUID and CAP_SETGID to
/// hand files to the image's user and switch to it; apps expect the rest.
fn default_capabilities() -> anyhow::Result<oci_spec::runtime::LinuxCapabilities> {
    use oci_spec::runtime::{Capabilities, Capability as C, LinuxCapabilitiesBuilder};
    let set: Capabilities = [
        C::Chown,
        C::DacOverride,
        C::Fsetid,
        C::Fowner,
        C::Mknod,
        C::NetRaw,
        C::Setgid,
        C::Setuid,
        C::Setfcap,
        C::Setpcap,
        C::NetBindService,
        C::SysChroot,
        C::Kill,
        C::AuditWrite,
    ]
    .into_iter()
    .collect();
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .build()?)
}

fn numeric_user(user: &str) -> (u32, u32) {
    // The launcher runs as root inside the container and switches to the image's user itself
    // (resolving names from the image's /etc/passwd) after writing the files it owns.
    let _ = user;
    (0, 0)
}

/// How long a stopped container gets between the forwarded signal and SIGKILL (Docker's
/// `docker stop` default).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Signals that ask `coffer run` to stop, delivered on a channel (a thread runs the handler).
fn watch_stop_signals() -> anyhow::Result<std::sync::mpsc::Receiver<Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, before the container starts, so no early signal is missed.
    let mut streams = rt.block_on(async {
        Ok::<_, std::io::Error>([
            (Signal::TERM, signal(SignalKind::terminate())?),
            (Signal::INT, signal(SignalKind::interrupt())?),
            (Signal::HUP, signal(SignalKind::hangup())?),
        ])
    })?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let [(n0, s0), (n1, s1), (n2, s2)] = &mut streams;
            loop {
                let n = tokio::select! {
                    _ = s0.recv() => *n0,
                    _ = s1.recv() => *n1,
                    _ = s2.recv() => *n2,
                };
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
    });
    Ok(rx)
}

/// Sends `sig` to the container (`runc kill`) or, without a runtime, to the local process.
fn signal_container(runc: Option<&Path>, name: &str, child: &Child, sig: Signal) {
    match runc {
        Some(r) => {
            let _ = Command::new(r)
                .args(["kill", name, &sig.as_raw().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The child has not been reaped yet, so its pid cannot have been reused.
        None => {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), sig);
        }
    }
}

/// Waits for the container; on a stop request forwards the signal, gives the app
/// [`STOP_GRACE`] (a second request cuts it short), then kills it and removes the container.
fn wait_or_stop(
    child: &mut Child,
    runc: Option<&Path>,
    name: &str,
    stop_requests: &std::sync::mpsc::Receiver<Signal>,
) -> anyhow::Result<std::process::ExitStatus> {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};
    let tick = Duration::from_millis(100);
    let first = loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        match stop_requests.recv_timeout(tick) {
            Ok(sig) => break sig,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(child.wait()?),
        }
    };
    eprintln!(
        "coffer run: stopping {name} (signal {}; SIGKILL after {} s or on a second signal)",
        first.as_raw(),
        STOP_GRACE.as_secs()
    );
    signal_container(runc, name, child, first);
    let deadline = Instant::now() + STOP_GRACE;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        let again = stop_requests.recv_timeout(tick).is_ok();
        if again || Instant::now() >= deadline {
            signal_container(runc, name, child, Signal::KILL);
            break child.wait()?;
        }
    };
    if let Some(r) = runc {
        // `runc run` removes the container when it ends; after a kill make sure of it.
        let _ = Command::new(r)
            .args(["delete", "--force", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(status)
}

/// The exit code a shell would report for a child's status.
pub(crate) fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(s)) => u8::try_from(128 + s).unwrap_or(255),
        _ => 1,
    }
}

/// Runs `coffer run`.
pub(crate) fn run(args: RunArgs, global: Global) -> anyhow::Result<ExitCode> {
    let opts = RunOptions {
        coordinator: args.coordinator,
        workload: args.workload,
        root_ca: args.root_ca,
        sim_dir: args.sim_dir,
        env: args.env,
        volume: args.volume,
        publish: args.publish,
        name: args.name,
        hostname: args.hostname,
        args: args.args,
    };
    let runc = if args.no_runtime { None } else { find_runc() };
    if runc.is_none() && (!opts.volume.is_empty() || opts.hostname.is_some()) {
        return Err(Failure::new(
            "usage",
            "-v and --hostname need a container runtime: install runc (`bash \
             scripts/install-deps.sh`) and drop --no-runtime",
        )
        .into());
    }
    // Watch for SIGTERM/SIGINT/SIGHUP from the start: a stop request, even during the pull or
    // the unpacking, must never leave the container, runc or the unpacked image behind.
    let stop_requests = watch_stop_signals()?;
    // A registry image is pulled into a layout first (its blobs stay in the shared cache).
    let pulled = tempfile::Builder::new().prefix("coffer-pull-").tempdir()?;
    let image = if args.image.starts_with(crate::cmd::registry::DOCKER) {
        let dir = pulled.path().join("image");
        let r = crate::cmd::registry::pull(&args.image, &dir, &args.registry, global.json)?;
        ImageRef {
            format: Format::OciDir,
            path: dir,
            tag: Some(r.tag),
        }
    } else {
        image_ref(&args.image).map_err(|e| Failure::new("usage", format!("{e:#}")))?
    };
    let prepared =
        prepare(&image, &opts, args.keep).map_err(|e| Failure::new("image", format!("{e:#}")))?;
    drop(pulled);
    if args.keep {
        eprintln!(
            "coffer run: keeping the unpacked image and bundle in {}",
            prepared.work_path.display()
        );
    }
    for p in &opts.publish {
        eprintln!(
            "coffer run: port {} is published as itself (host network)",
            p.split(':').next().unwrap_or(p)
        );
    }
    if !args.no_runtime && runc.is_none() {
        eprintln!("coffer run: warning: runc is not installed (bash scripts/install-deps.sh); running the launcher as a local process instead");
    }
    if let Ok(sig) = stop_requests.try_recv() {
        eprintln!(
            "coffer run: stopped (signal {}) before the container started",
            sig.as_raw()
        );
        drop(prepared);
        return Ok(ExitCode::from(128 + sig.as_raw() as u8));
    }
    let mut child = match &runc {
        Some(r) => prepared.spawn_runc(r, StdioMode::Inherit)?,
        None => prepared.spawn_local(StdioMode::Inherit)?,
    };
    let status = wait_or_stop(&mut child, runc.as_deref(), &prepared.name, &stop_requests)?;
    let code = exit_code_of(status);
    if global.json {
        crate::output::print_json(
            &serde_json::json!({ "exit_code": code, "name": prepared.name }),
        )?;
    }
    drop(prepared);
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    /// Writes `tar` as a layer blob in `dir`; returns its path.
    fn layer_blob(dir: &Path, tar: &[u8]) -> PathBuf {
        let path = dir.join("layer.tar");
        fs::write(&path, tar).unwrap();
        path
    }

    /// The layer a Debian root filesystem tarball (mmdebstrap, `docker import`) looks like:
    /// root:shadow setgid helpers, setuid programs, a sticky /tmp, a file capability, a hard
    /// link, device nodes and a FIFO.
    fn debian_like_layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, gid: u64| {
            let mut h = header(tar::EntryType::Directory, mode, 0, gid, 1_000_000);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        };
        let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, gid: u64| {
            let mut h = header(tar::EntryType::Regular, mode, 0, gid, 2_000_000);
            h.set_size(4);
            b.append_data(&mut h, path, &b"\x7fELF"[..]).unwrap();
        };
        dir(&mut b, "usr/", 0o755, 0);
        dir(&mut b, "usr/bin/", 0o755, 0);
        dir(&mut b, "tmp/", 0o1777, 0);
        dir(&mut b, "var/", 0o755, 0);
        dir(&mut b, "var/mail/", 0o2775, 8);
        file(&mut b, "usr/bin/chage", 0o2755, 42);
        file(&mut b, "usr/bin/passwd", 0o4755, 0);
        // A file capability, as `ping` carries it: PAX SCHILY.xattr.security.capability (and a
        // user.* attribute, which any owner may set).
        let cap = [
            1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        b.append_pax_extensions([
            ("SCHILY.xattr.security.capability", &cap[..]),
            ("SCHILY.xattr.user.coffer", &b"kept"[..]),
        ])
        .unwrap();
        file(&mut b, "usr/bin/ping", 0o755, 0);
        let mut h = header(tar::EntryType::Link, 0o2755, 0, 42, 2_000_000);
        b.append_link(&mut h, "usr/bin/expiry", "usr/bin/chage")
            .unwrap();
        dir(&mut b, "dev/", 0o755, 0);
        let mut h = header(tar::EntryType::Char, 0o666, 0, 0, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", std::io::empty()).unwrap();
        let mut h = header(tar::EntryType::Fifo, 0o600, 0, 0, 0);
        b.append_data(&mut h, "dev/initctl", std::io::empty())
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacking_keeps_modes_owners_xattrs_links_and_times_and_drops_devices() {
        let t = tempfile::tempdir().unwrap();
        let blob = layer_blob(t.path(), &debian_like_layer());
        let rootfs = t.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        apply_layer(&blob, &rootfs, None).unwrap();

        let meta = |p: &str| fs::symlink_metadata(rootfs.join(p)).unwrap();
        let mode = |p: &str| meta(p).permissions().mode() & 0o7777;
        // setgid survives the change of group (chown clears it; it must be re-applied).
        assert_eq!(mode("usr/bin/chage"), 0o2755);
        assert_eq!(mode("usr/bin/passwd"), 0o4755);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("var/mail"), 0o2775);
        if is_root() {
            assert_eq!(meta("usr/bin/chage").gid(), 42);
            assert_eq!(meta("var/mail").gid(), 8);
            let cap = xattr::get(rootfs.join("usr/bin/ping"), "security.capability").unwrap();
            assert_eq!(cap.as_deref().map(<[u8]>::len), Some(20));
        }
        // user.* needs a file system that stores them (tmpfs only since Linux 6.6).
        if xattr::SUPPORTED_PLATFORM && xattr::set(rootfs.join("tmp"), "user.probe", b"1").is_ok() {
            let v = xattr::get(rootfs.join("usr/bin/ping"), "user.coffer").unwrap();
            assert_eq!(v.as_deref(), Some(&b"kept"[..]));
        }
        // A hard link shares the inode; times are the headers'.
        assert_eq!(meta("usr/bin/expiry").ino(), meta("usr/bin/chage").ino());
        assert_eq!(meta("usr/bin/chage").mtime(), 2_000_000);
        assert_eq!(meta("usr/bin").mtime(), 1_000_000);
        assert_eq!(meta("usr").mtime(), 1_000_000);
        // Device nodes and FIFOs are not created (the runtime provides /dev).
        assert!(fs::symlink_metadata(rootfs.join("dev/null")).is_err());
        assert!(fs::symlink_metadata(rootfs.join("dev/initctl")).is_err());
    }

    #[test]
    fn entries_leaving_the_root_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut raw = header(tar::EntryType::Regular, 0o644, 0, 0, 0);
        raw.set_size(1);
        // Builder::append_data refuses "..": write the name into the header directly.
        let name = b"../escape";
        raw.as_old_mut().name[..name.len()].copy_from_slice(name);
        raw.set_cksum();
        let mut tar_bytes = raw.as_bytes().to_vec();
        tar_bytes.extend_from_slice(&[b'x'; 1]);
        tar_bytes.resize(1024 + 1024, 0);
        let blob = layer_blob(t.path(), &tar_bytes);
        let rootfs = t.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        let e = apply_layer(&blob, &rootfs, None).unwrap_err();
        assert!(
            e.to_string().contains("leaves the root filesystem"),
            "{e:#}"
        );
        assert!(!t.path().join("escape").exists());
    }

    #[test]
    fn hosts_names_the_hostname_once_and_hostnames_are_checked() {
        let host = "127.0.0.1\tlocalhost\n10.0.0.5 db # primary\n";
        assert_eq!(
            hosts_file(Some(host), "web-1"),
            format!("{host}127.0.1.1\tweb-1\n")
        );
        assert_eq!(
            hosts_file(Some("10.0.0.7 web-1"), "web-1"),
            "10.0.0.7 web-1"
        );
        // A name only in a comment is not a name.
        assert!(hosts_file(Some("# web-1\n"), "web-1").ends_with("127.0.1.1\tweb-1\n"));
        assert!(hosts_file(None, "web-1").starts_with("127.0.0.1\tlocalhost\n"));
        for bad in ["", "-x", ".x", "a b", "a/b", "a\nb", &"a".repeat(64)] {
            assert!(valid_hostname(bad).is_err(), "{bad:?}");
        }
        assert!(valid_hostname("web-1.example").is_ok());
    }
}
