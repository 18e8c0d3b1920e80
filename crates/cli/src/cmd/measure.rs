//! `coffer measure …`: confidential-VM launch measurements predicted before deployment.
//!
//! Glue only: files in, digest out; the computation is in `coffer-vm-measure`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use coffer_vm_measure::{
    mrtd, snp_launch_digest, tdx_rtmrs, vcpu_type, KernelHashes, Ovmf, PageOrder, SnpGuest, Tdvf,
    TdxBoot, VCPU_TYPES,
};

use crate::output::{print_json, read_bounded, Failure};
use crate::Global;

/// Largest firmware, kernel or initrd read (OVMF is 2–4 MiB, an initrd rarely over 256 MiB).
const FILE_LIMIT: u64 = 1 << 30;

/// `coffer measure --help`: examples.
pub(crate) const GROUP_HELP: &str = "EXAMPLES:
    The MEASUREMENT of a 4-vCPU SEV-SNP guest on Milan booting Debian's OVMF, for a manifest's
    packages.NAME.snp.measurement:
        coffer measure snp --ovmf /usr/share/OVMF/OVMF_CODE_4M.fd --vcpus 4 --vcpu-type EPYC-Milan

    With an AmdSev OVMF build, which also measures the kernel, initrd and command line QEMU is
    given with -kernel/-initrd/-append:
        coffer --json measure snp --ovmf OVMF.amdsev.fd --kernel vmlinuz --initrd initrd.img \\
            --append 'console=ttyS0' --vcpus 2 --vcpu-type EPYC-Genoa

    MRTD, RTMR1 and RTMR2 of a 4 GiB TD booting Debian's OVMF and kernel directly, for a manifest's
    packages.NAME.mrtd, rtmr1 and rtmr2 (rtmr0 comes from a reference launch):
        coffer measure tdx --firmware /usr/share/ovmf/OVMF.fd --kernel vmlinuz \\
            --initrd initrd.img --append 'console=hvc0 root=/dev/vda1' --memory 4G";

/// Subcommands of `coffer measure`.
#[derive(Debug, Subcommand)]
pub(crate) enum MeasureCmd {
    /// Predict the SEV-SNP launch digest (the report's MEASUREMENT) of a QEMU/KVM guest.
    #[command(after_help = "EXAMPLES:
    coffer measure snp --ovmf /usr/share/OVMF/OVMF_CODE_4M.fd --vcpus 1 --vcpu-type EPYC-v4
    coffer --json measure snp --ovmf OVMF.fd --vcpus 8 --vcpu-type EPYC-Genoa --guest-features 0x1

The digest covers the firmware, the SEV metadata pages (zero, secrets, CPUID; the kernel hashes page
with --kernel) and one VMSA per vCPU, whose registers depend on the vCPU type. It is what the AMD
secure processor computes when QEMU launches the guest, and it matches virtee's sev-snp-measure
(checked by Coffer's tests on Debian's OVMF builds). Only the firmware is measured unless the OVMF
build has a kernel hashes section (OvmfPkg/AmdSev): pin host_data or an ID key beside it.")]
    Snp(SnpArgs),
    /// Predict a TDX guest's MRTD, and its RTMR1 and RTMR2 when it boots a kernel directly.
    #[command(after_help = "EXAMPLES:
    coffer measure tdx --firmware /usr/share/ovmf/OVMF.fd
    coffer --json measure tdx --firmware OVMF.fd --kernel vmlinuz --initrd initrd.img \\
        --append 'console=hvc0 root=/dev/vda1 ro' --memory 8G

MRTD covers the firmware: every page QEMU adds before the TD runs, as TDVF's metadata lists them.
RTMR1 covers the kernel as QEMU hands it over (its header patched with where the initrd goes, which
depends on --memory) and TDVF's boot events; RTMR2 the command line and the initrd, as the kernel's
EFI stub measures them (Linux 6.1 or later). The values match dstack's dstack-mr (checked by
Coffer's tests). RTMR0 is not predicted: it holds the ACPI tables QEMU generates for the machine's
devices, so read it from a reference launch's event log, or pin mrconfigid instead.")]
    Tdx(TdxArgs),
}

/// `coffer measure snp`.
#[derive(Debug, Args)]
pub(crate) struct SnpArgs {
    /// The OVMF firmware image QEMU loads (`-bios` or the code flash).
    #[arg(long, value_name = "FILE")]
    ovmf: PathBuf,
    /// The kernel QEMU is given with -kernel (needs an OVMF with a kernel hashes section).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The initrd given with -initrd.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line given with -append.
    #[arg(long, value_name = "CMDLINE", requires = "kernel")]
    append: Option<String>,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(coffer_vm_measure::MAX_VCPUS)))]
    vcpus: u32,
    /// QEMU CPU model of the vCPUs (EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-v1..v3],
    /// EPYC-Milan[-v1, -v2], EPYC-Genoa[-v1], EPYC-Turin).
    #[arg(long, value_name = "TYPE", value_parser = parse_vcpu_type)]
    vcpu_type: u32,
    /// SEV_FEATURES of the guest's VMSAs, decimal or 0x-hex (QEMU sets SNPActive, 0x1).
    #[arg(long, value_name = "VALUE", default_value = "0x1", value_parser = parse_u64)]
    guest_features: u64,
}

