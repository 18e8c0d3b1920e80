//! Walks what a converted SGX image does when it starts, and checks every step against
//! Gramine's rules ([`Policy`]): the host loader's start outside the enclave, the launcher's
//! configuration, reads and writes inside it, and the app's exec with its ELF interpreter,
//! libraries and shebang interpreters.
//!
//! The launcher's side follows its documented contract (`crates/launcher/src/lib.rs`): it
//! needs `COFFER_COORDINATOR`, `COFFER_WORKLOAD`, `COFFER_EVIDENCE` and one trust pin; it reads
//! `/coffer/workload.json`, the pinned root CA and the image's `/etc/passwd` and `/etc/group`;
//! it writes `/coffer/tls/{cert,key,root-ca}.pem` and the manifest's files into
//! `COFFER_SECRET_DIRS`; then it execs the image's `Entrypoint ++ Cmd` found through `PATH`.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};

use crate::image::{normalise, Image, Node};
use crate::policy::{Access, Env, MountKind, Policy};
use crate::Error;

/// Where `coffer convert --tee sgx` puts the manifest.
pub const MANIFEST: &str = "/coffer/gramine/coffer.manifest.sgx";
/// The launcher's own inputs and outputs.
const WORKLOAD: &str = "/coffer/workload.json";
const TLS_FILES: &[&str] = &[
    "/coffer/tls/cert.pem",
    "/coffer/tls/key.pem",
    "/coffer/tls/root-ca.pem",
];
/// Variables the host may give the enclave: where the Coordinator is, the instance id and a
/// timeout. Anything else from the host could steer the launcher.
const PASSTHROUGH_OK: &[&str] = &[
    "COFFER_ACTIVATE_TIMEOUT",
    "COFFER_COORDINATOR",
    "COFFER_INSTANCE_ID",
];
/// Docker's default `PATH`, which the launcher uses when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The dynamic linker's system directories on Debian-family images (after its cache).
const DEFAULT_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
];
/// Gramine's patched glibc in a converted image: apps must load it, not the image's, or
/// every system call is trapped and emulated.
const RUNTIME_GLIBC: &str = "/coffer/gramine/lib/runtime/glibc";
/// Nested shebang interpreters followed (Linux allows 4).
const MAX_SCRIPT_DEPTH: usize = 4;

/// One thing the image does at start, and what Gramine (or the host) makes of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// `read`, `write`, `exec`, `interpreter`, `library`, `host` …
    pub action: &'static str,
    /// The path as the enclave names it.
    pub path: String,
    /// Gramine's answer.
    pub access: Access,
}

/// The result of [`check_image`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// What would stop the start or leak a secret, one sentence each.
    pub problems: Vec<String>,
}

impl Report {
    /// True when nothing would stop the start or leak.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn step(&mut self, action: &'static str, path: &str, access: Access) -> Access {
        self.steps.push(Step {
            action,
            path: path.to_string(),
            access: access.clone(),
        });
        access
    }

    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// Whether a step `action` on `path` was taken.
    pub fn has(&self, action: &str, path: &str) -> bool {
        self.steps
            .iter()
            .any(|s| s.action == action && s.path == path)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            writeln!(f, "{:<12} {:<60} {:?}", s.action, s.path, s.access)?;
        }
        for p in &self.problems {
            writeln!(f, "PROBLEM: {p}")?;
        }
        Ok(())
    }
}

fn bytes<'a>(image: &'a Image, path: &str) -> Option<&'a [u8]> {
    match image.resolve(path)?.1 {
        Node::File { bytes: Some(b), .. } => Some(b),
        _ => None,
    }
}

/// Checks a converted SGX image (see the module docs). The manifest is read from the image.
pub fn check_image(image: &Image) -> Result<Report, Error> {
    let text = bytes(image, MANIFEST)
        .ok_or_else(|| Error::Image(format!("the image has no {MANIFEST}")))?;
    let policy = Policy::from_manifest(
        std::str::from_utf8(text).map_err(|_| Error::Manifest("not UTF-8".into()))?,
    )?;
    let wf: serde_json::Value = serde_json::from_slice(
        bytes(image, WORKLOAD)
            .ok_or_else(|| Error::Image(format!("the image has no {WORKLOAD}")))?,
    )
    .map_err(|e| Error::Image(format!("{WORKLOAD}: {e}")))?;
    let mut r = Report::default();
    check_trusted_entries(image, &policy, &mut r);
    check_host_start(image, &mut r);
    check_launcher(image, &policy, &wf, &mut r);
    check_app(image, &policy, &wf, &mut r);
    Ok(r)
}

