//! Per-application rate limits, counted in events: one token bucket (GCRA) per application,
//! shared by every HTTP worker thread of this api instance. Each instance counts on its own.
//!
//! The hot path takes a read lock, looks the application up and updates its bucket with one
//! atomic operation; the write lock is taken only when an application is first seen or its
//! limit changed.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use eye_auth::Grant;
use eye_core::rate_limit::RateLimit;
use eye_core::supervise::{Checkpoint, OnPanic};
use eye_entity::rate_limits::{self, Refused};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

/// The name the task that reports refused requests is supervised under.
pub const REPORT_TASK: &str = "rate limit report";

/// Why a request was refused for its application's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the limit now; the same request passes after `retry_after_secs`.
    RateLimited {
        limit: RateLimit,
        retry_after_secs: u64,
    },
    /// More events than the burst: this request can never pass, however long it waits.
    OverBurst { limit: RateLimit, events: u32 },
}

/// Requests and events refused for one application since the last report.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    events: AtomicU64,
}

struct Bucket {
    limit: RateLimit,
    limiter: DefaultDirectRateLimiter,
    /// Kept across a change of limit, so nothing refused goes unreported.
    refused: Arc<Counts>,
}

impl Bucket {
    fn new(limit: RateLimit, refused: Arc<Counts>) -> Self {
        let quota = Quota::with_period(limit.rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(limit.burst);
        Self {
            limit,
            limiter: DefaultDirectRateLimiter::direct(quota),
            refused,
        }
    }
}

/// Every application's bucket in this api instance. The map holds one entry per application
/// that sent since start, so it is bounded by the number of applications.
pub struct RateLimiter {
    default: RateLimit,
    buckets: RwLock<HashMap<Uuid, Bucket>>,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(default: RateLimit) -> Self {
        Self {
            default,
            buckets: RwLock::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Takes `events` from the application's bucket, or says why the request is refused
    /// (and counts it).
    pub fn check(&self, grant: &Grant, events: u32) -> Result<(), Refusal> {
        let limit = grant.rate_limit.unwrap_or(self.default);
        let Some(n) = NonZeroU32::new(events) else {
            return Ok(());
        };
        {
            let buckets = self.buckets.read().unwrap_or_else(|p| p.into_inner());
            if let Some(bucket) = buckets.get(&grant.application_id)
                && bucket.limit == limit
            {
                return self.take(bucket, grant, n);
            }
        }
        let mut buckets = self.buckets.write().unwrap_or_else(|p| p.into_inner());
        let bucket = match buckets.remove(&grant.application_id) {
            // Another thread built it meanwhile.
            Some(bucket) if bucket.limit == limit => bucket,
            // The limit changed: a new, full bucket with the new quota.
            Some(old) => Bucket::new(limit, old.refused),
            None => Bucket::new(limit, Arc::default()),
        };
        let bucket = buckets.entry(grant.application_id).or_insert(bucket);
        self.take(bucket, grant, n)
    }

    fn take(&self, bucket: &Bucket, grant: &Grant, events: NonZeroU32) -> Result<(), Refusal> {
        let refusal = match bucket.limiter.check_n(events) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Refusal::RateLimited {
                    limit: bucket.limit,
                    retry_after_secs: retry_after_secs(wait),
                }
            }
            Err(_) => Refusal::OverBurst {
                limit: bucket.limit,
                events: events.get(),
            },
        };
        bucket.refused.requests.fetch_add(1, Ordering::Relaxed);
        bucket
            .refused
            .events
            .fetch_add(u64::from(events.get()), Ordering::Relaxed);
        rate_limited(grant, events.get(), &refusal);
        Err(refusal)
    }

    /// What was refused since the last call, per application; the counts start again at 0.
    fn take_refused(&self) -> Vec<Refused> {
        let buckets = self.buckets.read().unwrap_or_else(|p| p.into_inner());
        buckets
            .iter()
            .filter_map(|(id, bucket)| {
                let requests = bucket.refused.requests.swap(0, Ordering::Relaxed);
                let events = bucket.refused.events.swap(0, Ordering::Relaxed);
                (requests > 0).then(|| Refused {
                    application_id: *id,
                    requests: i64::try_from(requests).unwrap_or(i64::MAX),
                    events: i64::try_from(events).unwrap_or(i64::MAX),
                })
            })
            .collect()
    }

