//! Failed-login throttling: after `attempts` failures within `window` for one username, or
//! four times as many from one address (many people may share a proxy), logins wait the
//! window out. Kept in memory: each admin instance counts its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before old ones are dropped, so a flood of names cannot grow memory.
const MAX_KEYS: usize = 10_000;
const ADDRESS_FACTOR: u32 = 4;

pub struct Throttle {
    attempts: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, address: &str) -> [(String, u32); 2] {
        [
            (format!("user:{}", username.to_lowercase()), 1),
            (format!("addr:{address}"), ADDRESS_FACTOR),
        ]
    }

    /// How long until a login for this name from this address may be tried, if it must wait.
    pub fn wait(&self, username: &str, address: &str) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(username, address)
            .iter()
            .filter_map(|(key, factor)| {
                let (count, since) = failures.get(key)?;
                let left = self.window.checked_sub(since.elapsed())?;
                (*count >= self.attempts * factor).then_some(left)
            })
            .max()
    }

    pub fn failed(&self, username: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, (_, since)| since.elapsed() < self.window);
            if failures.len() >= MAX_KEYS {
                failures.clear();
            }
        }
        for (key, _) in Self::keys(username, address) {
            let entry = failures.entry(key).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= self.window {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn succeeded(&self, username: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&format!("user:{}", username.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_waits_after_too_many_failures_and_success_clears_it() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            throttle.failed("ana", "10.0.0.1");
        }
        assert_eq!(throttle.wait("ana", "10.0.0.1"), None);
        throttle.failed("ANA", "10.0.0.2");
        assert!(throttle.wait("ana", "10.0.0.9").is_some());
        assert_eq!(throttle.wait("bob", "10.0.0.1"), None);
        throttle.succeeded("ana");
        assert_eq!(throttle.wait("ana", "10.0.0.1"), None);
    }

    #[test]
    fn one_address_trying_many_names_waits_too() {
        let throttle = Throttle::new(2, Duration::from_secs(60));
        for i in 0..8 {
            throttle.failed(&format!("user{i}"), "10.0.0.1");
        }
        assert!(throttle.wait("someone-new", "10.0.0.1").is_some());
        assert_eq!(throttle.wait("someone-new", "10.0.0.2"), None);
    }

    #[test]
    fn the_wait_ends_with_the_window() {
        let throttle = Throttle::new(1, Duration::from_millis(30));
        throttle.failed("ana", "a");
        assert!(throttle.wait("ana", "a").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(throttle.wait("ana", "a"), None);
    }
}