/// Every trusted entry must reach, through the host's symlinks, a file with its hash: a wrong
/// entry would make Gramine refuse a file the app needs.
fn check_trusted_entries(image: &Image, policy: &Policy, r: &mut Report) {
    for (path, want) in &policy.trusted {
        match image.resolve(path) {
            Some((_, Node::File { sha256, .. })) if sha256 == want => {}
            Some((target, Node::File { .. })) => r.problem(format!(
                "trusted file {path} reaches {target}, whose content has another SHA-256"
            )),
            _ => r.problem(format!("trusted file {path} does not exist in the image")),
        }
    }
    match image.resolve(&policy.loader_entrypoint.0) {
        Some((_, Node::File { sha256, .. })) if *sha256 == policy.loader_entrypoint.1 => {}
        _ => r.problem(format!(
            "Gramine's LibOS {} is missing or differs from loader.entrypoint.sha256",
            policy.loader_entrypoint.0
        )),
    }
}

/// Outside the enclave: the image's ENTRYPOINT starts Gramine's host loader, which must find
/// its ELF interpreter and libraries in the image (with `LD_LIBRARY_PATH` = its directory).
fn check_host_start(image: &Image, r: &mut Report) {
    const LOADER: &str = "/coffer/gramine/host/loader";
    const HOST_DIR: &str = "/coffer/gramine/host";
    for p in [
        "/coffer/launcher",
        "/coffer/gramine/lib/sgx/libpal.so",
        LOADER,
    ] {
        if !matches!(image.resolve(p), Some((_, Node::File { .. }))) {
            r.problem(format!("the host start needs {p}, which the image lacks"));
            return;
        }
    }
    let Some(loader) = bytes(image, LOADER) else {
        return;
    };
    let elf = match Elf::parse(loader) {
        Ok(e) => e,
        Err(e) => return r.problem(format!("{LOADER}: {e}")),
    };
    if let Some(interp) = &elf.interp {
        let found = image.resolve(interp).is_some();
        r.steps.push(Step {
            action: "host",
            path: interp.clone(),
            access: if found {
                Access::Allowed
            } else {
                Access::Missing
            },
        });
        if !found {
            r.problem(format!(
                "Gramine's host loader needs its interpreter {interp}, which the image lacks"
            ));
        }
    }
    let mut queue: VecDeque<String> = elf.needed.clone().into();
    let mut seen = BTreeSet::new();
    while let Some(lib) = queue.pop_front() {
        // The dynamic linker answers a DT_NEEDED of its own name (libc.so.6 names it).
        if !seen.insert(lib.clone()) || (elf.interp.is_some() && lib.starts_with("ld-linux")) {
            continue;
        }
        let path = format!("{HOST_DIR}/{lib}");
        match bytes(image, &path).map(Elf::parse) {
            Some(Ok(e)) => {
                r.steps.push(Step {
                    action: "host",
                    path,
                    access: Access::Allowed,
                });
                queue.extend(e.needed);
            }
            _ => r.problem(format!(
                "Gramine's host loader needs {lib}, which is not in {HOST_DIR}"
            )),
        }
    }
}

