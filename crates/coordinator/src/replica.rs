//! Which store a Coordinator uses, and its identity among replicas sharing an etcd store.

use crate::error::Error;

/// Where the Coordinator keeps its sealed state.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One redb file in the data directory: a single Coordinator.
    Embedded,
    /// etcd v3, shared by several replicas (high availability).
    Etcd {
        /// Client URLs, e.g. `http://coffer-etcd-0.coffer-etcd:2379`.
        endpoints: Vec<String>,
        /// Key prefix of this deployment, e.g. `/coffer`.
        prefix: String,
        /// This replica's name (unique among the replicas; the pod name in Kubernetes).
        replica: String,
        /// TLS towards etcd (`https://` endpoints).
        tls: Option<crate::state::etcd::EtcdTls>,
        /// How long start-up waits for the leader's new state or for another replica to
        /// answer a key join (then recovery mode, where the key join stays open).
        join_timeout: std::time::Duration,
    },
}

impl StoreConfig {
    /// How long start-up waits for other replicas (zero with the embedded store).
    pub fn join_timeout(&self) -> std::time::Duration {
        match self {
            StoreConfig::Embedded => std::time::Duration::ZERO,
            StoreConfig::Etcd { join_timeout, .. } => *join_timeout,
        }
    }

    /// The replica name, with etcd.
    pub fn replica(&self) -> Option<&str> {
        match self {
            StoreConfig::Embedded => None,
            StoreConfig::Etcd { replica, .. } => Some(replica),
        }
    }
}

/// Checks a replica name: 1..=253 characters of `a-z A-Z 0-9 . _ -` (a Kubernetes pod name
/// fits). Why: it becomes part of etcd keys and audit records.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(Error::BadRequest(format!(
            "replica name `{}` is invalid: use 1..=253 characters of A-Z a-z 0-9 . _ -",
            name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "coffer-coordinator-7d9f-x2k4q", "node_1.local"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(254)] {
            assert!(
                matches!(validate_name(bad), Err(Error::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
