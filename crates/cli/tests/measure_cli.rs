//! `coffer measure snp` against virtee's `sev-snp-measure` (PyPI, an independent
//! implementation), process against process: on Debian's OVMF builds (package `ovmf`), with
//! several vCPU counts and every EPYC vCPU type, and on an OVMF-shaped image that declares
//! every kind of SEV metadata section and a kernel hashes table (Debian's builds declare none,
//! and no Debian package ships an AmdSev build), with and without kernel, initrd and command
//! line. `scripts/install-deps.sh` installs both; a missing one fails the test with how to get
//! it.

use std::path::{Path, PathBuf};
use std::process::Command;

const COFFER: &str = env!("CARGO_BIN_EXE_coffer");

fn reference_tool() -> PathBuf {
    let candidates = [
        std::env::var_os("SEV_SNP_MEASURE").map(PathBuf::from),
        Some(PathBuf::from("/opt/sev-snp-measure/bin/sev-snp-measure")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "sev-snp-measure not found: run scripts/install-deps.sh (it installs it in \
                 /opt/sev-snp-measure) or set SEV_SNP_MEASURE"
            )
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// (ours, theirs) for the same guest.
fn both(ovmf: &Path, vcpus: u32, vcpu_type: &str, kernel: &[&str]) -> (String, String) {
    let common = |c: &mut Command| {
        c.arg("--ovmf")
            .arg(ovmf)
            .args(["--vcpus", &vcpus.to_string(), "--vcpu-type", vcpu_type])
            .args(kernel);
    };
    let mut ours = Command::new(COFFER);
    ours.args(["measure", "snp"]);
    common(&mut ours);
    let mut theirs = Command::new(reference_tool());
    theirs.args(["--mode", "snp"]);
    common(&mut theirs);
    (run(&mut ours), run(&mut theirs))
}

#[test]
fn debian_ovmf_builds_measure_as_sev_snp_measure_says() {
    let firmware = [
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/ovmf/OVMF.fd",
    ];
    let types = [
        "EPYC",
        "EPYC-v4",
        "EPYC-Rome",
        "EPYC-Milan",
        "EPYC-Milan-v2",
        "EPYC-Genoa",
        "EPYC-Turin",
    ];
    let mut seen = std::collections::HashSet::new();
    for f in firmware {
        assert!(
            Path::new(f).is_file(),
            "{f} is missing: install Debian's `ovmf` package (scripts/install-deps.sh does)"
        );
        for vcpus in [1, 2, 3, 8, 64] {
            for t in types {
                let (ours, theirs) = both(Path::new(f), vcpus, t, &[]);
                assert_eq!(ours, theirs, "{f} vcpus={vcpus} type={t}");
                assert_eq!(ours.len(), 96);
                seen.insert(ours);
            }
        }
    }
    // Firmware, vCPU count and type each change the digest (EPYC and EPYC-v4 share a CPUID
    // signature, as do the Milan versions): 3 builds × 5 counts × 5 signatures.
    assert_eq!(seen.len(), 3 * 5 * 5);
    // --json prints the same value.
    let f = Path::new(firmware[0]);
    let json = run(Command::new(COFFER)
        .args(["--json", "measure", "snp", "--ovmf"])
        .arg(f)
        .args(["--vcpus", "2", "--vcpu-type", "EPYC-Genoa"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["measurement"], both(f, 2, "EPYC-Genoa", &[]).1);
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn guid_le(text: &str) -> Vec<u8> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// A 1 MiB image laid out like an SEV-capable OVMF: a GUIDed footer table (SEV metadata,
/// SEV-ES reset block, SEV hash table) ending 32 bytes before the end, and `ASEV` metadata
/// declaring pre-validated memory, the secrets page, the CPUID page, an SVSM calling area and
/// the kernel hashes page.
fn synthetic_ovmf() -> Vec<u8> {
    let len = 1 << 20;
    let mut img: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let meta_at = 0x1000;
    let sections: [(u32, u32, u32); 5] = [
        (0x80_0000, 0x9000, 1),
        (0x80_9000, 0x1000, 2),
        (0x80_a000, 0x1000, 3),
        (0x80_b000, 0x1000, 0x10),
        (0x80_c000, 0x2000, 4),
    ];
    let mut meta = b"ASEV".to_vec();
    meta.extend(le32(16 + 12 * sections.len() as u32));
    meta.extend(le32(1));
    meta.extend(le32(sections.len() as u32));
    for (gpa, size, kind) in sections {
        meta.extend(le32(gpa));
        meta.extend(le32(size));
        meta.extend(le32(kind));
    }
    img[meta_at..meta_at + meta.len()].copy_from_slice(&meta);
    let entry = |data: &[u8], guid: &str| {
        let mut e = data.to_vec();
        e.extend(((data.len() + 18) as u16).to_le_bytes());
        e.extend(guid_le(guid));
        e
    };
    let mut table = Vec::new();
    table.extend(entry(
        &le32((len - meta_at) as u32),
        "dc886566-984a-4798-a75e-5585a7bf67cc",
    ));
    table.extend(entry(
        &le32(0x80_8f00),
        "00f771de-1a7e-4fcb-890e-68c77e2fb44e",
    ));
    table.extend(entry(
        &[le32(0x80_b100), le32(0x400)].concat(),
        "7255371f-3a3b-4b04-927b-1da6efa8d454",
    ));
    table.extend(((table.len() + 18) as u16).to_le_bytes());
    table.extend(guid_le("96b582de-1fb2-45f7-baea-a366c55a082d"));
    let end = len - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

#[test]
fn every_sev_metadata_section_and_the_kernel_hashes_measure_as_sev_snp_measure_says() {
    let dir = tempfile::tempdir().unwrap();
    let ovmf = dir.path().join("ovmf-sev.fd");
    std::fs::write(&ovmf, synthetic_ovmf()).unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"a kernel image, in a test".repeat(1000)).unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, b"an initrd".repeat(500)).unwrap();
    let (k, i) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    let variants: [&[&str]; 4] = [
        &[],
        &["--kernel", k],
        &["--kernel", k, "--initrd", i],
        &[
            "--kernel",
            k,
            "--initrd",
            i,
            "--append",
            "console=ttyS0 root=/dev/vda1",
        ],
    ];
    let mut seen = std::collections::HashSet::new();
    for v in variants {
        for vcpus in [1, 4] {
            let (ours, theirs) = both(&ovmf, vcpus, "EPYC-Milan", v);
            assert_eq!(ours, theirs, "{v:?} vcpus={vcpus}");
            seen.insert(ours);
        }
    }
    assert_eq!(
        seen.len(),
        8,
        "kernel, initrd, command line and vCPUs each count"
    );

    // A kernel with an OVMF that cannot measure one is refused, saying why.
    let out = Command::new(COFFER)
        .args([
            "measure",
            "snp",
            "--ovmf",
            "/usr/share/ovmf/OVMF.fd",
            "--kernel",
            k,
        ])
        .args(["--vcpus", "1", "--vcpu-type", "EPYC-Milan"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no kernel hashes section"), "{err}");
    // So is a file that is not firmware.
    let out = Command::new(COFFER)
        .args(["measure", "snp", "--ovmf"])
        .arg(&kernel)
        .args(["--vcpus", "1", "--vcpu-type", "EPYC-Milan"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4 KiB pages") || err.contains("footer"),
        "{err}"
    );
}