fn check_launcher(image: &Image, policy: &Policy, wf: &serde_json::Value, r: &mut Report) {
    // Configuration: measured, or one of the harmless pass-throughs.
    for (name, e) in &policy.env {
        if *e == Env::Passthrough && !PASSTHROUGH_OK.contains(&name.as_str()) {
            r.problem(format!(
                "loader.env.{name} passes the host's value into the enclave"
            ));
        }
    }
    if policy.env.get("COFFER_COORDINATOR") != Some(&Env::Passthrough)
        && policy.fixed("COFFER_COORDINATOR").is_none()
    {
        r.problem("COFFER_COORDINATOR neither passes through nor is fixed: the launcher cannot find the Coordinator".into());
    }
    if policy.fixed("COFFER_EVIDENCE") != Some("gramine") {
        r.problem("COFFER_EVIDENCE is not fixed to gramine".into());
    }
    if policy.fixed("COFFER_WORKLOAD").is_none_or(str::is_empty) {
        r.problem("COFFER_WORKLOAD is not fixed: the launcher would not know its workload".into());
    }
    let measurement_pin = policy.fixed("COFFER_COORDINATOR_MRENCLAVE").is_some()
        || (policy.fixed("COFFER_COORDINATOR_MRSIGNER").is_some()
            && policy.fixed("COFFER_COORDINATOR_ISVPRODID").is_some());
    match (
        policy.fixed("COFFER_ROOT_CA"),
        measurement_pin.then_some(()),
    ) {
        (Some(ca), _) => {
            if !matches!(
                r.step("read", ca, policy.open(image, ca)),
                Access::Trusted { .. }
            ) {
                r.problem(format!(
                    "the launcher's trust pin {ca} is not a trusted file"
                ));
            }
        }
        (None, Some(_)) => {}
        (None, None) => {
            r.problem("no trust pin is fixed: the launcher would trust no Coordinator".into())
        }
    }
    if !policy.sigterm_injection {
        r.problem(
            "sys.enable_sigterm_injection is off: kubelet's SIGTERM never reaches the app".into(),
        );
    }
    if policy.entrypoint != "/coffer/launcher"
        || policy.argv.first().map(String::as_str) != Some("/coffer/launcher")
    {
        r.problem(format!(
            "the enclave starts {} with argv {:?}, not the launcher",
            policy.entrypoint, policy.argv
        ));
    }
    // The launcher itself: the LibOS loads it like any executable.
    exec(image, policy, DEFAULT_PATH, "/coffer/launcher", &[], r, 0);

    if !matches!(
        r.step("read", WORKLOAD, policy.open(image, WORKLOAD)),
        Access::Trusted { .. }
    ) {
        r.problem(format!("{WORKLOAD} is not a trusted file"));
    }
    let named_user = wf["user"].as_str().is_some_and(|u| {
        u.split(':')
            .any(|p| !p.is_empty() && p.parse::<u32>().is_err())
    });
    for db in ["/etc/passwd", "/etc/group"] {
        if image.resolve(db).is_none() {
            continue;
        }
        let a = r.step("read", db, policy.open(image, db));
        if matches!(
            a,
            Access::Denied | Access::Missing | Access::HashMismatch { .. }
        ) && named_user
        {
            r.problem(format!(
                "the image's user is a name, but Gramine refuses {db}"
            ));
        }
    }
    r.step(
        "read",
        "/dev/attestation/quote",
        policy.open(image, "/dev/attestation/quote"),
    );
    // `--encrypt` files: the launcher writes the mounts' key and reads each through its mount.
    for f in wf["encrypted_files"].as_array().into_iter().flatten() {
        let Some(path) = f["path"].as_str() else {
            continue;
        };
        match r.step("read", path, policy.open(image, path)) {
            Access::InEnclave(MountKind::Encrypted) => {
                if !matches!(image.resolve(path), Some((_, Node::File { .. }))) {
                    r.problem(format!("the encrypted file {path} is missing on the host"));
                }
                if f.get("plaintext_mac").is_none() {
                    r.problem(format!(
                        "{path} is mounted encrypted but stored in Coffer's own format"
                    ));
                }
            }
            other => r.problem(format!(
                "the encrypted file {path} is not under an encrypted mount: {other:?}"
            )),
        }
    }

    // Secrets: only into the enclave.
    let mut secret_files: Vec<String> = TLS_FILES.iter().map(|s| s.to_string()).collect();
    for d in policy
        .fixed("COFFER_SECRET_DIRS")
        .unwrap_or("")
        .split(':')
        .filter(|d| !d.is_empty())
    {
        if policy.mount_of(d) != Some(MountKind::Tmpfs) {
            r.problem(format!(
                "COFFER_SECRET_DIRS names {d}, which is not an in-enclave tmpfs"
            ));
        }
        secret_files.push(format!("{}/secret", d.trim_end_matches('/')));
    }
    for f in secret_files {
        match r.step("write", &f, policy.create(&f)) {
            Access::InEnclave(_) => {}
            Access::Allowed => r.problem(format!(
                "the launcher writes {f}, which Gramine would store on the host's disk in plaintext"
            )),
            _ => r.problem(format!(
                "Gramine refuses to create {f}, which the launcher writes"
            )),
        }
    }
}

