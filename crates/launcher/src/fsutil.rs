//! Paths inside the image's root filesystem, resolved the way the container would see them and
//! never outside it.
//!
//! A path from the Coordinator or the workload file is checked to be canonical (absolute, no
//! `.`/`..`/empty components, no NUL, ≤ 4096 bytes). Intermediate symlinks *inside the image*
//! are followed as the app would follow them, but resolved against the image root (an absolute
//! target restarts at the root; `..` never climbs above it), like `securejoin`; the final
//! component is never followed: files are written to a temporary name with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` and renamed over the destination, which replaces a symlink there
//! instead of writing through it, and never leaves a half-written file.
//!
//! Nothing else runs in the container while the launcher does this (it is the entrypoint), so
//! the image content cannot change between resolution and use.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

const MAX_PATH: usize = 4096;
const MAX_LINKS: u32 = 40;

/// Checks that `path` is canonical and absolute; returns its components.
pub fn canonical_components(path: &str) -> Result<Vec<&str>, String> {
    if path.len() > MAX_PATH {
        return Err(format!("path longer than {MAX_PATH} bytes"));
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} is not absolute"));
    };
    if rest.is_empty() {
        return Err("path is the root directory".into());
    }
    let comps: Vec<&str> = rest.split('/').collect();
    for c in &comps {
        match *c {
            "" => {
                return Err(format!(
                    "{path:?} has an empty component (// or a trailing /)"
                ))
            }
            "." | ".." => return Err(format!("{path:?} contains a {c:?} component")),
            _ => {}
        }
    }
    Ok(comps)
}

/// Resolves the directory part of an image path under `root`, following symlinks confined to
/// `root`, optionally creating missing directories (mode 0755). Returns the host path of the
/// directory.
pub fn resolve_dir(root: &Path, comps: &[&str], create: bool) -> Result<PathBuf, Error> {
    resolve_inner(root, comps, create, false)
}

fn resolve_inner(
    root: &Path,
    comps: &[&str],
    create: bool,
    last_any: bool,
) -> Result<PathBuf, Error> {
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = comps
        .iter()
        .rev()
        .map(|c| std::ffi::OsString::from(*c))
        .collect();
    let mut links = 0u32;
    while let Some(c) = pending.pop() {
        if c == OsStr::new(".") || c.is_empty() {
            continue;
        }
        if c == OsStr::new("..") {
            stack.pop();
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&stack);
        host.push(&c);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::Parameters(format!(
                        "too many symbolic links resolving {}",
                        display_image_path(comps)
                    )));
                }
                let target =
                    fs::read_link(&host).map_err(|e| Error::io("reading link", &host, e))?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.starts_with(b"/") {
                    stack.clear();
                }
                for t in bytes.split(|b| *b == b'/').rev() {
                    pending.push(OsStr::from_bytes(t).to_os_string());
                }
            }
            Ok(m) if m.is_dir() => stack.push(c),
            Ok(_) if last_any && pending.is_empty() => stack.push(c),
            Ok(_) => {
                return Err(Error::Parameters(format!(
                    "{}: a component is not a directory",
                    display_image_path(comps)
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                match fs::DirBuilder::new().mode(0o755).create(&host) {
                    Ok(()) => stack.push(c),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => pending.push(c),
                    Err(e) => return Err(Error::io("creating directory", host, e)),
                }
            }
            Err(e) => return Err(Error::io("looking up", host, e)),
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&stack);
    Ok(host)
}

fn display_image_path(comps: &[&str]) -> String {
    format!("/{}", comps.join("/"))
}

/// Resolves an image path (file or directory) to its host path, following every symlink,
/// confined to `root`. Used for the program and the working directory.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf, Error> {
    if path == "/" {
        return Ok(root.to_path_buf());
    }
    let comps = canonical_components(path).map_err(Error::Parameters)?;
    resolve_inner(root, &comps, false, true)
}

/// Writes `content` to the image path `path` under `root` atomically: directories created,
/// the final component replaced (never followed), mode set exactly, owner set when given.
pub fn write_file(
    root: &Path,
    path: &str,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), Error> {
    let comps =
        canonical_components(path).map_err(|e| Error::Parameters(format!("file path: {e}")))?;
    let (name, parents) = comps
        .split_last()
        .ok_or_else(|| Error::Parameters("empty path".into()))?;
    let dir = resolve_dir(root, parents, true)?;
    let dest = dir.join(name);
    if fs::symlink_metadata(&dest)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(Error::Parameters(format!(
            "{path}: a directory is in the way"
        )));
    }
    let tmp = dir.join(format!(".coffer-tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        f.write_all(content)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .map_err(|e| Error::io("changing owner of", &tmp, e))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| Error::io("setting mode of", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, &dest).map_err(|e| Error::io("renaming into place", &dest, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `O_NOFOLLOW` (Linux value; the same on every Linux architecture Coffer targets).
const O_NOFOLLOW: i32 = 0o400000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_components("/a/b").unwrap(), vec!["a", "b"]);
        for bad in ["a", "/", "/a/../b", "/a/./b", "//a", "/a/", "/a\0"] {
            assert!(canonical_components(bad).is_err(), "{bad:?}");
        }
        assert!(canonical_components(&format!("/{}", "a".repeat(5000))).is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", r.join("up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("escape")).unwrap();
        write_file(r, "/abs/x", b"1", 0o600, None).unwrap();
        assert_eq!(fs::read(r.join("real/x")).unwrap(), b"1");
        write_file(r, "/up/y", b"2", 0o640, None).unwrap();
        assert_eq!(fs::read(r.join("y")).unwrap(), b"2");
        assert_eq!(
            fs::metadata(r.join("y")).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // An absolute link to a host directory resolves inside the root instead.
        write_file(r, "/escape/z", b"3", 0o600, None).unwrap();
        assert!(!outside.path().join("z").exists());
        let inside = r.join(outside.path().strip_prefix("/").unwrap()).join("z");
        assert_eq!(fs::read(inside).unwrap(), b"3");
    }

    #[test]
    fn final_symlink_is_replaced_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("f")).unwrap();
        write_file(root.path(), "/f", b"new", 0o600, None).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(fs::symlink_metadata(root.path().join("f"))
            .unwrap()
            .is_file());
    }

    #[test]
    fn loops_and_files_in_the_way() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/loop", root.path().join("loop")).unwrap();
        assert!(
            matches!(write_file(root.path(), "/loop/x", b"", 0o600, None),
            Err(Error::Parameters(m)) if m.contains("too many symbolic links"))
        );
        fs::write(root.path().join("file"), b"").unwrap();
        assert!(
            matches!(write_file(root.path(), "/file/x", b"", 0o600, None),
            Err(Error::Parameters(m)) if m.contains("not a directory"))
        );
    }
}
