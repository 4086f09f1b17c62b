//! The limit per client address of publishable keys (`publishable_rate_limit`), on top of each
//! application's own: a key in a web page is public, so one visitor — or a script that copied
//! the key — must not be able to spend the whole application's limit. Counted in events, one
//! bucket per (application, address) in this api instance; IPv6 addresses count per /64, the
//! block one subscriber usually holds.
//!
//! The buckets are bounded, per application and in all: past either bound, an address without
//! a bucket shares one with every other such address of its application, so a flood from many
//! addresses can neither grow the map nor spend more than one address's limit, visitors already
//! counted keep theirs, and other applications keep room for their own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use eye_core::rate_limit::RateLimit;
use eye_core::supervise::{Checkpoint, OnPanic};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};
use uuid::Uuid;

use crate::rate_limit::{Refusal, retry_after_secs};

/// The name the task that forgets idle addresses is supervised under.
pub const PRUNE_TASK: &str = "address limit prune";

/// How often buckets that refilled completely are dropped, which bounds the map by the
/// addresses that sent within about one refill time.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Buckets of single addresses an api instance keeps at most for one application, and for all
/// together (about 60 bytes each); past either, new addresses share their application's
/// overflow bucket.
pub const MAX_ADDRESSES_PER_APPLICATION: usize = 100_000;
pub const MAX_ADDRESSES: usize = 500_000;

/// The key of an application's overflow bucket: never a client's block, whose IPv6 form has
/// its low 64 bits zero.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0xffff, 0xffff, 0xffff));

type Key = (Uuid, IpAddr);

pub struct AddressLimiter {
    limit: RateLimit,
    buckets: RateLimiter<Key, CappedBuckets, DefaultClock, NoOpMiddleware>,
    clock: DefaultClock,
}

impl AddressLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, MAX_ADDRESSES_PER_APPLICATION, MAX_ADDRESSES)
    }

    fn with_capacity(limit: RateLimit, per_application: usize, total: usize) -> Self {
        let quota = Quota::with_period(limit.rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(limit.burst);
        let clock = DefaultClock::default();
        let buckets = CappedBuckets {
            per_application,
            total,
            buckets: Mutex::default(),
        };
        Self {
            limit,
            buckets: RateLimiter::new(quota, buckets, clock.clone()),
            clock,
        }
    }

    /// Takes `events` from the bucket of `address` for `application`, or says why not.
    pub fn check(&self, application: Uuid, address: IpAddr, events: u32) -> Result<(), Refusal> {
        let Some(n) = NonZeroU32::new(events) else {
            return Ok(());
        };
        match self
            .buckets
            .check_key_n(&(application, block_of(address)), n)
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::RateLimited {
                limit: self.limit,
                retry_after_secs: retry_after_secs(not_until.wait_time_from(self.clock.now())),
            }),
            Err(_) => Err(Refusal::OverBurst {
                limit: self.limit,
                events,
            }),
        }
    }

    /// Buckets now, overflow ones included (full buckets are dropped every 30 s).
    pub fn addresses(&self) -> usize {
        self.buckets.len()
    }

    /// Drops full buckets every 30 s for as long as the limiter lives.
    pub fn spawn_prune(self: &Arc<Self>) {
        let limiter: Weak<Self> = Arc::downgrade(self);
        eye_core::supervise::spawn_supervised(PRUNE_TASK, OnPanic::Restart, move || {
            let limiter = limiter.clone();
            async move {
                let mut ticks = tokio::time::interval(PRUNE_EVERY);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut checkpoint = Checkpoint::new(PRUNE_TASK);
                loop {
                    ticks.tick().await;
                    checkpoint.pass();
                    let Some(limiter) = limiter.upgrade() else {
                        break;
                    };
                    limiter.buckets.retain_recent();
                    limiter.buckets.shrink_to_fit();
                }
            }
        });
    }
}

/// governor's state store, a map from key to the time its bucket is full again, with bounds: a
/// key it has no room for (`per_application` addresses of its application, or `total` buckets
/// in all) is counted in its application's overflow bucket instead.
struct CappedBuckets {
    per_application: usize,
    total: usize,
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    states: HashMap<Key, Nanos>,
    /// Addresses with a bucket of their own, per application.
    addresses: HashMap<Uuid, usize>,
}

