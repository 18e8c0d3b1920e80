//! `coffer measure snp` against virtee's `sev-snp-measure` (PyPI, an independent
//! implementation), process against process: on Debian's OVMF builds (package `ovmf`), with
//! several vCPU counts and every EPYC vCPU type, and on an OVMF-shaped image that declares
//! every kind of SEV metadata section and a kernel hashes table (Debian's builds declare none,
//! and no Debian package ships an AmdSev build), with and without kernel, initrd and command
//! line. `scripts/install-deps.sh` installs both; a missing one fails the test with how to get
//! it.
//!
//! `coffer measure tdx` against dstack's `dstack-mr`, whose values for the same inputs are
//! recorded in `tests/data/tdx` (it is on no registry CI can reach): Debian's OVMF.fd, and a
//! synthetic TDVF image and bzImages that the tests generate; and its Authenticode digest against
//! the one Debian signed in its kernel.

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

// ---- `coffer measure tdx` against dstack-mr -------------------------------------------------

/// What dstack's `dstack-mr` computed for the inputs below (`tests/data/tdx/README.md` says how):
/// it is not on any package registry, so CI cannot run it beside ours.
const DSTACK_MR: &str = include_str!("data/tdx/dstack-mr.json");

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A 256 KiB image laid out like a TDX-capable OVMF: a GUIDed footer table whose TDX metadata
/// entry points at a `TDVF` descriptor with every kind of section: an extended boot firmware
/// volume and configuration volume, a TD HOB, two temporary-memory ranges, permanent memory
/// accepted later (PAGE.AUG, not measured), and an extended payload whose memory is larger than
/// its bytes.
fn synthetic_tdvf() -> Vec<u8> {
    let len = 256 << 10;
    let mut img = pattern(len, 1);
    let base = (1u64 << 32) - len as u64;
    // (data offset, raw size, GPA, memory size, type, attributes)
    let sections: [(u32, u32, u64, u64, u32, u32); 7] = [
        (0x0, 0x8000, base, 0x8000, 1, 1),
        (0x10000, 0x20000, base + 0x10000, 0x20000, 0, 1),
        (0, 0, 0x80_9000, 0x2000, 2, 0),
        (0, 0, 0x80_0000, 0x6000, 3, 0),
        (0, 0, 0x80_b000, 0x2000, 3, 0),
        (0, 0, 0x100_0000, 0x10_0000, 4, 2),
        (0x30000, 0x1000, 0x120_0000, 0x2000, 5, 1),
    ];
    let desc_at = 0x38000;
    let mut desc = b"TDVF".to_vec();
    desc.extend(le32(16 + 32 * sections.len() as u32));
    desc.extend(le32(1));
    desc.extend(le32(sections.len() as u32));
    for (offset, raw, gpa, size, kind, attributes) in sections {
        desc.extend(le32(offset));
        desc.extend(le32(raw));
        desc.extend(gpa.to_le_bytes());
        desc.extend(size.to_le_bytes());
        desc.extend(le32(kind));
        desc.extend(le32(attributes));
    }
    img[desc_at..desc_at + desc.len()].copy_from_slice(&desc);
    let mut table = le32((len - desc_at) as u32).to_vec();
    table.extend(22u16.to_le_bytes());
    table.extend(guid_le("e47a6535-984a-4798-865e-4685a7bf8ec2"));
    table.extend(((table.len() + 18) as u16).to_le_bytes());
    table.extend(guid_le("96b582de-1fb2-45f7-baea-a366c55a082d"));
    let end = len - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

/// A bzImage laid out as Linux's EFI stub lays one out: a PE32+ header at 0x40 whose headers
/// end at 0x200, the boot-protocol 2.15 header at 0x1f1 (in the headers and the first
/// section), sections listed out of file order with an empty one, and, when `signed`, bytes
/// after the sections and then a certificate table, as in Debian's signed kernels. `high_initrd`
/// sets XLF_CAN_BE_LOADED_ABOVE_4G; without it QEMU honours initrd_addr_max.
fn synthetic_bzimage(signed: bool, high_initrd: bool) -> Vec<u8> {
    // (name, file offset, size)
    let sections: [(&[u8], u32, u32); 4] = [
        (b".setup", 0x200, 0x3e00),
        (b".data", 0x14000, 0x2000),
        (b".text", 0x4000, 0x10000),
        (b".bss", 0, 0),
    ];
    let sections_end = 0x16000usize;
    let (trailing, cert) = if signed { (0x100, 0x7f8) } else { (0, 0) };
    let mut k = pattern(sections_end + trailing + cert, 2);
    k[..0x200].fill(0);
    k[..2].copy_from_slice(b"MZ");
    k[0x3c..0x40].copy_from_slice(&le32(0x40));
    let mut pe = b"PE\0\0".to_vec();
    // COFF: x86-64, sections, timestamp, symbols, optional header size, characteristics.
    pe.extend(0x8664u16.to_le_bytes());
    pe.extend((sections.len() as u16).to_le_bytes());
    pe.extend([0u8; 12]);
    pe.extend(240u16.to_le_bytes());
    pe.extend(0x206u16.to_le_bytes());
    let mut opt = vec![0u8; 240];
    opt[..2].copy_from_slice(&0x20bu16.to_le_bytes());
    opt[60..64].copy_from_slice(&le32(0x200)); // SizeOfHeaders
    opt[64..68].copy_from_slice(&le32(0x1234_5678)); // CheckSum: not measured
    opt[108..112].copy_from_slice(&le32(16)); // NumberOfRvaAndSizes
    if signed {
        let at = 112 + 4 * 8;
        opt[at..at + 4].copy_from_slice(&le32((sections_end + trailing) as u32));
        opt[at + 4..at + 8].copy_from_slice(&le32(cert as u32));
    }
    pe.extend(opt);
    for (name, offset, size) in sections {
        let mut s = [0u8; 40];
        s[..name.len()].copy_from_slice(name);
        s[16..20].copy_from_slice(&le32(size));
        s[20..24].copy_from_slice(&le32(offset));
        pe.extend(s);
    }
    k[0x40..0x40 + pe.len()].copy_from_slice(&pe);
    // The boot-protocol header.
    k[0x1f1] = 0x1f; // setup_sects
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    k[0x210] = 0;
    k[0x211] = 0x01; // LOADED_HIGH
    k[0x218..0x220].fill(0);
    k[0x224..0x22c].fill(0);
    // initrd_addr_max: QEMU honours it without XLF_CAN_BE_LOADED_ABOVE_4G, dstack-mr takes
    // 0x37ffffff instead; they agree on this value.
    k[0x22c..0x230].copy_from_slice(&le32(0x37ff_ffff));
    let xloadflags: u16 = if high_initrd { 0x7f } else { 0x3f };
    k[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    k
}

fn measure_tdx(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run(Command::new(COFFER)
        .args(["--json", "measure", "tdx"])
        .args(args)))
    .unwrap()
}

/// The files the tests measure, written to `dir` (also how `tests/data/tdx/README.md` makes the
/// inputs it runs dstack-mr on).
fn write_tdx_inputs(dir: &Path) {
    std::fs::write(dir.join("tdvf.fd"), synthetic_tdvf()).unwrap();
    std::fs::write(dir.join("signed.bzImage"), synthetic_bzimage(true, true)).unwrap();
    std::fs::write(
        dir.join("unsigned.bzImage"),
        synthetic_bzimage(false, false),
    )
    .unwrap();
    std::fs::write(dir.join("initrd.img"), pattern(300_000, 3)).unwrap();
}

#[test]
fn tdx_measurements_are_dstack_mrs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("COFFER_TDX_INPUTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    write_tdx_inputs(&dir);
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let expected: serde_json::Value = serde_json::from_str(DSTACK_MR).unwrap();

    // MRTD of firmware: the synthetic TDVF, and Debian's OVMF.fd as recorded (by its SHA-256).
    let debian = std::fs::read("/usr/share/ovmf/OVMF.fd").unwrap_or_else(|e| {
        panic!("/usr/share/ovmf/OVMF.fd: {e}: install Debian's `ovmf` (scripts/install-deps.sh)")
    });
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&debian));
    let firmware = &expected["firmware"];
    assert_eq!(
        firmware["OVMF.fd"]["sha256"], sha,
        "Debian's ovmf package changed: run dstack-mr on the new OVMF.fd as \
         tests/data/tdx/README.md says and record it"
    );
    for (name, file) in [
        ("OVMF.fd", "/usr/share/ovmf/OVMF.fd".into()),
        ("tdvf.fd", path("tdvf.fd")),
    ] {
        for order in ["interleaved", "add-all-first"] {
            let ours = measure_tdx(&["--firmware", &file, "--page-order", order]);
            assert_eq!(ours["mrtd"], firmware[name][order], "{name} {order}");
            assert!(ours.get("rtmr1").is_none());
        }
    }

    // RTMR1 and RTMR2 of direct boots: both kernels, memory sizes on either side of where QEMU
    // moves the initrd, and a command line that is not ASCII.
    let boots = expected["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 8);
    let mut seen = std::collections::HashSet::new();
    for boot in boots {
        let s = |k: &str| boot[k].as_str().unwrap();
        let ours = measure_tdx(&[
            "--firmware",
            &path("tdvf.fd"),
            "--kernel",
            &path(s("kernel")),
            "--initrd",
            &path("initrd.img"),
            "--append",
            s("append"),
            "--memory",
            s("memory"),
        ]);
        assert_eq!(ours["mrtd"], firmware["tdvf.fd"]["interleaved"], "{boot}");
        assert_eq!(ours["rtmr1"], boot["rtmr1"], "{boot}");
        assert_eq!(ours["rtmr2"], boot["rtmr2"], "{boot}");
        seen.insert((ours["rtmr1"].to_string(), ours["rtmr2"].to_string()));
    }
    assert!(
        seen.len() >= 6,
        "kernel, memory and command line each count"
    );
}

