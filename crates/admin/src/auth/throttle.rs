//! Login throttling: at most `attempts` tries within `window` for one username, or four times
//! as many from one address (many people may share a proxy); past that, logins wait the window
//! out. An attempt is counted when it starts, before the password is checked, so guesses sent
//! at once count as surely as guesses sent one after another; a login that succeeds (or whose
//! password was never checked) gives its attempt back. Kept in memory: each admin instance
//! counts its own, in a map that drops its oldest entries when full.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before the oldest are dropped, so a flood of names cannot grow memory.
const MAX_KEYS: usize = 10_000;
const ADDRESS_FACTOR: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Debug)]
struct Entry {
    count: u32,
    since: Instant,
    /// Position in `Counts::age`; later windows have larger numbers.
    order: u64,
}

#[derive(Debug, Default)]
struct Counts {
    entries: HashMap<Key, Entry>,
    /// Keys by the start of their window, oldest first: what to drop when full.
    age: BTreeMap<u64, Key>,
    next: u64,
}

impl Counts {
    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key) {
            self.age.remove(&entry.order);
        }
    }

    /// Drops windows that ended, then the oldest live ones until `room` more keys fit.
    fn make_room(&mut self, window: Duration, capacity: usize, room: usize) {
        while let Some((_, key)) = self.age.first_key_value() {
            let ended = self
                .entries
                .get(key)
                .is_none_or(|e| e.since.elapsed() >= window);
            if !ended && self.entries.len() + room <= capacity {
                break;
            }
            if let Some((_, key)) = self.age.pop_first() {
                self.entries.remove(&key);
            }
        }
    }

    /// The entry for `key` in a window still running, starting a new window if needed.
    fn current(&mut self, key: &Key, window: Duration) -> Option<&mut Entry> {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.since.elapsed() >= window)
        {
            self.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn start(&mut self, key: Key) {
        let order = self.next;
        self.next += 1;
        self.age.insert(order, key.clone());
        self.entries.insert(
            key,
            Entry {
                count: 1,
                since: Instant::now(),
                order,
            },
        );
    }
}

pub struct Throttle {
    attempts: u32,
    window: Duration,
    capacity: usize,
    counts: Mutex<Counts>,
}

/// A counted login attempt: tell the throttle how it ended.
#[derive(Debug)]
#[must_use = "an attempt is given back only through `Throttle::succeeded` or `Throttle::unchecked`"]
pub struct Attempt {
    user: Key,
    address: Key,
}

