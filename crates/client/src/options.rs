//! How a [`Client`](crate::Client) batches, retries and buffers.

use std::time::Duration;

use crate::{Client, ClientError};

/// What [`Client::send`](crate::Client::send) does when
/// [`max_buffered_events`](Builder::max_buffered_events) events already wait for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Wait until the server answered some (back-pressure).
    #[default]
    Wait,
    /// Fail at once with [`SendError::BufferFull`](crate::SendError::BufferFull).
    Fail,
}

/// Options of a [`Client`]; `Client::builder(url, token)` starts from the defaults.
#[derive(Clone)]
pub struct Builder {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) max_batch_events: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) gzip_above: Option<usize>,
    pub(crate) max_buffered_events: usize,
    pub(crate) overflow: Overflow,
    pub(crate) concurrency: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) give_up_after: Option<Duration>,
}

impl Builder {
    pub(crate) fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            max_batch_events: 500,
            max_batch_bytes: 500 * 1024,
            linger: Duration::from_millis(50),
            gzip_above: Some(32 * 1024),
            max_buffered_events: 100_000,
            overflow: Overflow::Wait,
            concurrency: 4,
            request_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            give_up_after: Some(Duration::from_secs(600)),
        }
    }

    /// Events in one request, at most the server's `max_events_per_request` (default 500).
    pub fn max_batch_events(mut self, n: usize) -> Self {
        self.max_batch_events = n.max(1);
        self
    }

    /// Uncompressed bytes of one request's body, at most the server's `max_request_bytes`
    /// (default 512 KiB). Default 500 KiB.
    pub fn max_batch_bytes(mut self, n: usize) -> Self {
        self.max_batch_bytes = n.max(1);
        self
    }

    /// How long a batch that is not full waits for more events. Default 50 ms.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Bodies larger than this are sent with `Content-Encoding: gzip`; `None` never
    /// compresses. Default 32 KiB.
    pub fn gzip_above(mut self, bytes: Option<usize>) -> Self {
        self.gzip_above = bytes;
        self
    }

    /// Events sent but not yet answered that the client holds at most. Default 100 000.
    pub fn max_buffered_events(mut self, n: usize) -> Self {
        self.max_buffered_events = n.max(1);
        self
    }

    /// What `send` does when the buffer is full. Default [`Overflow::Wait`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Requests in flight at once. Default 4.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long one request may take before it is retried. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The first and the longest wait between retries of one batch; each retry doubles the
    /// wait, then a random part of it is taken off (jitter). Defaults 100 ms and 30 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// How long a batch is retried before its events are reported as refused with code
    /// `undelivered` (they may have been stored, once); `None` retries for ever, and
    /// [`close`](Client::close) then waits until the server is back. Default 10 minutes.
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }

    /// Starts the client's background task on the current tokio runtime.
    pub fn build(self) -> Result<Client, ClientError> {
        Client::start(self)
    }
}

impl std::fmt::Debug for Builder {
    // Everything but the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("url", &self.url)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("linger", &self.linger)
            .field("gzip_above", &self.gzip_above)
            .field("max_buffered_events", &self.max_buffered_events)
            .field("overflow", &self.overflow)
            .field("concurrency", &self.concurrency)
            .field("request_timeout", &self.request_timeout)
            .field("backoff", &(self.min_backoff, self.max_backoff))
            .field("give_up_after", &self.give_up_after)
            .finish_non_exhaustive()
    }
}
