//! Matching verified evidence against a package (the activation policy).
//!
//! [`MeasurementClaims`] is a plain struct of what verified evidence says; the Coordinator
//! fills it from `coffer-evidence`'s `Verified`, so this crate stays independent of evidence
//! parsing. Checks run in a fixed order (TEE, debug, measurement, product, SVN, TCB status)
//! and the first failure is returned with a precise reason.

use std::fmt;

use crate::model::{Manifest, Package, Tee, Workload};

/// What verified evidence claims about the software and platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementClaims {
    /// TEE kind of the evidence.
    pub tee: Tee,
    /// SGX MRENCLAVE.
    pub mrenclave: Option<[u8; 32]>,
    /// SGX MRSIGNER.
    pub mrsigner: Option<[u8; 32]>,
    /// SGX ISVPRODID.
    pub isv_prod_id: Option<u16>,
    /// SGX ISVSVN.
    pub isv_svn: Option<u16>,
    /// Whether the enclave/TD runs in debug mode.
    pub debug: bool,
    /// The platform's TCB status, Intel spelling (e.g. `UpToDate`).
    pub tcb_status: String,
    /// TDX MRTD.
    pub mrtd: Option<[u8; 48]>,
    /// TDX RTMR0..3.
    pub rtmrs: Option<[[u8; 48]; 4]>,
    /// TDX MRCONFIGID.
    pub mrconfigid: Option<[u8; 48]>,
    /// The image measurement the evidence's report data binds (bytes 32..64), when the
    /// workload sent one.
    pub image_measurement: Option<[u8; 32]>,
    /// TDX MRSERVICETD (zero when the quote has none).
    pub mrservicetd: Option<[u8; 48]>,
    /// The collateral's `tcbEvaluationDataNumber`.
    pub tcb_evaluation_data_number: Option<u32>,
}

/// Why evidence does not satisfy a package. Display is a reason fit for the caller and the
/// audit log (measurements are public values, never secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// The workload is not in the manifest.
    #[error("workload {0:?} is not in the manifest")]
    UnknownWorkload(String),
    /// The workload's package is missing (only for unvalidated manifests).
    #[error("package {0:?} is not in the manifest")]
    UnknownPackage(String),
    /// The evidence comes from another TEE kind.
    #[error("{got} evidence does not match package {package} ({expected})")]
    Tee {
        /// Package name.
        package: String,
        /// What the package requires.
        expected: Tee,
        /// What the evidence is.
        got: Tee,
    },
    /// The collateral predates the TCB recovery the package requires.
    #[error(
        "collateral tcbEvaluationDataNumber {got} is below package {package}'s minimum {minimum}: \
         fetch current collateral"
    )]
    TcbEvaluationTooOld {
        /// Package name.
        package: String,
        /// The collateral's number.
        got: u32,
        /// The package's minimum.
        minimum: u32,
    },
    /// A debug TEE, not allowed by the package.
    #[error("debug {what} not allowed by package {package}")]
    DebugNotAllowed {
        /// Package name.
        package: String,
        /// "enclave" or "TD".
        what: &'static str,
    },
    /// The evidence lacks a value the package checks.
    #[error("evidence has no {claim} (package {package} requires it)")]
    MissingClaim {
        /// Package name.
        package: String,
        /// E.g. "MRENCLAVE".
        claim: &'static str,
    },
    /// A measurement register differs.
    #[error(
        "{register} {} not in package {package} (expected {})",
        short(got),
        short(expected)
    )]
    Measurement {
        /// Package name.
        package: String,
        /// E.g. "MRENCLAVE", "RTMR2".
        register: &'static str,
        /// The evidence's value, hex.
        got: String,
        /// The package's value, hex.
        expected: String,
    },
    /// Another product.
    #[error("ISVPRODID {got} does not match package {package} (expected {expected})")]
    ProductId {
        /// Package name.
        package: String,
        /// Evidence value.
        got: u16,
        /// Package value.
        expected: u16,
    },
    /// Security version below the minimum.
    #[error("ISVSVN {got} below minimum {minimum} of package {package}")]
    SvnTooLow {
        /// Package name.
        package: String,
        /// Evidence value.
        got: u16,
        /// Package minimum.
        minimum: u16,
    },
    /// Platform TCB status not accepted.
    #[error("TCB status {got} not accepted by package {package} (accepted: {})", accepted.join(", "))]
    TcbStatus {
        /// Package name.
        package: String,
        /// Evidence value.
        got: String,
        /// The package's list.
        accepted: Vec<String>,
    },
    /// The package's own value is not valid hex (only for unvalidated manifests).
    #[error("package {package} field {field} is not valid hex")]
    BadPackage {
        /// Package name.
        package: String,
        /// Field name.
        field: &'static str,
    },
}

fn short(h: &str) -> String {
    match h.get(..16) {
        Some(head) if h.len() > 16 => format!("{head}…"),
        _ => h.to_string(),
    }
}

fn check_hex<const N: usize>(
    package: &str,
    register: &'static str,
    field: &'static str,
    expected: &Option<String>,
    got: Option<&[u8; N]>,
) -> Result<(), Mismatch> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let mut want = [0u8; N];
    hex::decode_to_slice(expected, &mut want).map_err(|_| Mismatch::BadPackage {
        package: package.into(),
        field,
    })?;
    let Some(got) = got else {
        return Err(Mismatch::MissingClaim {
            package: package.into(),
            claim: register,
        });
    };
    if got != &want {
        return Err(Mismatch::Measurement {
            package: package.into(),
            register,
            got: hex::encode(got),
            expected: expected.to_ascii_lowercase(),
        });
    }
    Ok(())
}

