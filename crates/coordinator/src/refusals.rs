//! Refused activations that proved nothing: no evidence that verified and bound the request's
//! key. Anyone who reaches the port can send them, as fast as they like, with any workload name
//! and any bytes, so each one must not cost a stored audit record (the audit log lives in the
//! store, on disk or in etcd, and would fill it). They are:
//! - counted in metrics per workload label and refusal kind (both bounded sets);
//! - summarised: one audit record per [`WINDOW`] with the counts, never the strings sent;
//! - limited per peer address: after [`PER_PEER`] such refusals in a window, further
//!   activations from that address are refused at once, before any verification work.
//!
//! Refusals of requests whose evidence verified (a real TEE running something the manifest does
//! not allow, an activation limit reached) are audited one by one, as before.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The summary and rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Refusals without verified evidence one peer address may cause per window.
pub const PER_PEER: u32 = 30;

/// Peer addresses tracked at once (more are forgotten, oldest window first).
const MAX_PEERS: usize = 4096;

#[derive(Default)]
struct Inner {
    window_start: Option<Instant>,
    /// (workload label, refusal kind) → count, in this window.
    tally: BTreeMap<(String, String), u64>,
    /// Peer → (its window start, refusals in it).
    peers: HashMap<IpAddr, (Instant, u32)>,
}

/// See the module docs.
#[derive(Default)]
pub struct Refusals(Mutex<Inner>);

impl Refusals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `peer` may still be heard at `now` (false: it caused [`PER_PEER`] refusals
    /// without verified evidence in its current window).
    pub fn allow(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Some(peer) = peer else { return true };
        let g = self.lock();
        match g.peers.get(&peer) {
            Some((start, n)) => now.duration_since(*start) >= WINDOW || *n < PER_PEER,
            None => true,
        }
    }

    /// Counts one refusal without verified evidence.
    pub fn record(&self, peer: Option<IpAddr>, workload_label: &str, kind: &str, now: Instant) {
        let mut g = self.lock();
        g.window_start.get_or_insert(now);
        *g.tally
            .entry((workload_label.to_string(), kind.to_string()))
            .or_default() += 1;
        let Some(peer) = peer else { return };
        if g.peers.len() >= MAX_PEERS && !g.peers.contains_key(&peer) {
            g.peers
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if g.peers.len() >= MAX_PEERS {
                if let Some(oldest) = g.peers.iter().min_by_key(|(_, (s, _))| *s).map(|(p, _)| *p) {
                    g.peers.remove(&oldest);
                }
            }
        }
        let e = g.peers.entry(peer).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    /// The summary of the window that ended by `now` (or of everything counted, with
    /// `flush`), and a new window; `None` when there is nothing to report yet.
    pub fn take_summary(&self, now: Instant, flush: bool) -> Option<String> {
        let mut g = self.lock();
        let start = g.window_start?;
        if !flush && now.duration_since(start) < WINDOW {
            return None;
        }
        let tally = std::mem::take(&mut g.tally);
        g.window_start = None;
        let total: u64 = tally.values().sum();
        if total == 0 {
            return None;
        }
        let parts: Vec<String> = tally
            .iter()
            .map(|((w, k), n)| format!("{n} × {k} for workload {w}"))
            .collect();
        Some(format!(
            "{total} activation(s) refused without verified evidence in {} s (summarised, \
             not recorded one by one): {}",
            now.duration_since(start).as_secs().max(1),
            parts.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_peer_is_limited_and_summarised() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let flood: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..PER_PEER {
            assert!(r.allow(Some(flood), t0));
            r.record(Some(flood), "_unknown", "not_found", t0);
        }
        assert!(!r.allow(Some(flood), t0), "the flood is cut off");
        assert!(r.allow(Some(other), t0), "other peers are not");
        assert!(r.allow(Some(flood), t0 + WINDOW), "for one window");
        r.record(Some(other), "web", "malformed_evidence", t0);
        assert_eq!(r.take_summary(t0 + Duration::from_secs(1), false), None);
        let s = r.take_summary(t0 + WINDOW, false).unwrap();
        assert!(s.starts_with("31 activation(s) refused"), "{s}");
        assert!(s.contains("30 × not_found for workload _unknown"), "{s}");
        assert!(s.contains("1 × malformed_evidence for workload web"), "{s}");
        assert_eq!(r.take_summary(t0 + WINDOW * 3, true), None);
    }

    #[test]
    fn tracked_peers_are_bounded() {
        let r = Refusals::default();
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 100) {
            r.record(
                Some(IpAddr::from(i.to_be_bytes())),
                "_unknown",
                "bad_request",
                t0,
            );
        }
        assert!(r.lock().peers.len() <= MAX_PEERS);
    }
}
