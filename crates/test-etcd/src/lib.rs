//! A real etcd cluster on free 127.0.0.1 ports, for the tests of the HA store (the storage
//! layer's unit tests, the Coordinator's cluster tests and the `coffer coordinator` process
//! tests share it). Members are killed when dropped.
//!
//! Tests skip (loudly) only if `/usr/bin/etcd` is absent and `COFFER_REQUIRE_ETCD` is unset;
//! CI sets it, so there a missing etcd fails instead of skipping.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const ETCD: &str = "/usr/bin/etcd";

/// One etcd member process; SIGKILLed on drop.
#[derive(Debug)]
pub struct Member(Child);

impl Member {
    /// SIGKILLs the member and waits until it has exited (a dead member mid-stream).
    pub fn kill(mut self) {
        self.0.kill().expect("SIGKILL an etcd member");
        self.0.wait().expect("reap an etcd member");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Server TLS of the members: clients must use https and present a certificate signed by `ca`
/// (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Member certificate (PEM), valid for 127.0.0.1.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA of the client certificates (PEM).
    pub ca: PathBuf,
}

/// A running cluster: its members (in start order) and their client URLs.
#[derive(Debug)]
pub struct Cluster {
    /// The member processes; drop one to SIGKILL it.
    pub members: Vec<Member>,
    /// Client URLs, one per member.
    pub urls: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Whether etcd is installed; prints the skip notice when it is not, and panics when
/// `COFFER_REQUIRE_ETCD` says it must be.
pub fn available() -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    assert!(
        std::env::var_os("COFFER_REQUIRE_ETCD").is_none(),
        "COFFER_REQUIRE_ETCD is set but {ETCD} is missing"
    );
    eprintln!("\n*** SKIPPED: {ETCD} is not installed (apt-get install etcd-server) ***\n");
    false
}

/// Starts `size` members with data under `dir` (`None` if etcd is not installed). The
/// members may still be electing a leader when this returns: callers wait for an answer.
pub fn start(dir: &Path, size: usize, tls: Option<&ServerTls>) -> Option<Cluster> {
    if !available() {
        return None;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster = Cluster {
        members: Vec::new(),
        urls: Vec::new(),
    };
    for (i, (c, p)) in ports.iter().enumerate() {
        let url = format!("{scheme}://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let mut cmd = Command::new(ETCD);
        if let Some(t) = tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(dir.join(format!("etcd-m{i}")))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", "coffer-test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        cluster.members.push(Member(child));
        cluster.urls.push(url);
    }
    Some(cluster)
}