/// Debian's signed kernel (`linux-image-amd64`, unpacked by scripts/install-deps.sh): our
/// Authenticode digest, as SHA-256, is the one Debian signed, found in its certificate table.
/// Then its RTMR1 depends on where QEMU puts the initrd, and its RTMR2 does not.
#[test]
fn a_debian_kernels_authenticode_digest_is_the_signed_one() {
    let path = std::env::var_os("COFFER_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/coffer-test/vmlinuz"));
    let kernel = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/install-deps.sh (it unpacks Debian's kernel there) or set \
             COFFER_TEST_KERNEL",
            path.display()
        )
    });
    let digest = coffer_vm_measure::authenticode::<sha2::Sha256>(&kernel).unwrap();
    let cert_at = u32::from_le_bytes(kernel[0x3c..0x40].try_into().unwrap()) as usize + 24 + 144;
    let table = u32::from_le_bytes(kernel[cert_at..cert_at + 4].try_into().unwrap()) as usize;
    assert!(table > 0, "Debian's kernel is signed");
    assert!(
        kernel[table..].windows(32).any(|w| w == digest.as_slice()),
        "the Authenticode digest is not the one in the signature"
    );

    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, pattern(1 << 20, 4)).unwrap();
    let boot = |memory: &str| {
        measure_tdx(&[
            "--firmware",
            "/usr/share/ovmf/OVMF.fd",
            "--kernel",
            path.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--append",
            "console=hvc0 root=/dev/vda1 ro",
            "--memory",
            memory,
        ])
    };
    let (small, large) = (boot("1G"), boot("4G"));
    assert_ne!(small["rtmr1"], large["rtmr1"]);
    assert_eq!(small["rtmr2"], large["rtmr2"]);
    assert_eq!(small["mrtd"], large["mrtd"]);
}