fn check_app(image: &Image, policy: &Policy, wf: &serde_json::Value, r: &mut Report) {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let argv: Vec<String> = strings(&wf["entrypoint"])
        .into_iter()
        .chain(strings(&wf["cmd"]))
        .collect();
    let Some(program) = argv.first() else {
        r.problem("the image has no Entrypoint or Cmd".into());
        return;
    };
    let env = strings(&wf["env"]);
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let workdir = wf["working_dir"]
        .as_str()
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    let found = if program.contains('/') {
        Some(normalise(&format!("{workdir}/{program}")))
    } else {
        find_in_path(image, &path_var, program)
    };
    match found {
        Some(p) => exec(image, policy, &path_var, &p, &argv[1..], r, 0),
        None => r.problem(format!(
            "the app {program:?} is not found through PATH {path_var}"
        )),
    }
}

/// `execvp`'s search: the first executable regular file named `program` in `path_var`.
fn find_in_path(image: &Image, path_var: &str, program: &str) -> Option<String> {
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .find_map(|d| {
            let c = normalise(&format!("{d}/{program}"));
            matches!(image.resolve(&c), Some((_, Node::File { mode, .. })) if mode & 0o111 != 0)
                .then_some(c)
        })
}

/// `execve(path)` inside Gramine: the file must be trusted; a script runs its interpreter, an
/// ELF file its interpreter (searched by name) and libraries. `path_var` is the app's `PATH`,
/// which `#!/usr/bin/env prog` searches.
fn exec(
    image: &Image,
    policy: &Policy,
    path_var: &str,
    path: &str,
    args: &[String],
    r: &mut Report,
    depth: usize,
) {
    let access = r.step("exec", path, policy.open(image, path));
    if !matches!(access, Access::Trusted { .. }) {
        r.problem(format!("Gramine cannot execute {path}: {access:?}"));
        return;
    }
    let Some(content) = bytes(image, path) else {
        r.problem(format!("{path} is neither an ELF file nor a script"));
        return;
    };
    if let Some(line) = content.strip_prefix(b"#!") {
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split_whitespace();
        let Some(interp) = parts.next() else {
            r.problem(format!("{path} has an empty shebang line"));
            return;
        };
        if depth >= MAX_SCRIPT_DEPTH {
            r.problem(format!("{path}: too many nested script interpreters"));
            return;
        }
        let mut next: Vec<String> = parts.map(str::to_string).collect();
        next.push(path.to_string());
        next.extend(args.iter().cloned());
        exec(image, policy, path_var, interp, &next, r, depth + 1);
        // `#!/usr/bin/env python3` looks the program up in PATH inside the enclave too.
        if interp.ends_with("/env") {
            if let Some(prog) = next
                .first()
                .filter(|p| !p.starts_with('-') && !p.contains('/'))
            {
                match find_in_path(image, path_var, prog) {
                    Some(c) => exec(image, policy, path_var, &c, &next[1..], r, depth + 1),
                    None => r.problem(format!(
                        "#!/usr/bin/env {prog}: {prog} is not in PATH {path_var}"
                    )),
                }
            }
        }
        return;
    }
    let elf = match Elf::parse(content) {
        Ok(e) => e,
        Err(e) => {
            r.problem(format!("{path}: {e}"));
            return;
        }
    };
    let library_path: Vec<String> = policy
        .fixed("LD_LIBRARY_PATH")
        .unwrap_or("")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(interp) = &elf.interp {
        let name = interp.rsplit('/').next().unwrap_or(interp);
        let dirs = policy.interpreter_dirs();
        let candidate = dirs
            .iter()
            .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
            .find(|c| image.resolve(c).is_some());
        match candidate {
            Some(c) => {
                let a = r.step("interpreter", &c, policy.open(image, &c));
                if !matches!(a, Access::Trusted { .. }) {
                    r.problem(format!("{path}'s interpreter {c}: {a:?}"));
                }
                if !c.starts_with(&format!("{RUNTIME_GLIBC}/")) && name.starts_with("ld-linux") {
                    r.problem(format!(
                        "{path} runs on the image's dynamic linker {c}, not Gramine's in {RUNTIME_GLIBC}"
                    ));
                }
            }
            None => r.problem(format!(
                "{path}: Gramine finds no interpreter {name} in {}",
                dirs.join(":")
            )),
        }
    }
    load_libraries(image, policy, path, &elf, &library_path, r);
}