/// `coffer measure tdx`.
#[derive(Debug, Args)]
pub(crate) struct TdxArgs {
    /// TDVF: the OVMF image built with TDX support that QEMU loads (`-bios`).
    #[arg(long, value_name = "FILE")]
    firmware: PathBuf,
    /// The kernel (a bzImage) QEMU is given with -kernel; also predicts RTMR1 and RTMR2.
    #[arg(long, value_name = "FILE", requires_all = ["initrd", "append", "memory"])]
    kernel: Option<PathBuf>,
    /// The initrd given with -initrd.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line given with -append.
    #[arg(long, value_name = "CMDLINE", requires = "kernel")]
    append: Option<String>,
    /// Guest memory as QEMU's -m takes it: MiB, or a number with K, M, G or T.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, requires = "kernel")]
    memory: Option<u64>,
    /// How QEMU adds TDVF's pages: `interleaved` (add and extend each page; upstream QEMU and
    /// KVM) or `add-all-first` (the QEMU 8 TDX trees).
    #[arg(long, value_name = "ORDER", default_value = "interleaved", value_parser = parse_page_order)]
    page_order: PageOrder,
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        Some((i, 'T' | 't')) => (&s[..i], 40),
        _ => (s, 20),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a memory size such as 4096, 2048M or 4G"))
}

fn parse_page_order(s: &str) -> Result<PageOrder, String> {
    match s {
        "interleaved" => Ok(PageOrder::Interleaved),
        "add-all-first" => Ok(PageOrder::AddAllFirst),
        _ => Err(format!("{s:?}: give interleaved or add-all-first")),
    }
}

fn parse_vcpu_type(s: &str) -> Result<u32, String> {
    vcpu_type(s).ok_or_else(|| {
        format!(
            "unknown vCPU type {s:?}; one of {}",
            VCPU_TYPES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn parse_u64(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}

/// Runs `coffer measure …`.
pub(crate) fn run(cmd: MeasureCmd, global: Global) -> anyhow::Result<ExitCode> {
    match cmd {
        MeasureCmd::Snp(a) => snp(a, global),
        MeasureCmd::Tdx(a) => tdx(a, global),
    }
}

fn snp(a: SnpArgs, global: Global) -> anyhow::Result<ExitCode> {
    let firmware = read_bounded(&a.ovmf, FILE_LIMIT, "--ovmf")?;
    let ovmf = Ovmf::parse(&firmware)
        .map_err(|e| Failure::new("malformed", format!("{}: {e}", a.ovmf.display())))?;
    if !ovmf.has_sev_metadata() {
        eprintln!(
            "coffer: warning: {} declares no SEV metadata: the digest covers the firmware and \
             the VMSAs only (as sev-snp-measure computes it), and QEMU will not launch this \
             build as an SEV-SNP guest; use an OVMF built with SEV support (OvmfPkg/AmdSev or \
             a distribution's SNP build)",
            a.ovmf.display()
        );
    }
    let kernel = match &a.kernel {
        Some(k) => {
            let kernel = read_bounded(k, FILE_LIMIT, "--kernel")?;
            let initrd = a
                .initrd
                .as_deref()
                .map(|p| read_bounded(p, FILE_LIMIT, "--initrd"))
                .transpose()?;
            Some(KernelHashes::new(
                &kernel,
                initrd.as_deref(),
                a.append.as_deref(),
            ))
        }
        None => None,
    };
    let digest = snp_launch_digest(
        &ovmf,
        &SnpGuest {
            vcpus: a.vcpus,
            vcpu_signature: a.vcpu_type,
            guest_features: a.guest_features,
            kernel,
        },
    )
    .map_err(|e| Failure::new("unsupported", e.to_string()))?;
    let hex = hex(&digest);
    if global.json {
        print_json(&serde_json::json!({ "measurement": hex }))?;
    } else {
        println!("{hex}");
    }
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tdx(a: TdxArgs, global: Global) -> anyhow::Result<ExitCode> {
    let firmware = read_bounded(&a.firmware, FILE_LIMIT, "--firmware")?;
    let tdvf = Tdvf::parse(&firmware)
        .map_err(|e| Failure::new("malformed", format!("{}: {e}", a.firmware.display())))?;
    let mut values = vec![("mrtd", hex(&mrtd(&tdvf, a.page_order)))];
    if let (Some(k), Some(i), Some(append), Some(memory_size)) =
        (&a.kernel, &a.initrd, &a.append, a.memory)
    {
        let (kernel, initrd) = (
            read_bounded(k, FILE_LIMIT, "--kernel")?,
            read_bounded(i, FILE_LIMIT, "--initrd")?,
        );
        let rtmrs = tdx_rtmrs(&TdxBoot {
            kernel: &kernel,
            initrd: &initrd,
            append,
            memory_size,
        })
        .map_err(|e| Failure::new("unsupported", e.to_string()))?;
        values.push(("rtmr1", hex(&rtmrs.rtmr1)));
        values.push(("rtmr2", hex(&rtmrs.rtmr2)));
    }
    eprintln!(
        "coffer: note: RTMR0 is not predicted (it holds QEMU's ACPI tables for this machine): \
         take it from a reference launch's event log, or pin mrconfigid"
    );
    if global.json {
        let map: serde_json::Map<_, _> = values
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        print_json(&serde_json::Value::Object(map))?;
    } else {
        for (name, value) in values {
            println!("{name:<5} {value}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
