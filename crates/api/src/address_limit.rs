//! The limit per client address of publishable keys (`publishable_rate_limit`), on top of each
//! application's own: a key in a web page is public, so one visitor — or a script that copied
//! the key — must not be able to spend the whole application's limit. Counted in events, one
//! bucket per (application, address) in this api instance; IPv6 addresses count per /64, the
//! block one subscriber usually holds.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use eye_core::rate_limit::RateLimit;
use eye_core::supervise::{Checkpoint, OnPanic};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

use crate::rate_limit::{Refusal, retry_after_secs};

/// The name the task that forgets idle addresses is supervised under.
pub const PRUNE_TASK: &str = "address limit prune";

/// How often buckets that refilled completely are dropped, which bounds the map by the
/// addresses that sent within about one refill time.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

pub struct AddressLimiter {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<(Uuid, IpAddr)>,
    clock: DefaultClock,
}

impl AddressLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::with_period(limit.rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(limit.burst);
        Self {
            limit,
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
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

    /// Addresses with a bucket now (full buckets are dropped every 30 s).
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
}
