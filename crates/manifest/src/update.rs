//! What a manifest update changes.
//!
//! Refused outright (no role can allow it): lowering a package's minimum ISVSVN (a downgrade
//! re-admits versions with known flaws), changing a package's TEE kind, and changing the
//! declaration of an existing secret (the Coordinator keeps generated values; a new
//! declaration under the old name would silently not apply — give the new secret a new name).
//! Everything else is reported as a [`Change`]; the Coordinator decides who may apply it:
//! a user with `packages: update` on every touched package may apply an update whose changes
//! all raise a package's minimum ISVSVN ([`UpdateSummary::only_svn_upgrades`]); anything else,
//! including a new MRENCLAVE, MRSIGNER, debug flag or accepted TCB statuses, needs
//! `manifest: update`.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::Error;
use crate::model::{Manifest, NameMap, Package};

/// One difference between two manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A package was added.
    PackageAdded(String),
    /// A package was removed.
    PackageRemoved(String),
    /// A package's minimum ISVSVN was raised (the classic "security version upgrade").
    PackageSvnRaised {
        /// Package name.
        package: String,
        /// Old minimum.
        from: u16,
        /// New minimum.
        to: u16,
    },
    /// Another field of a package changed (measurement, debug, TCB statuses, ...).
    PackageChanged {
        /// Package name.
        package: String,
        /// The fields that differ.
        fields: Vec<&'static str>,
    },
    /// A workload was added.
    WorkloadAdded(String),
    /// A workload was removed.
    WorkloadRemoved(String),
    /// A workload's definition changed.
    WorkloadChanged(String),
    /// A secret was added.
    SecretAdded(String),
    /// A secret was removed.
    SecretRemoved(String),
    /// Users changed.
    UsersChanged,
    /// Roles changed.
    RolesChanged,
    /// Recovery keys or threshold changed.
    RecoveryChanged,
    /// TLS rules changed.
    TlsChanged,
}

impl Change {
    /// The package this change is about, if it is a package change.
    pub fn package(&self) -> Option<&str> {
        match self {
            Change::PackageAdded(p) | Change::PackageRemoved(p) => Some(p),
            Change::PackageSvnRaised { package, .. } | Change::PackageChanged { package, .. } => {
                Some(package)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::PackageAdded(p) => write!(f, "package {p} added"),
            Change::PackageRemoved(p) => write!(f, "package {p} removed"),
            Change::PackageSvnRaised { package, from, to } => {
                write!(f, "package {package}: minimum ISVSVN {from} -> {to}")
            }
            Change::PackageChanged { package, fields } => {
                write!(f, "package {package}: {} changed", fields.join(", "))
            }
            Change::WorkloadAdded(w) => write!(f, "workload {w} added"),
            Change::WorkloadRemoved(w) => write!(f, "workload {w} removed"),
            Change::WorkloadChanged(w) => write!(f, "workload {w} changed"),
            Change::SecretAdded(s) => write!(f, "secret {s} added"),
            Change::SecretRemoved(s) => write!(f, "secret {s} removed"),
            Change::UsersChanged => f.write_str("users changed"),
            Change::RolesChanged => f.write_str("roles changed"),
            Change::RecoveryChanged => f.write_str("recovery keys changed"),
            Change::TlsChanged => f.write_str("tls rules changed"),
        }
    }
}

/// What an update changes, in a stable order (packages, workloads, secrets, the rest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateSummary {
    /// The changes.
    pub changes: Vec<Change>,
}

impl UpdateSummary {
    /// No change at all (same canonical hash).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Every change is a change of an existing package (no additions/removals, nothing else).
    pub fn only_packages(&self) -> bool {
        self.changes.iter().all(|c| {
            matches!(
                c,
                Change::PackageSvnRaised { .. } | Change::PackageChanged { .. }
            )
        })
    }

    /// Every change raises a package's minimum SVN and nothing else.
    pub fn only_svn_upgrades(&self) -> bool {
        self.changes
            .iter()
            .all(|c| matches!(c, Change::PackageSvnRaised { .. }))
    }

    /// Packages touched by the update.
    pub fn packages(&self) -> BTreeSet<&str> {
        self.changes.iter().filter_map(Change::package).collect()
    }
}

impl fmt::Display for UpdateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return f.write_str("no changes");
        }
        let parts: Vec<String> = self.changes.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

