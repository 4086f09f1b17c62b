//! Rate limits counted in events: a rate (`10000/s`, `600/min`, `50000/h`) and a burst, the
//! most events an application may send at once after a quiet spell.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// The most events a rate may allow per period; beyond it a bucket refills faster than a
/// nanosecond per event.
pub const MAX_EVENTS: u32 = 1_000_000_000;

/// Events per period: `N/s`, `N/min` or `N/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    events: NonZeroU32,
    period_secs: NonZeroU32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    #[error(
        "`{0}` is not a rate: write events per second, minute or hour, e.g. `10000/s`, `600/min` or `50000/h`"
    )]
    Unreadable(String),
    #[error("a rate of `{0}` lets nothing through: allow at least 1 event")]
    Zero(String),
    #[error("`{0}` is more than {MAX_EVENTS} events per period")]
    TooHigh(String),
    #[error("a burst of 0 lets nothing through: allow at least 1 event")]
    ZeroBurst,
    #[error("a burst of {0} is more than {MAX_EVENTS} events")]
    BurstTooHigh(u64),
    #[error(
        "a burst of {burst} at {rate} takes longer than a year to refill: allow a faster rate or a smaller burst"
    )]
    RefillTooLong { rate: String, burst: u64 },
}

/// The longest a bucket may take to refill from empty. It also keeps the bucket's arithmetic
/// (nanoseconds in a u64) far from overflowing.
const MAX_REFILL: Duration = Duration::from_secs(366 * 24 * 3600);

impl Rate {
    /// `events` per `period_secs`; `None` for zero or above [`MAX_EVENTS`].
    pub const fn new(events: u32, period_secs: u32) -> Option<Self> {
        if events > MAX_EVENTS {
            return None;
        }
        match (NonZeroU32::new(events), NonZeroU32::new(period_secs)) {
            (Some(events), Some(period_secs)) => Some(Self {
                events,
                period_secs,
            }),
            _ => None,
        }
    }

    pub const fn per_second(events: NonZeroU32) -> Self {
        Self {
            events,
            period_secs: NonZeroU32::MIN,
        }
    }

    pub fn events(&self) -> u32 {
        self.events.get()
    }

    pub fn period_secs(&self) -> u32 {
        self.period_secs.get()
    }

    /// How long one event's worth of the bucket takes to refill (at least a nanosecond).
    pub fn interval(&self) -> Duration {
        (Duration::from_secs(self.period_secs.get().into()) / self.events.get())
            .max(Duration::from_nanos(1))
    }
}

impl FromStr for Rate {
    type Err = RateLimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unreadable = || RateLimitError::Unreadable(text.to_owned());
        let (events, unit) = text.trim().split_once('/').ok_or_else(unreadable)?;
        let period_secs = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => 1,
            "min" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => return Err(unreadable()),
        };
        let events: u64 = events.trim().parse().map_err(|_| unreadable())?;
        if events == 0 {
            return Err(RateLimitError::Zero(text.trim().to_owned()));
        }
        let events = u32::try_from(events)
            .ok()
            .filter(|e| *e <= MAX_EVENTS)
            .ok_or_else(|| RateLimitError::TooHigh(text.trim().to_owned()))?;
        Rate::new(events, period_secs).ok_or_else(unreadable)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period_secs.get() {
            1 => write!(f, "{}/s", self.events),
            60 => write!(f, "{}/min", self.events),
            3600 => write!(f, "{}/h", self.events),
            secs => write!(f, "{} per {secs} s", self.events),
        }
    }
}

/// A rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: Rate,
    pub burst: NonZeroU32,
}

impl RateLimit {
    pub fn new(rate: Rate, burst: u64) -> Result<Self, RateLimitError> {
        if burst > u64::from(MAX_EVENTS) {
            return Err(RateLimitError::BurstTooHigh(burst));
        }
        let burst = u32::try_from(burst)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or(RateLimitError::ZeroBurst)?;
        if rate.interval().saturating_mul(burst.get()) > MAX_REFILL {
            return Err(RateLimitError::RefillTooLong {
                rate: rate.to_string(),
                burst: burst.get().into(),
            });
        }
        Ok(Self { rate, burst })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, bursts of {}", self.rate, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_that_would_take_over_a_year_to_refill_is_refused() {
        let hourly: Rate = "1/h".parse().unwrap();
        assert!(RateLimit::new(hourly, 8_000).is_ok());
        assert!(matches!(
            RateLimit::new(hourly, 6_000_000),
            Err(RateLimitError::RefillTooLong { .. })
        ));
        let fast: Rate = "1000000/s".parse().unwrap();
        assert!(RateLimit::new(fast, u64::from(MAX_EVENTS)).is_ok());
    }

    #[test]
    fn rates_are_events_per_second_minute_or_hour() {
        let cases = [
            ("10000/s", 10_000, 1),
            ("600/min", 600, 60),
            ("50000/h", 50_000, 3600),
            (" 5 / MIN ", 5, 60),
            ("2/sec", 2, 1),
            ("1/hour", 1, 3600),
        ];
        for (text, events, period_secs) in cases {
            let rate: Rate = text.parse().unwrap();
            assert_eq!((rate.events(), rate.period_secs()), (events, period_secs));
        }
    }

    #[test]
    fn rates_print_as_they_are_written() {
        for text in ["10000/s", "600/min", "50000/h"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
        assert_eq!(Rate::new(7, 30).unwrap().to_string(), "7 per 30 s");
    }

    #[test]
    fn junk_zero_and_huge_rates_are_refused_saying_why() {
        for junk in [
            "", "10000", "/s", "ten/s", "10/day", "-1/s", "1.5/s", "10/s/s",
        ] {
            assert!(
                matches!(junk.parse::<Rate>(), Err(RateLimitError::Unreadable(_))),
                "{junk:?}"
            );
        }
        assert!(matches!(
            "0/s".parse::<Rate>(),
            Err(RateLimitError::Zero(_))
        ));
        assert!(matches!(
            "1000000001/s".parse::<Rate>(),
            Err(RateLimitError::TooHigh(_))
        ));
        assert!(matches!(
            "99999999999999999999/s".parse::<Rate>(),
            Err(RateLimitError::Unreadable(_))
        ));
        let message = "0/min".parse::<Rate>().unwrap_err().to_string();
        assert!(message.contains("at least 1 event"), "{message}");
    }

    #[test]
    fn one_event_refills_in_the_period_divided_by_the_rate() {
        let rate: Rate = "5/min".parse().unwrap();
        assert_eq!(rate.interval(), Duration::from_secs(12));
        let rate: Rate = "10000/s".parse().unwrap();
        assert_eq!(rate.interval(), Duration::from_micros(100));
        let rate: Rate = "1000000000/s".parse().unwrap();
        assert_eq!(rate.interval(), Duration::from_nanos(1));
    }

    #[test]
    fn a_burst_is_at_least_one_event() {
        let rate: Rate = "1/s".parse().unwrap();
        assert_eq!(RateLimit::new(rate, 0), Err(RateLimitError::ZeroBurst));
        assert!(matches!(
            RateLimit::new(rate, u64::from(MAX_EVENTS) + 1),
            Err(RateLimitError::BurstTooHigh(_))
        ));
        let limit = RateLimit::new(rate, 5).unwrap();
        assert_eq!(limit.to_string(), "1/s, bursts of 5");
    }
}
