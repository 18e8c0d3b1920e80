//! The bounded memos behind [`crate::Verifier`]: verified items keyed by a SHA-256 of the bytes
//! (and issuer key) they were verified from, and a few recent ones found by comparing bytes;
//! both evict the least recently used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;

/// A least-recently-used map from a 32-byte digest to a shared verified item.
///
/// Eviction scans for the oldest entry: `O(capacity)`, but it happens only on a miss, which
/// costs at least one ECDSA verification, so the scan is noise.
#[derive(Debug)]
pub(crate) struct Lru<T> {
    entries: HashMap<[u8; 32], (Arc<T>, u64)>,
    clock: u64,
    capacity: usize,
}

impl<T> Lru<T> {
    pub(crate) fn new(capacity: usize) -> Lru<T> {
        Lru {
            entries: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&mut self, key: &[u8; 32]) -> Option<Arc<T>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(v, used)| {
            *used = clock;
            v.clone()
        })
    }

    pub(crate) fn put(&mut self, key: [u8; 32], value: Arc<T>) {
        self.clock += 1;
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (value, self.clock));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A short most-recently-used list whose entries are found by a test on their keys (equal
/// bytes, or identity) instead of by a digest: for the few entries worth finding without
/// hashing anything.
#[derive(Debug)]
pub(crate) struct Recent<K, V> {
    entries: Vec<(K, Arc<V>)>,
    capacity: usize,
}

impl<K, V> Recent<K, V> {
    pub(crate) fn new(capacity: usize) -> Recent<K, V> {
        Recent {
            entries: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// The value of the first entry whose key passes `hit`, moved to the front.
    pub(crate) fn find(&mut self, hit: impl Fn(&K) -> bool) -> Option<Arc<V>> {
        let at = self.entries.iter().position(|(k, _)| hit(k))?;
        let entry = self.entries.remove(at);
        let value = entry.1.clone();
        self.entries.insert(0, entry);
        Some(value)
    }

    /// Remembers `value` under `key` at the front, forgetting the least recently used entry
    /// beyond the capacity.
    pub(crate) fn put(&mut self, key: K, value: Arc<V>) {
        self.entries.insert(0, (key, value));
        self.entries.truncate(self.capacity);
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Locks a cache; a panic elsewhere while holding it leaves only a memo behind, never a
/// half-verified item (items are inserted whole), so a poisoned lock is used as is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The item under `key` in `cache`, or `make()`'s, remembered. Without a cache `make` runs and
/// nothing is hashed. The lock is not held while `make` verifies.
pub(crate) fn memo<T>(
    cache: Option<&Mutex<Lru<T>>>,
    key: impl FnOnce() -> [u8; 32],
    make: impl FnOnce() -> Result<T, Error>,
) -> Result<Arc<T>, Error> {
    let Some(cache) = cache else {
        return make().map(Arc::new);
    };
    let key = key();
    if let Some(v) = lock(cache).get(&key) {
        return Ok(v);
    }
    let v = Arc::new(make()?);
    lock(cache).put(key, v.clone());
    Ok(v)
}

/// SHA-256 of a domain tag and length-prefixed parts: the key of one verified item.
pub(crate) fn item_key(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(tag.as_bytes());
    ctx.update(&[0]);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_is_evicted() {
        let mut lru = Lru::new(2);
        lru.put([1; 32], Arc::new(1));
        lru.put([2; 32], Arc::new(2));
        assert_eq!(lru.get(&[1; 32]).as_deref(), Some(&1));
        lru.put([3; 32], Arc::new(3));
        assert_eq!(lru.len(), 2);
        assert!(lru.get(&[2; 32]).is_none(), "2 was least recently used");
        assert_eq!(lru.get(&[1; 32]).as_deref(), Some(&1));
        assert_eq!(lru.get(&[3; 32]).as_deref(), Some(&3));
        // Replacing a present key evicts nothing.
        lru.put([3; 32], Arc::new(4));
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.get(&[3; 32]).as_deref(), Some(&4));
    }

    #[test]
    fn a_recent_entry_found_moves_to_the_front_and_the_last_is_forgotten() {
        let mut recent = Recent::new(2);
        recent.put(1, Arc::new("one"));
        recent.put(2, Arc::new("two"));
        assert_eq!(recent.find(|k| *k == 1).as_deref(), Some(&"one"));
        recent.put(3, Arc::new("three"));
        assert!(recent.find(|k| *k == 2).is_none());
        assert_eq!(recent.find(|k| *k == 1).as_deref(), Some(&"one"));
        assert_eq!(recent.find(|k| *k == 3).as_deref(), Some(&"three"));
        recent.clear();
        assert!(recent.find(|_| true).is_none());
    }

    #[test]
    fn item_keys_separate_tags_and_part_boundaries() {
        assert_ne!(item_key("a", &[b"xy"]), item_key("b", &[b"xy"]));
        assert_ne!(item_key("a", &[b"x", b"y"]), item_key("a", &[b"xy"]));
        assert_eq!(item_key("a", &[b"x", b"y"]), item_key("a", &[b"x", b"y"]));
    }

    #[test]
    fn memo_remembers_successes_only() {
        let cache = Mutex::new(Lru::new(4));
        let calls = std::cell::Cell::new(0);
        let make = || {
            calls.set(calls.get() + 1);
            Ok::<_, Error>(7)
        };
        assert_eq!(*memo(Some(&cache), || [0; 32], make).unwrap(), 7);
        assert_eq!(*memo(Some(&cache), || [0; 32], make).unwrap(), 7);
        assert_eq!(calls.get(), 1);
        let fail = || Err::<u8, _>(Error::malformed(crate::Item::Quote, "no"));
        assert!(memo(Some(&Mutex::new(Lru::new(4))), || [1; 32], fail).is_err());
        let empty: Mutex<Lru<u8>> = Mutex::new(Lru::new(4));
        assert!(memo(Some(&empty), || [1; 32], fail).is_err());
        assert!(lock(&empty).get(&[1; 32]).is_none());
        // Without a cache nothing is remembered.
        memo(None, || unreachable!("no key without a cache"), make).unwrap();
        assert_eq!(calls.get(), 2);
    }
}
