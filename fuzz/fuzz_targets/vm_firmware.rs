//! Fuzz `coffer_vm_measure`'s parsers of host-supplied files: OVMF's footer table, SEV and TDX
//! metadata (the input is the end of a firmware image, padded in front to whole pages), and a
//! kernel's boot-protocol and PE headers. None may panic; what parses is measured.
#![no_main]

use coffer_vm_measure::{
    authenticode, mrtd, qemu_patched_kernel, snp_launch_digest, Ovmf, PageOrder, SnpGuest, Tdvf,
};
use libfuzzer_sys::fuzz_target;

/// Pages of memory measured per input at most, to keep runs fast (parsing allows 4 GiB).
const MEASURED_LIMIT: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let mut image = vec![0u8; 4096 - data.len() % 4096];
    image.extend_from_slice(data);
    if let Ok(ovmf) = Ovmf::parse(&image) {
        for vcpus in [1, 2] {
            let guest = SnpGuest {
                vcpus,
                vcpu_signature: 0x00A0_0F11,
                guest_features: 1,
                kernel: None,
            };
            let _ = snp_launch_digest(&ovmf, &guest);
        }
    }
    if let Ok(tdvf) = Tdvf::parse(&image) {
        let measured: u64 = tdvf
            .sections()
            .iter()
            .filter(|s| !s.page_aug)
            .map(|s| s.memory_size)
            .sum();
        if measured <= MEASURED_LIMIT {
            let _ = mrtd(&tdvf, PageOrder::Interleaved);
        }
    }
    if let Ok(patched) = qemu_patched_kernel(data, data.len() / 3, 1 << 32) {
        assert_eq!(patched.len(), data.len());
        assert_eq!(&patched[0x202..0x206], b"HdrS");
    }
    let _ = authenticode::<sha2::Sha384>(data);
});