impl Throttle {
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self::with_capacity(attempts, window, MAX_KEYS)
    }

    pub fn with_capacity(attempts: u32, window: Duration, capacity: usize) -> Self {
        Self {
            attempts: attempts.max(1),
            window,
            capacity: capacity.max(2),
            counts: Mutex::new(Counts::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt for this name from this address, or says how long to wait when
    /// either has no attempts left. Names are compared without case, as logins are.
    pub fn attempt(&self, username: &str, address: IpAddr) -> Result<Attempt, Duration> {
        let user = Key::User(username.to_lowercase());
        let address = Key::Address(address);
        let mut counts = self.lock();
        let limits = [
            (&user, self.attempts),
            (&address, self.attempts.saturating_mul(ADDRESS_FACTOR)),
        ];
        let mut wait = None;
        for (key, limit) in limits {
            if let Some(entry) = counts.current(key, self.window)
                && entry.count >= limit
            {
                let left = self.window.saturating_sub(entry.since.elapsed());
                wait = wait.max(Some(left));
            }
        }
        if let Some(wait) = wait {
            return Err(wait);
        }
        let new = limits
            .iter()
            .filter(|(key, _)| !counts.entries.contains_key(key))
            .count();
        counts.make_room(self.window, self.capacity, new);
        for (key, _) in limits {
            match counts.entries.get_mut(key) {
                Some(entry) => entry.count += 1,
                None => counts.start(key.clone()),
            }
        }
        Ok(Attempt { user, address })
    }

    /// The password was right: the name starts afresh and the address gets its try back.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut counts = self.lock();
        counts.remove(&attempt.user);
        Self::give_back(&mut counts, &attempt.address);
    }

    /// The password was never checked (the server was busy): the attempt does not count.
    pub fn unchecked(&self, attempt: Attempt) {
        let mut counts = self.lock();
        Self::give_back(&mut counts, &attempt.user);
        Self::give_back(&mut counts, &attempt.address);
    }

    fn give_back(counts: &mut Counts, key: &Key) {
        if let Some(entry) = counts.entries.get_mut(key) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fail(throttle: &Throttle, name: &str, address: &str) {
        let _counted = throttle.attempt(name, ip(address)).unwrap();
    }

    #[test]
    fn a_name_waits_after_too_many_failures_and_success_clears_it() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        fail(&throttle, "ana", "10.0.0.1");
        fail(&throttle, "ana", "10.0.0.1");
        let third = throttle.attempt("ANA", ip("10.0.0.2")).unwrap();
        assert!(throttle.attempt("ana", ip("10.0.0.9")).is_err());
        assert!(throttle.attempt("bob", ip("10.0.0.1")).is_ok());
        throttle.succeeded(third);
        assert!(throttle.attempt("ana", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn attempts_count_when_they_start_not_when_they_fail() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        // Three checks in flight at once, none finished: the fourth waits.
        let in_flight: Vec<_> = (0..3)
            .map(|_| throttle.attempt("ana", ip("10.0.0.1")).unwrap())
            .collect();
        assert!(throttle.attempt("ana", ip("10.0.0.2")).is_err());
        // One was never checked (server busy): it gives its attempt back.
        let mut in_flight = in_flight.into_iter();
        throttle.unchecked(in_flight.next().unwrap());
        assert!(throttle.attempt("ana", ip("10.0.0.2")).is_ok());
        assert!(throttle.attempt("ana", ip("10.0.0.2")).is_err());
    }

    #[test]
    fn one_address_trying_many_names_waits_too() {
        let throttle = Throttle::new(2, Duration::from_secs(60));
        for i in 0..8 {
            fail(&throttle, &format!("user{i}"), "10.0.0.1");
        }
        assert!(throttle.attempt("someone-new", ip("10.0.0.1")).is_err());
        assert!(throttle.attempt("someone-new", ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn successful_logins_from_a_shared_address_never_lock_it() {
        let throttle = Throttle::new(1, Duration::from_secs(60));
        for i in 0..20 {
            let attempt = throttle
                .attempt(&format!("user{i}"), ip("10.0.0.1"))
                .unwrap();
            throttle.succeeded(attempt);
        }
        assert!(throttle.attempt("user20", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn the_wait_ends_with_the_window() {
        let throttle = Throttle::new(1, Duration::from_millis(30));
        fail(&throttle, "ana", "10.0.0.1");
        assert!(throttle.attempt("ana", ip("10.0.0.1")).is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(throttle.attempt("ana", ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn a_full_map_drops_its_oldest_entries_and_keeps_recent_lockouts() {
        let throttle = Throttle::with_capacity(1, Duration::from_secs(60), 100);
        fail(&throttle, "victim", "10.0.0.1");
        for i in 0..40 {
            fail(&throttle, &format!("flood{i}"), &format!("10.1.0.{i}"));
        }
        // 82 keys: still room, the victim is still locked out.
        assert_eq!(throttle.keys(), 82);
        assert!(throttle.attempt("victim", ip("10.9.9.9")).is_err());
        for i in 40..100 {
            fail(&throttle, &format!("flood{i}"), &format!("10.1.0.{i}"));
        }
        assert!(throttle.keys() <= 100, "bounded: {}", throttle.keys());
        // The oldest went first; the most recent lockouts all remain.
        assert!(throttle.attempt("victim", ip("10.9.9.8")).is_ok());
        for i in 60..100 {
            assert!(
                throttle
                    .attempt(&format!("flood{i}"), ip("10.2.0.1"))
                    .is_err(),
                "flood{i} keeps its lockout"
            );
        }
    }
}