impl CappedBuckets {
    fn buckets(&self) -> std::sync::MutexGuard<'_, Buckets> {
        // A panic cannot leave a half-written state: the closure under the lock only computes.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for CappedBuckets {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut buckets = self.buckets();
        if let Some(full_again) = buckets.states.get_mut(key) {
            let (outcome, next) = f(Some(*full_again))?;
            *full_again = next;
            return Ok(outcome);
        }
        let (application, _) = *key;
        let room = buckets.addresses.get(&application).copied().unwrap_or(0) < self.per_application
            && buckets.states.len() < self.total;
        let key = if room { *key } else { (application, OVERFLOW) };
        let (outcome, full_again) = f(buckets.states.get(&key).copied())?;
        buckets.states.insert(key, full_again);
        // With room the key is new (the lookup above missed it); the overflow is not counted.
        if room {
            *buckets.addresses.entry(application).or_default() += 1;
        }
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<Key> for CappedBuckets {
    /// Drops the buckets that are full again, as governor's own stores do.
    fn retain_recent(&self, drop_below: Nanos) {
        let mut buckets = self.buckets();
        let Buckets { states, addresses } = &mut *buckets;
        states.retain(|&(application, address), full_again| {
            let keep = *full_again > drop_below;
            if !keep
                && address != OVERFLOW
                && let Some(count) = addresses.get_mut(&application)
            {
                *count -= 1;
            }
            keep
        });
        addresses.retain(|_, count| *count > 0);
    }

    fn shrink_to_fit(&self) {
        let mut buckets = self.buckets();
        buckets.states.shrink_to_fit();
        buckets.addresses.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.buckets().states.len()
    }

    fn is_empty(&self) -> bool {
        self.buckets().states.is_empty()
    }
}

/// The address a bucket counts: an IPv4 address, or the /64 an IPv6 address is in (one
/// subscriber's usual allocation, which a client could otherwise walk through).
fn block_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: &str, burst: u64) -> RateLimit {
        RateLimit::new(rate.parse().unwrap(), burst).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_address_of_each_application_has_its_own_bucket() {
        let limiter = AddressLimiter::new(limit("5/min", 5));
        let (shop, blog) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(limiter.check(shop, ip("203.0.113.1"), 5), Ok(()));
        let Err(Refusal::RateLimited {
            retry_after_secs, ..
        }) = limiter.check(shop, ip("203.0.113.1"), 1)
        else {
            panic!("the sixth event passed");
        };
        assert!((11..=12).contains(&retry_after_secs), "{retry_after_secs}");
        assert_eq!(limiter.check(shop, ip("203.0.113.2"), 5), Ok(()));
        assert_eq!(limiter.check(blog, ip("203.0.113.1"), 5), Ok(()));
        assert!(matches!(
            limiter.check(blog, ip("203.0.113.9"), 6),
            Err(Refusal::OverBurst { events: 6, .. })
        ));
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = AddressLimiter::new(limit("5/min", 5));
        let shop = Uuid::new_v4();
        assert_eq!(limiter.check(shop, ip("2001:db8:1:2::1"), 5), Ok(()));
        assert!(limiter.check(shop, ip("2001:db8:1:2:ffff::9"), 1).is_err());
        assert_eq!(limiter.check(shop, ip("2001:db8:1:3::1"), 5), Ok(()));
        assert_eq!(limiter.check(shop, ip("198.51.100.7"), 5), Ok(()));
        assert!(limiter.check(shop, ip("::ffff:198.51.100.7"), 1).is_err());
        assert_eq!(limiter.addresses(), 3);
    }

    #[test]
    fn past_its_bound_an_applications_new_addresses_share_its_overflow_bucket() {
        let limiter = AddressLimiter::with_capacity(limit("5/min", 5), 2, 100);
        let (shop, blog) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(limiter.check(shop, ip("203.0.113.1"), 1), Ok(()));
        assert_eq!(limiter.check(shop, ip("203.0.113.2"), 1), Ok(()));
        // Two more addresses of the shop: one bucket of five between them.
        assert_eq!(limiter.check(shop, ip("203.0.113.3"), 3), Ok(()));
        assert_eq!(limiter.check(shop, ip("203.0.113.4"), 2), Ok(()));
        assert!(limiter.check(shop, ip("203.0.113.5"), 1).is_err());
        // The addresses counted before keep their own buckets, and the flood on the shop
        // leaves the blog room for addresses of its own.
        assert_eq!(limiter.check(shop, ip("203.0.113.1"), 4), Ok(()));
        assert_eq!(limiter.check(blog, ip("203.0.113.3"), 5), Ok(()));
        assert_eq!(limiter.check(blog, ip("203.0.113.4"), 5), Ok(()));
        assert_eq!(
            limiter.addresses(),
            5,
            "four addresses and the shop's overflow"
        );
    }

    #[test]
    fn past_the_bound_of_all_every_application_has_one_overflow_bucket() {
        let limiter = AddressLimiter::with_capacity(limit("5/min", 5), 100, 2);
        let (shop, blog) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(limiter.check(shop, ip("203.0.113.1"), 5), Ok(()));
        assert_eq!(limiter.check(blog, ip("203.0.113.1"), 5), Ok(()));
        assert_eq!(limiter.check(shop, ip("203.0.113.2"), 5), Ok(()));
        assert!(limiter.check(shop, ip("203.0.113.3"), 1).is_err());
        assert_eq!(limiter.check(blog, ip("203.0.113.2"), 5), Ok(()));
        assert_eq!(
            limiter.addresses(),
            4,
            "two addresses and two overflow buckets"
        );
    }

    #[test]
    fn no_client_counts_in_the_overflow_bucket_by_its_address() {
        for address in [
            "::",
            "::1",
            "::ffff:ffff:ffff:ffff",
            "2001:db8::ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "255.255.255.255",
        ] {
            assert_ne!(block_of(ip(address)), OVERFLOW, "{address}");
        }
    }

    #[test]
    fn full_buckets_are_dropped_and_make_room_again() {
        let limiter = AddressLimiter::with_capacity(limit("1000/s", 1), 1, 100);
        let shop = Uuid::new_v4();
        assert_eq!(limiter.check(shop, ip("203.0.113.1"), 1), Ok(()));
        std::thread::sleep(Duration::from_millis(5));
        limiter.buckets.retain_recent();
        assert_eq!(limiter.addresses(), 0);
        assert_eq!(limiter.check(shop, ip("203.0.113.2"), 1), Ok(()));
        assert_eq!(limiter.check(shop, ip("203.0.113.3"), 1), Ok(()));
        assert_eq!(
            limiter.addresses(),
            2,
            "the third address is in the overflow bucket"
        );
    }
}
