//! The simulated platform as an evidence source.
//!
//! Simulation is used only when `COFFER_EVIDENCE=sim` names it. The simulated "hardware"
//! measures what is on disk: the image measurement recomputed from the files
//! ([`coffer_image::workload::measure_rootfs`]) is the quote's MRENCLAVE, MRSIGNER is the fixed
//! simulation signer ([`SIM_MRSIGNER`]), ISVPRODID/ISVSVN come from the workload file.

use std::path::Path;

use coffer_evidence::sim::{SgxQuoteSpec, SimPlatform};
use coffer_image::workload::WorkloadFile;
use coffer_image::Digest;
use sha2::{Digest as _, Sha256};

use crate::Error;

/// MRSIGNER of images run on the simulated platform: SHA-256 of
/// `"coffer simulated platform signer"`, fixed so a manifest can pin it.
pub fn sim_mrsigner() -> [u8; 32] {
    Sha256::digest(b"coffer simulated platform signer").into()
}

/// Same value as [`sim_mrsigner`], for documentation links.
pub const SIM_MRSIGNER: &str = "sha256(\"coffer simulated platform signer\")";

/// File name of the persisted simulated platform in `COFFER_SIM_DIR`.
pub const SIM_PLATFORM_FILE: &str = "sim-platform.json";

/// Loads the simulated platform from `dir`.
pub fn load_platform(dir: &Path) -> Result<SimPlatform, Error> {
    let path = dir.join(SIM_PLATFORM_FILE);
    let bytes = crate::evidence::read_bounded(&path, 1 << 20, "sim")?;
    SimPlatform::from_bytes(&bytes).map_err(|e| {
        Error::evidence(
            "sim",
            format!("{} is not a simulated platform: {e}", path.display()),
        )
    })
}

/// A simulated SGX quote over `report_data` for the image as measured on disk.
pub fn sim_quote(
    dir: &Path,
    wf: &WorkloadFile,
    measurement: &Digest,
    report_data: &[u8; 64],
) -> Result<Vec<u8>, Error> {
    let platform = load_platform(dir)?;
    let spec = SgxQuoteSpec {
        mrenclave: measurement.0,
        mrsigner: sim_mrsigner(),
        isv_prod_id: wf.isv_prod_id,
        isv_svn: wf.isv_svn,
        debug: false,
        report_data: *report_data,
        ..SgxQuoteSpec::default()
    };
    Ok(platform.sgx_quote(&spec))
}
