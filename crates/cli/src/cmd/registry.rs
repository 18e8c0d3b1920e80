//! `docker://REF` for `coffer convert` and `coffer run`: the registry flags (as skopeo has
//! them) and blocking wrappers around `coffer_registry` with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use coffer_registry::{Options, Progress, ProgressFn, PullReport, PushReport};

use crate::output::Failure;

/// The transport prefix of registry references.
pub(crate) const DOCKER: &str = "docker://";

/// How to reach `docker://` registries.
#[derive(Args, Clone)]
pub(crate) struct RegistryArgs {
    /// Registry credentials for docker:// references (default: the auth file's entry for the
    /// registry, else anonymous).
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "COFFER_REGISTRY_CREDS",
        hide_env_values = true
    )]
    creds: Option<String>,
    /// Require HTTPS and verified certificates for docker:// registries; --tls-verify=false
    /// also allows unverified HTTPS and plain HTTP.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    tls_verify: bool,
    /// Directory of extra CA certificates (`*.crt`, PEM) trusted for docker:// registries.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Auth file with registry credentials (default: $REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Blob cache shared between pulls and pushes (default: ~/.cache/coffer/blobs).
    #[arg(long, value_name = "DIR", env = "COFFER_BLOB_CACHE")]
    blob_cache: Option<PathBuf>,
}

impl std::fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryArgs")
            .field("creds", &self.creds.as_ref().map(|_| "<redacted>"))
            .field("tls_verify", &self.tls_verify)
            .field("cert_dir", &self.cert_dir)
            .field("authfile", &self.authfile)
            .field("blob_cache", &self.blob_cache)
            .finish()
    }
}

impl RegistryArgs {
    /// Refuses `--creds` when pulling from one registry and pushing to another: the same
    /// password would go to both (use the auth file, which is per registry).
    pub(crate) fn check_one_registry(&self, source: &str, target: &str) -> anyhow::Result<()> {
        if self.creds.is_none() || !source.starts_with(DOCKER) || !target.starts_with(DOCKER) {
            return Ok(());
        }
        let (a, b) = (
            coffer_registry::registry_of(source).map_err(fail)?,
            coffer_registry::registry_of(target).map_err(fail)?,
        );
        if a != b {
            return Err(Failure::new(
                "usage",
                format!(
                    "--creds would be sent to both {a} and {b}; log in to each registry instead \
                     (the auth file holds credentials per registry) and drop --creds"
                ),
            )
            .into());
        }
        Ok(())
    }

    fn options(&self) -> Options {
        let mut o = Options::new(
            self.blob_cache
                .clone()
                .unwrap_or_else(coffer_registry::default_cache_dir),
        );
        o.tls_verify = self.tls_verify;
        o.cert_dir = self.cert_dir.clone();
        o.creds = self.creds.clone();
        o.auth_file = self.authfile.clone();
        o
    }
}

fn fail(e: coffer_registry::Error) -> anyhow::Error {
    anyhow::Error::new(Failure::new(e.kind(), e.to_string()))
}

/// A byte progress bar on a terminal (never with --json), fed by transfers.
fn progress_bar(label: &'static str, json: bool) -> (Option<indicatif::ProgressBar>, ProgressFn) {
    if json || !std::io::stderr().is_terminal() {
        return (None, Arc::new(|_| {}));
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(label);
    let b = bar.clone();
    let f: ProgressFn = Arc::new(move |p| match p {
        Progress::Start(total) => b.set_length(total),
        Progress::Advance(n) => b.inc(n),
    });
    (Some(bar), f)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Runs one transfer on a runtime of its own, with a progress bar on a terminal.
fn transfer<T, F>(
    label: &'static str,
    json: bool,
    run: impl FnOnce(ProgressFn) -> F,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<T, coffer_registry::Error>>,
{
    let (bar, progress) = progress_bar(label, json);
    let result = runtime()?.block_on(run(progress));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result.map_err(fail)
}

/// Pulls `reference` into a new OCI layout at `dest`.
pub(crate) fn pull(
    reference: &str,
    dest: &Path,
    args: &RegistryArgs,
    json: bool,
) -> anyhow::Result<PullReport> {
    let opts = args.options();
    let r = transfer("pulling", json, |progress| async move {
        coffer_registry::pull(reference, dest, &opts, &progress).await
    })?;
    if !json {
        eprintln!(
            "pulled {} ({}): {} blobs, {} MiB downloaded, {} MiB from the cache",
            r.reference,
            r.manifest_digest,
            r.blobs,
            r.downloaded >> 20,
            r.cached >> 20
        );
    }
    Ok(r)
}

/// Pushes the image tagged `tag` of the OCI layout at `src` to `reference`.
pub(crate) fn push(
    src: &Path,
    tag: &str,
    reference: &str,
    args: &RegistryArgs,
    json: bool,
) -> anyhow::Result<PushReport> {
    let opts = args.options();
    let r = transfer("pushing", json, |progress| async move {
        coffer_registry::push(src, Some(tag), reference, &opts, &progress).await
    })?;
    if !json {
        eprintln!(
            "pushed {} ({}): {} blobs uploaded ({} MiB), {} already in the registry",
            r.reference,
            r.manifest_digest,
            r.uploaded,
            r.bytes >> 20,
            r.skipped
        );
    }
    Ok(r)
}
