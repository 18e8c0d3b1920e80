//! Finding the `coffer-launcher` binary that converted images carry as `/coffer/launcher`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::bail;

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. is statically linked.
pub(crate) fn is_static_elf(path: &Path) -> anyhow::Result<bool> {
    let mut data = Vec::new();
    fs::File::open(path)?.take(1 << 16).read_to_end(&mut data)?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if data.get(..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let phoff = u64_at(0x20).ok_or_else(|| anyhow::anyhow!("short ELF header"))? as usize;
    let phentsize = u16_at(0x36).ok_or_else(|| anyhow::anyhow!("short ELF header"))? as usize;
    let phnum = u16_at(0x38).ok_or_else(|| anyhow::anyhow!("short ELF header"))? as usize;
    for i in 0..phnum {
        let off = phoff.saturating_add(i.saturating_mul(phentsize));
        match u32_at(off) {
            Some(3) => return Ok(false), // PT_INTERP
            Some(_) => {}
            None => bail!(
                "{}: program headers beyond the first 64 KiB",
                path.display()
            ),
        }
    }
    Ok(true)
}

/// The launcher binary to put into images, and whether it can start where no C library is.
pub(crate) struct Launcher {
    pub(crate) path: PathBuf,
    pub(crate) is_static: bool,
}

/// `--launcher`/`COFFER_LAUNCHER` if given, else the static build of
/// `scripts/build-launcher.sh` (target/x86_64-unknown-linux-gnu/PROFILE), else `coffer-launcher`
/// next to this executable; a static binary is preferred over a dynamic one.
pub(crate) fn find_launcher(given: Option<&Path>) -> anyhow::Result<Launcher> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(g) = given {
        candidates.push(g.to_path_buf());
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // target/<profile>/coffer → target/x86_64-unknown-linux-gnu/<profile>/coffer-launcher
            if let (Some(target), Some(profile)) = (dir.parent(), dir.file_name()) {
                candidates.push(
                    target
                        .join("x86_64-unknown-linux-gnu")
                        .join(profile)
                        .join("coffer-launcher"),
                );
                candidates.push(target.join("x86_64-unknown-linux-gnu/release/coffer-launcher"));
            }
            candidates.push(dir.join("coffer-launcher"));
        }
    }
    let mut found: Option<Launcher> = None;
    for c in &candidates {
        if c.is_file() {
            let is_static = is_static_elf(c)?;
            if is_static {
                return Ok(Launcher {
                    path: c.clone(),
                    is_static,
                });
            }
            if found.is_none() {
                found = Some(Launcher {
                    path: c.clone(),
                    is_static,
                });
            }
        }
    }
    if given.is_some() && found.is_none() {
        bail!(
            "--launcher (or COFFER_LAUNCHER) {}: not a file; build the static launcher with \
             `bash scripts/build-launcher.sh`",
            candidates
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "coffer-launcher not found (looked at {}); build it with `bash scripts/build-launcher.sh`",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}