/// The dynamic linker's search (`DT_RPATH`, `LD_LIBRARY_PATH`, `DT_RUNPATH`, then the default
/// directories), every candidate opened through Gramine: an existing path Gramine refuses is
/// skipped, as glibc skips a library it cannot open.
fn load_libraries(
    image: &Image,
    policy: &Policy,
    path: &str,
    elf: &Elf,
    library_path: &[String],
    r: &mut Report,
) {
    let mut queue: VecDeque<(String, String, Vec<String>, Vec<String>)> = elf
        .needed
        .iter()
        .map(|n| {
            (
                n.clone(),
                path.to_string(),
                elf.rpath.clone(),
                elf.runpath.clone(),
            )
        })
        .collect();
    let mut loaded = BTreeSet::new();
    while let Some((name, from, rpath, runpath)) = queue.pop_front() {
        if !loaded.insert(name.clone()) {
            continue;
        }
        let origin = from
            .rsplit_once('/')
            .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
            .to_string();
        let expand = |d: &String| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin);
        let dirs: Vec<String> = if runpath.is_empty() {
            rpath.iter().map(expand).collect()
        } else {
            Vec::new()
        }
        .into_iter()
        .chain(library_path.iter().cloned())
        .chain(runpath.iter().map(expand))
        .chain(DEFAULT_LIB_DIRS.iter().map(|d| d.to_string()))
        .collect();
        let mut refused = Vec::new();
        let mut found = None;
        for d in &dirs {
            let c = normalise(&format!("{d}/{name}"));
            if image.resolve(&c).is_none() {
                continue;
            }
            match policy.open(image, &c) {
                Access::Trusted { .. } => {
                    found = Some(c);
                    break;
                }
                other => refused.push(format!("{c} ({other:?})")),
            }
        }
        let Some(lib) = found else {
            r.problem(format!(
                "{from} needs {name}: {}",
                if refused.is_empty() {
                    "not found".to_string()
                } else {
                    format!("Gramine refuses {}", refused.join(", "))
                }
            ));
            continue;
        };
        r.step(
            "library",
            &lib,
            Access::Trusted {
                target: image.resolve(&lib).map(|(t, _)| t).unwrap_or_default(),
            },
        );
        if name == "libc.so.6" && !lib.starts_with(&format!("{RUNTIME_GLIBC}/")) {
            r.problem(format!(
                "{from} loads the image's {lib}, not Gramine's glibc in {RUNTIME_GLIBC}: every \
                 system call would be trapped and emulated"
            ));
        }
        match bytes(image, &lib).map(Elf::parse) {
            Some(Ok(e)) => {
                for n in e.needed {
                    queue.push_back((n, lib.clone(), e.rpath.clone(), e.runpath.clone()));
                }
            }
            _ => r.problem(format!("{lib} is not an ELF library")),
        }
    }
}

/// The dynamic-linking facts of an ELF file.
struct Elf {
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

impl Elf {
    fn parse(bytes: &[u8]) -> Result<Elf, String> {
        let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes)
            .map_err(|e| format!("not a 64-bit ELF file: {e}"))?;
        let endian = header.endian().map_err(|e| e.to_string())?;
        let mut interp = None;
        for ph in header
            .program_headers(endian, bytes)
            .map_err(|e| e.to_string())?
        {
            if let Some(i) = ph.interpreter(endian, bytes).map_err(|e| e.to_string())? {
                interp = Some(String::from_utf8_lossy(i).into_owned());
            }
        }
        let sections = header.sections(endian, bytes).map_err(|e| e.to_string())?;
        let (mut needed, mut rpath, mut runpath) = (Vec::new(), Vec::new(), Vec::new());
        for s in sections.iter() {
            let Some((entries, link)) = s.dynamic(endian, bytes).map_err(|e| e.to_string())? else {
                continue;
            };
            let strings = sections
                .strings(endian, bytes, link)
                .map_err(|e| e.to_string())?;
            for d in entries {
                let tag = d.tag(endian);
                if ![
                    object::elf::DT_NEEDED,
                    object::elf::DT_RPATH,
                    object::elf::DT_RUNPATH,
                ]
                .contains(&tag)
                {
                    continue;
                }
                let v =
                    String::from_utf8_lossy(d.string(endian, strings).map_err(|e| e.to_string())?)
                        .into_owned();
                match tag {
                    object::elf::DT_NEEDED => needed.push(v),
                    object::elf::DT_RPATH => rpath.extend(v.split(':').map(str::to_string)),
                    _ => runpath.extend(v.split(':').map(str::to_string)),
                }
            }
        }
        Ok(Elf {
            interp,
            needed,
            rpath,
            runpath,
        })
    }
}