#[test]
fn tdx_measurement_inputs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    write_tdx_inputs(dir.path());
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let fails = |args: &[&str]| {
        let out = Command::new(COFFER)
            .args(["measure", "tdx"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Debian's code flash alone: its TDVF metadata describes the whole OVMF.fd.
    let err = fails(&["--firmware", "/usr/share/OVMF/OVMF_CODE.fd"]);
    assert!(err.contains("OVMF.fd"), "{err}");
    // A build without TDX support.
    let err = fails(&["--firmware", "/usr/share/OVMF/OVMF_CODE_4M.fd"]);
    assert!(err.contains("no TDX metadata"), "{err}");
    // A kernel that is not a bzImage, and an initrd too large for the memory.
    let boot = |kernel: &str, memory: &str| {
        fails(&[
            "--firmware",
            &path("tdvf.fd"),
            "--kernel",
            kernel,
            "--initrd",
            &path("initrd.img"),
            "--append",
            "quiet",
            "--memory",
            memory,
        ])
    };
    let err = boot(&path("initrd.img"), "4G");
    assert!(err.contains("HdrS"), "{err}");
    let err = boot(&path("signed.bzImage"), "256K");
    assert!(
        err.contains("too little") || err.contains("does not fit"),
        "{err}"
    );
    // Every part of the TDVF descriptor is checked.
    let mut tdvf = synthetic_tdvf();
    tdvf[0x38000 + 8] = 2; // version
    let bad = dir.path().join("bad.fd");
    std::fs::write(&bad, &tdvf).unwrap();
    let err = fails(&["--firmware", bad.to_str().unwrap()]);
    assert!(err.contains("version 1"), "{err}");

    // What MRTD and RTMR1 cover, and what they leave out.
    let mrtd = |img: &[u8]| {
        std::fs::write(&bad, img).unwrap();
        measure_tdx(&["--firmware", bad.to_str().unwrap()])["mrtd"].clone()
    };
    let base = mrtd(&synthetic_tdvf());
    let mut flipped = synthetic_tdvf();
    flipped[0x10000 + 77] ^= 1; // a byte of the boot firmware volume
    assert_ne!(mrtd(&flipped), base);
    let mut flipped = synthetic_tdvf();
    flipped[0x9000] ^= 1; // a byte no section maps
    assert_eq!(mrtd(&flipped), base);

    let rtmr1 = |kernel: &[u8]| {
        let k = dir.path().join("k.bzImage");
        std::fs::write(&k, kernel).unwrap();
        measure_tdx(&[
            "--firmware",
            &path("tdvf.fd"),
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            &path("initrd.img"),
            "--append",
            "quiet",
            "--memory",
            "4G",
        ])["rtmr1"]
            .clone()
    };
    let signed = synthetic_bzimage(true, true);
    let base = rtmr1(&signed);
    let mut k = signed.clone();
    *k.last_mut().unwrap() ^= 1; // the signature: not part of the digest
    assert_eq!(rtmr1(&k), base);
    let mut k = signed.clone();
    k[0x4000 + 5] ^= 1; // .text
    assert_ne!(rtmr1(&k), base);
    let mut k = signed;
    k[0x40 + 24 + 64] ^= 1; // the PE checksum: not part of the digest
    assert_eq!(rtmr1(&k), base);
}