fn package_fields(a: &Package, b: &Package) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut cmp = |name: &'static str, same: bool| {
        if !same {
            out.push(name);
        }
    };
    cmp("mrenclave", a.mrenclave == b.mrenclave);
    cmp("mrsigner", a.mrsigner == b.mrsigner);
    cmp("isv_prod_id", a.isv_prod_id == b.isv_prod_id);
    cmp("mrtd", a.mrtd == b.mrtd);
    cmp("rtmr0", a.rtmr0 == b.rtmr0);
    cmp("rtmr1", a.rtmr1 == b.rtmr1);
    cmp("rtmr2", a.rtmr2 == b.rtmr2);
    cmp("rtmr3", a.rtmr3 == b.rtmr3);
    cmp("mrconfigid", a.mrconfigid == b.mrconfigid);
    cmp(
        "image_measurement",
        a.image_measurement == b.image_measurement,
    );
    cmp("mrservicetd", a.mrservicetd == b.mrservicetd);
    cmp(
        "min_tcb_evaluation_data_number",
        a.min_tcb_evaluation_data_number == b.min_tcb_evaluation_data_number,
    );
    cmp("snp", a.snp == b.snp);
    cmp("debug", a.debug == b.debug);
    cmp(
        "accepted_tcb_statuses",
        a.accepted_tcb_statuses == b.accepted_tcb_statuses,
    );
    out
}

fn added_removed<V>(old: &NameMap<V>, new: &NameMap<V>) -> (Vec<String>, Vec<String>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (added, removed)
}

pub(crate) fn check_update(old: &Manifest, new: &Manifest) -> Result<UpdateSummary, Error> {
    let mut changes = Vec::new();
    let mut refused = Vec::new();

    let (added, removed) = added_removed(&old.packages, &new.packages);
    changes.extend(added.into_iter().map(Change::PackageAdded));
    changes.extend(removed.into_iter().map(Change::PackageRemoved));
    for (name, a) in &old.packages {
        let Some(b) = new.packages.get(name) else {
            continue;
        };
        if a.tee != b.tee {
            refused.push(format!(
                "package {name} changes TEE from {} to {}",
                a.tee, b.tee
            ));
            continue;
        }
        match (a.isv_svn, b.isv_svn) {
            (Some(x), Some(y)) if y < x => refused.push(format!(
                "package {name} lowers its minimum ISVSVN from {x} to {y} (downgrade)"
            )),
            (Some(x), None) => refused.push(format!(
                "package {name} drops its minimum ISVSVN {x} (would accept any version)"
            )),
            (Some(x), Some(y)) if y > x => changes.push(Change::PackageSvnRaised {
                package: name.clone(),
                from: x,
                to: y,
            }),
            (None, Some(y)) => changes.push(Change::PackageSvnRaised {
                package: name.clone(),
                from: 0,
                to: y,
            }),
            _ => {}
        }
        let fields = package_fields(a, b);
        if !fields.is_empty() {
            changes.push(Change::PackageChanged {
                package: name.clone(),
                fields,
            });
        }
    }

    let (added, removed) = added_removed(&old.workloads, &new.workloads);
    changes.extend(added.into_iter().map(Change::WorkloadAdded));
    changes.extend(removed.into_iter().map(Change::WorkloadRemoved));
    for (name, a) in &old.workloads {
        if new.workloads.get(name).is_some_and(|b| b != a) {
            changes.push(Change::WorkloadChanged(name.clone()));
        }
    }

    let (added, removed) = added_removed(&old.secrets, &new.secrets);
    changes.extend(added.into_iter().map(Change::SecretAdded));
    changes.extend(removed.into_iter().map(Change::SecretRemoved));
    for (name, a) in &old.secrets {
        if new.secrets.get(name).is_some_and(|b| b != a) {
            refused.push(format!(
                "secret {name} changes its declaration; existing values would not follow it (declare a secret with a new name)"
            ));
        }
    }

    if old.users != new.users {
        changes.push(Change::UsersChanged);
    }
    if old.roles != new.roles {
        changes.push(Change::RolesChanged);
    }
    if old.recovery_keys != new.recovery_keys || old.recovery_threshold != new.recovery_threshold {
        changes.push(Change::RecoveryChanged);
    }
    if old.tls != new.tls {
        changes.push(Change::TlsChanged);
    }

    if refused.is_empty() {
        Ok(UpdateSummary { changes })
    } else {
        Err(Error::UpdateRefused(refused))
    }
}