impl Package {
    /// Checks `claims` against this package (named `name` in messages).
    pub fn matches(&self, name: &str, claims: &MeasurementClaims) -> Result<(), Mismatch> {
        if claims.tee != self.tee {
            return Err(Mismatch::Tee {
                package: name.into(),
                expected: self.tee,
                got: claims.tee,
            });
        }
        if claims.debug && !self.debug {
            let what = if self.tee == Tee::Sgx {
                "enclave"
            } else {
                "TD"
            };
            return Err(Mismatch::DebugNotAllowed {
                package: name.into(),
                what,
            });
        }
        match self.tee {
            Tee::Sgx => {
                check_hex(
                    name,
                    "MRENCLAVE",
                    "mrenclave",
                    &self.mrenclave,
                    claims.mrenclave.as_ref(),
                )?;
                check_hex(
                    name,
                    "MRSIGNER",
                    "mrsigner",
                    &self.mrsigner,
                    claims.mrsigner.as_ref(),
                )?;
                if let Some(expected) = self.isv_prod_id {
                    let got = claims.isv_prod_id.ok_or(Mismatch::MissingClaim {
                        package: name.into(),
                        claim: "ISVPRODID",
                    })?;
                    if got != expected {
                        return Err(Mismatch::ProductId {
                            package: name.into(),
                            got,
                            expected,
                        });
                    }
                }
                if let Some(minimum) = self.isv_svn {
                    let got = claims.isv_svn.ok_or(Mismatch::MissingClaim {
                        package: name.into(),
                        claim: "ISVSVN",
                    })?;
                    if got < minimum {
                        return Err(Mismatch::SvnTooLow {
                            package: name.into(),
                            got,
                            minimum,
                        });
                    }
                }
            }
            Tee::Tdx => {
                check_hex(name, "MRTD", "mrtd", &self.mrtd, claims.mrtd.as_ref())?;
                let rtmr = |i: usize| claims.rtmrs.as_ref().and_then(|r| r.get(i));
                check_hex(name, "RTMR0", "rtmr0", &self.rtmr0, rtmr(0))?;
                check_hex(name, "RTMR1", "rtmr1", &self.rtmr1, rtmr(1))?;
                check_hex(name, "RTMR2", "rtmr2", &self.rtmr2, rtmr(2))?;
                check_hex(name, "RTMR3", "rtmr3", &self.rtmr3, rtmr(3))?;
                check_hex(
                    name,
                    "MRCONFIGID",
                    "mrconfigid",
                    &self.mrconfigid,
                    claims.mrconfigid.as_ref(),
                )?;
                check_hex(
                    name,
                    "MRSERVICETD",
                    "mrservicetd",
                    &self.mrservicetd,
                    claims.mrservicetd.as_ref(),
                )?;
            }
        }
        if let Some(minimum) = self.min_tcb_evaluation_data_number {
            let got = claims
                .tcb_evaluation_data_number
                .ok_or(Mismatch::MissingClaim {
                    package: name.into(),
                    claim: "tcbEvaluationDataNumber",
                })?;
            if got < minimum {
                return Err(Mismatch::TcbEvaluationTooOld {
                    package: name.into(),
                    got,
                    minimum,
                });
            }
        }
        check_hex(
            name,
            "image measurement",
            "image_measurement",
            &self.image_measurement,
            claims.image_measurement.as_ref(),
        )?;
        if !self
            .accepted_tcb_statuses
            .iter()
            .any(|s| s == &claims.tcb_status)
        {
            return Err(Mismatch::TcbStatus {
                package: name.into(),
                got: claims.tcb_status.clone(),
                accepted: self.accepted_tcb_statuses.clone(),
            });
        }
        Ok(())
    }
}

impl Manifest {
    /// Looks up `workload` and checks `claims` against its package: the activation policy.
    pub fn match_workload(
        &self,
        workload: &str,
        claims: &MeasurementClaims,
    ) -> Result<&Workload, Mismatch> {
        let w = self
            .workloads
            .get(workload)
            .ok_or_else(|| Mismatch::UnknownWorkload(workload.into()))?;
        let p = self
            .packages
            .get(&w.package)
            .ok_or_else(|| Mismatch::UnknownPackage(w.package.clone()))?;
        p.matches(&w.package, claims)?;
        Ok(w)
    }
}

impl fmt::Display for MeasurementClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tee)?;
        if let Some(m) = &self.mrenclave {
            write!(f, " MRENCLAVE={}", hex::encode(m))?;
        }
        if let Some(m) = &self.mrsigner {
            write!(f, " MRSIGNER={}", hex::encode(m))?;
        }
        if let Some(p) = self.isv_prod_id {
            write!(f, " ISVPRODID={p}")?;
        }
        if let Some(s) = self.isv_svn {
            write!(f, " ISVSVN={s}")?;
        }
        if let Some(m) = &self.mrtd {
            write!(f, " MRTD={}", hex::encode(m))?;
        }
        if let Some(m) = &self.image_measurement {
            write!(f, " image={}", hex::encode(m))?;
        }
        write!(f, " debug={} tcb={}", self.debug, self.tcb_status)
    }
}
