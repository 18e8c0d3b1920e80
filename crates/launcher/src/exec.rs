//! Replacing the launcher with the app (`execve`), so the app keeps the PID, receives the
//! signals and its exit status is the container's.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::materialise::AppUser;
use crate::{fsutil, Error};

/// The search path used when the app's environment has no `PATH` (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to exec.
#[derive(Clone)]
pub struct Plan {
    /// argv, `argv[0]` included.
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the image.
    pub workdir: String,
    /// User to switch to.
    pub user: Option<AppUser>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // argv and env values may be secrets.
        f.debug_struct("Plan")
            .field("program", &self.argv.first())
            .field("argc", &self.argv.len())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("workdir", &self.workdir)
            .field("user", &self.user)
            .finish()
    }
}

/// Finds the program the way `execvp` would, inside the image rooted at `root`; returns the
/// path to exec (host path when `root` is not `/`).
pub fn find_program(root: &Path, program: &str, path_var: Option<&str>) -> Result<PathBuf, Error> {
    let not_found = |why: String| Error::Exec {
        program: program.to_string(),
        reason: why,
        status: 127,
    };
    if program.is_empty() {
        return Err(not_found(
            "the image has no Entrypoint or Cmd and the manifest gives no argv".into(),
        ));
    }
    if program.contains('/') {
        let image_path = if program.starts_with('/') {
            program.to_string()
        } else {
            format!("/{program}")
        };
        let host = fsutil::resolve(root, &image_path)
            .map_err(|e| not_found(format!("cannot resolve inside the image: {e}")))?;
        return Ok(host);
    }
    for dir in path_var
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .filter(|d| d.starts_with('/'))
    {
        let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
        if let Ok(host) = fsutil::resolve(root, &candidate) {
            if let Ok(m) = std::fs::metadata(&host) {
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    return Ok(host);
                }
            }
        }
    }
    Err(not_found(format!(
        "not found in PATH {}",
        path_var.unwrap_or(DEFAULT_PATH)
    )))
}

/// Execs the plan; returns only on failure. With `chroot`, the process first changes its root
/// to `root` (it must be privileged), so the app sees the image as `/` exactly as under a
/// container runtime; otherwise the program and working directory are resolved under `root`
/// (which is `/` inside a container).
pub fn exec(root: &Path, chroot: bool, plan: &Plan) -> Error {
    let program = plan.argv.first().cloned().unwrap_or_default();
    let effective_root: PathBuf = if chroot && root != Path::new("/") {
        if let Err(e) = std::os::unix::fs::chroot(root) {
            return Error::Exec {
                program,
                reason: format!("chroot into {}: {e} (needs root)", root.display()),
                status: 126,
            };
        }
        if let Err(e) = std::env::set_current_dir("/") {
            return Error::io("changing directory to", "/", e);
        }
        PathBuf::from("/")
    } else {
        root.to_path_buf()
    };
    let host_program = match find_program(
        &effective_root,
        &program,
        plan.env.get("PATH").map(String::as_str),
    ) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let workdir = if plan.workdir.is_empty() {
        "/"
    } else {
        plan.workdir.as_str()
    };
    let host_workdir = match fsutil::resolve(&effective_root, workdir) {
        Ok(p) => p,
        Err(e) => {
            return Error::Exec {
                program,
                reason: format!("working directory {workdir}: {e}"),
                status: 126,
            }
        }
    };
    let mut cmd = Command::new(&host_program);
    cmd.arg0(&program)
        .args(plan.argv.iter().skip(1))
        .env_clear()
        .envs(&plan.env)
        .current_dir(&host_workdir);
    if let Some(u) = plan.user {
        cmd.uid(u.uid).gid(u.gid);
    }
    let e = cmd.exec();
    let status = match e.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    Error::Exec {
        program,
        reason: e.to_string(),
        status,
    }
}
