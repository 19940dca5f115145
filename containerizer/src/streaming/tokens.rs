//! The single-use tokens in the streaming URLs, as kubelet's request
//! cache keeps them: random, redeemed once, forgotten after a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a URL stays valid (kubelet's cache TTL).
pub(crate) const TTL: Duration = Duration::from_secs(60);
/// How many unredeemed URLs are kept: past this, the oldest is dropped.
const MAX_PENDING: usize = 1000;

pub(crate) struct Tokens<T> {
    map: Mutex<HashMap<String, (Instant, T)>>,
    ttl: Duration,
}

impl<T> Tokens<T> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Tokens {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Keeps `v` under a fresh token and returns the token.
    pub(crate) fn insert(&self, v: T) -> String {
        use rand::RngCore;
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        // URL-safe as it is: lower-case hex.
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if m.len() >= MAX_PENDING {
            let oldest = m
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                m.remove(&k);
            }
        }
        m.insert(token.clone(), (now, v));
        token
    }

    /// Redeems `token`: its value once, if it has not expired.
    pub(crate) fn take(&self, token: &str) -> Option<T> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (at, v) = m.remove(token)?;
        (at.elapsed() < self.ttl).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_redeemed_once() {
        let t = Tokens::new(TTL);
        let a = t.insert(1);
        let b = t.insert(2);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(t.take(&b), Some(2));
        assert_eq!(t.take(&b), None);
        assert_eq!(t.take(&a), Some(1));
        assert_eq!(t.take("nonsense"), None);
    }

    #[test]
    fn a_token_expires() {
        let t = Tokens::new(Duration::from_millis(30));
        let a = t.insert("x");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.take(&a), None);
    }

    #[test]
    fn the_oldest_goes_when_too_many_wait() {
        let t = Tokens::new(TTL);
        let first = t.insert(0);
        for i in 1..=MAX_PENDING {
            t.insert(i);
        }
        assert_eq!(t.take(&first), None);
        assert_eq!(t.map.lock().unwrap().len(), MAX_PENDING);
    }
}