    /// Adds what this instance refused to `rate_limited` every `period`, and prunes rows older
    /// than a day about once a minute, for as long as the limiter lives.
    pub fn spawn_report(self: &Arc<Self>, db: DatabaseConnection, period: Duration) {
        let limiter: Weak<Self> = Arc::downgrade(self);
        eye_core::supervise::spawn_supervised(REPORT_TASK, OnPanic::Restart, move || {
            let limiter = limiter.clone();
            let db = db.clone();
            async move {
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut checkpoint = Checkpoint::new(REPORT_TASK);
                let mut pruned_at = None;
                loop {
                    ticks.tick().await;
                    checkpoint.pass();
                    let Some(limiter) = limiter.upgrade() else {
                        break;
                    };
                    let now = chrono::Utc::now();
                    let minute = rate_limits::minute_of(now);
                    limiter.report(&db, minute).await;
                    if pruned_at != Some(minute) {
                        pruned_at = Some(minute);
                        if let Err(e) = rate_limits::prune_refused(&db, now).await {
                            tracing::warn!(error = %e, "could not prune old rate-limit counts");
                        }
                    }
                }
            }
        });
    }

    /// Writes the counts refused since the last report under `minute`. Counts that could not be
    /// written are dropped (logged): they are for operators, and memory stays bounded.
    pub async fn report(&self, db: &DatabaseConnection, minute: chrono::DateTime<chrono::Utc>) {
        let refused = self.take_refused();
        if let Err(e) = rate_limits::add_refused(db, minute, &refused).await {
            tracing::warn!(error = %e, applications = refused.len(), "could not record rate-limited requests");
        }
    }
}

/// Whole seconds, rounded up, at least 1: a client that waits that long is let through.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Every request refused for its application's rate limit passes here (the caller counts it
/// in `eye_api_rate_limited_total`).
fn rate_limited(grant: &Grant, events: u32, refusal: &Refusal) {
    tracing::debug!(
        application = &*grant.application_name,
        events,
        over_burst = matches!(refusal, Refusal::OverBurst { .. }),
        "rate limited"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn grant(limit: Option<RateLimit>) -> Grant {
        Grant {
            token_id: Uuid::new_v4(),
            application_id: Uuid::new_v4(),
            application_name: Arc::from("shop"),
            rate_limit: limit,
            scopes: Arc::new(HashSet::new()),
            origins: None,
        }
    }

    fn limit(rate: &str, burst: u64) -> RateLimit {
        RateLimit::new(rate.parse().unwrap(), burst).unwrap()
    }

    #[test]
    fn a_request_of_n_events_costs_n() {
        let limiter = RateLimiter::new(limit("5/min", 5));
        let shop = grant(None);
        assert_eq!(limiter.check(&shop, 3), Ok(()));
        assert_eq!(limiter.check(&shop, 2), Ok(()));
        let Err(Refusal::RateLimited {
            retry_after_secs, ..
        }) = limiter.check(&shop, 1)
        else {
            panic!("the sixth event passed");
        };
        // One event refills in 12 s.
        assert!((11..=12).contains(&retry_after_secs), "{retry_after_secs}");
        let refused = limiter.take_refused();
        assert_eq!(refused.len(), 1);
        assert_eq!((refused[0].requests, refused[0].events), (1, 1));
        assert!(limiter.take_refused().is_empty());
    }

    #[test]
    fn applications_have_buckets_of_their_own() {
        let limiter = RateLimiter::new(limit("5/min", 5));
        let (shop, blog) = (grant(None), grant(None));
        assert_eq!(limiter.check(&shop, 5), Ok(()));
        assert!(limiter.check(&shop, 1).is_err());
        assert_eq!(limiter.check(&blog, 5), Ok(()));
    }

    #[test]
    fn a_batch_above_the_burst_can_never_pass() {
        let limiter = RateLimiter::new(limit("5/min", 5));
        assert!(matches!(
            limiter.check(&grant(None), 6),
            Err(Refusal::OverBurst { events: 6, .. })
        ));
    }

    #[test]
    fn a_changed_limit_takes_a_new_bucket_and_keeps_the_refused_counts() {
        let limiter = RateLimiter::new(limit("5/min", 5));
        let mut shop = grant(None);
        assert_eq!(limiter.check(&shop, 5), Ok(()));
        assert!(limiter.check(&shop, 2).is_err());
        shop.rate_limit = Some(limit("100/min", 100));
        assert_eq!(limiter.check(&shop, 100), Ok(()));
        let refused = limiter.take_refused();
        assert_eq!((refused[0].requests, refused[0].events), (1, 2));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(12)), 12);
    }
}
