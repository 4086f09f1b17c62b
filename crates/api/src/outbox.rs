//! Coalesces concurrent requests into one broker message. Each request still gets its own
//! answer: 202 once the message holding its envelope is confirmed, 503 when it was not sent,
//! 504 when it was sent and not confirmed in time.
//!
//! At most `max_in_flight` messages await their confirm at once; requests arriving meanwhile
//! queue up and leave together in the next message, so batching grows with load and adds no
//! wait when the api is idle. An optional linger waits a little longer to fill a message.
//!
//! Every request has a deadline. One whose client has gone, or whose deadline is (nearly)
//! past, is dropped before a message is built: it is never published. What an outbox holds is
//! bounded in requests and in bytes; past either bound a request is refused at once.

use std::sync::Arc;
use std::time::Duration;

use eye_core::queue::{PublishError, Publisher, Readiness};

use crate::OutboxMetrics;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// A message holds at most this many bytes of envelopes (one envelope alone may be larger).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Requests that may wait for a place in a message; more are refused with `queue_full`.
const PENDING: usize = 16 * 1024;
/// How long past its deadline a request waits for the outbox's answer before giving up on
/// it; the outbox answers by the deadline, so this only covers a stalled task.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// How an outbox publishes and what it may hold.
#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    /// Messages awaiting their confirm at once.
    pub max_in_flight: usize,
    /// How long to wait for more requests to fill a message.
    pub linger: Duration,
    /// How long a request may take, from [`Outbox::send`]'s `arrived`, to be confirmed.
    pub timeout: Duration,
    /// Bytes of envelopes held at once, waiting or awaiting their confirm.
    pub max_bytes: usize,
}

struct Pending {
    envelope: Vec<u8>,
    deadline: Instant,
    done: oneshot::Sender<Result<(), PublishError>>,
    /// Its share of `max_bytes`, returned once the request is answered.
    _bytes: OwnedSemaphorePermit,
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Pending>,
    publisher: Publisher,
    bytes: Arc<Semaphore>,
    config: OutboxConfig,
}

impl Outbox {
    pub fn start(publisher: Publisher, config: OutboxConfig, metrics: OutboxMetrics) -> Self {
        let config = OutboxConfig {
            max_in_flight: config.max_in_flight.max(1),
            max_bytes: config.max_bytes.clamp(1, Semaphore::MAX_PERMITS),
            ..config
        };
        let (tx, rx) = mpsc::channel(PENDING);
        // The receiver of waiting requests cannot be rebuilt, so a panic ends the process
        // rather than leave this thread answering 503 forever.
        eye_core::supervise::spawn_critical("outbox", run(publisher.clone(), rx, config, metrics));
        Self {
            tx,
            publisher,
            bytes: Arc::new(Semaphore::new(config.max_bytes)),
            config,
        }
    }

    /// Returns once the broker confirmed the message carrying `envelope`, or with why not by
    /// `arrived` + the timeout. Dropping the returned future (the client went away) before the
    /// envelope left keeps it from ever being published.
    pub async fn send(&self, envelope: Vec<u8>, arrived: Instant) -> Result<(), PublishError> {
        if self.publisher.is_blocked() {
            return Err(PublishError::Blocked);
        }
        let share = envelope.len().clamp(1, self.config.max_bytes);
        let bytes = u32::try_from(share)
            .ok()
            .and_then(|share| self.bytes.clone().try_acquire_many_owned(share).ok())
            .ok_or(PublishError::Full)?;
        let deadline = arrived + self.config.timeout;
        let (done, confirmed) = oneshot::channel();
        let pending = Pending {
            envelope,
            deadline,
            done,
            _bytes: bytes,
        };
        self.tx.try_send(pending).map_err(|e| match e {
            TrySendError::Full(_) => PublishError::Full,
            TrySendError::Closed(_) => PublishError::Unavailable("the api is shutting down".into()),
        })?;
        match tokio::time::timeout_at(deadline + ANSWER_GRACE, confirmed).await {
            Ok(Ok(answer)) => answer,
            // The envelope may have left before the answer was lost.
            Ok(Err(_)) => Err(PublishError::Unconfirmed(
                "the publisher stopped before answering".into(),
            )),
            Err(_) => Err(PublishError::Unconfirmed(
                "no answer before the deadline".into(),
            )),
        }
    }

    /// Whether this outbox's publisher could publish now, and if not, why.
    pub async fn readiness(&self) -> Readiness {
        self.publisher.readiness().await
    }
}

/// Whether a request still goes out: not if its client has gone (dropped silently) or too
/// little of its time is left to be sent and confirmed (answered as not sent).
fn still_wanted(pending: Pending, least: Duration) -> Option<Pending> {
    if pending.done.is_closed() {
        return None;
    }
    if pending.deadline.saturating_duration_since(Instant::now()) < least {
        let _ = pending.done.send(Err(PublishError::Timeout));
        return None;
    }
    Some(pending)
}

async fn run(
    publisher: Publisher,
    mut rx: mpsc::Receiver<Pending>,
    config: OutboxConfig,
    metrics: OutboxMetrics,
) {
    // Requests arriving meanwhile wait in `rx`; they would have waited for the channels.
    publisher.warm().await;
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    // A message needs some time to be sent and confirmed; with less, refuse it unsent.
    let least = config.timeout / 10;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let first = loop {
            match rx.recv().await {
                None => return,
                Some(pending) => {
                    if let Some(pending) = still_wanted(pending, least) {
                        break pending;
                    }
                }
            }
        };
        let mut size = first.envelope.len();
        let mut batch = vec![first];
        // One deadline per message, so a steady stream cannot hold the first request longer.
        let linger_until = Instant::now() + config.linger;
        while size < MAX_MESSAGE_BYTES {
            let next = match rx.try_recv() {
                Ok(next) => Some(next),
                Err(_) if !config.linger.is_zero() => {
                    tokio::time::timeout_at(linger_until, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
                Err(_) => None,
            };
            let Some(next) = next else { break };
            if let Some(next) = still_wanted(next, least) {
                size += next.envelope.len() + 1;
                batch.push(next);
            }
        }
        // The linger may have outlived a client or a deadline; without one, each was just
        // checked on arrival.
        if !config.linger.is_zero() {
            batch = batch
                .into_iter()
                .filter_map(|p| still_wanted(p, least))
                .collect();
        }
        let Some(deadline) = batch.iter().map(|p| p.deadline).min() else {
            continue;
        };
        metrics.envelopes_per_message.record(batch.len() as f64);
        let body = message(&mut batch);
        let publisher = publisher.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.in_flight.increment(1.0);
            let published = Instant::now();
            let result = publisher.publish_by(&body, deadline).await;
            metrics
                .confirm_seconds
                .record(published.elapsed().as_secs_f64());
            metrics.in_flight.decrement(1.0);
            for pending in batch {
                let _ = pending.done.send(result.clone());
            }
            drop(permit);
        });
    }
}

/// One envelope as is (moved, not copied), several as a JSON array of envelopes. The
/// envelopes are emptied so the batch holds each byte once.
fn message(batch: &mut [Pending]) -> Vec<u8> {
    if let [only] = batch {
        return std::mem::take(&mut only.envelope);
    }
    let size = batch.iter().map(|p| p.envelope.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size + 2);
    body.push(b'[');
    for (i, pending) in batch.iter_mut().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&std::mem::take(&mut pending.envelope));
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use eye_core::queue::{BatchLimit, Consumer, MemoryQueue};

    fn config(max_in_flight: usize, linger: Duration) -> OutboxConfig {
        OutboxConfig {
            max_in_flight,
            linger,
            timeout: Duration::from_secs(5),
            max_bytes: 1024 * 1024,
        }
    }

    fn bodies(queue: &MemoryQueue) -> Vec<String> {
        let mut consumer = Consumer::Memory(queue.clone());
        let batch = consumer.ready_batch(BatchLimit::messages(100));
        batch
            .iter()
            .map(|d| String::from_utf8(d.body.clone()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn concurrent_requests_share_messages_and_each_gets_its_answer() {
        let queue = MemoryQueue::new(1000, Duration::from_secs(1));
        let outbox = Outbox::start(
            Publisher::Memory(queue.clone()),
            config(1, Duration::from_millis(5)),
            OutboxMetrics::disabled(),
        );
        let sends = (0..50).map(|i| {
            let outbox = outbox.clone();
            async move {
                outbox
                    .send(format!(r#"{{"n":{i}}}"#).into_bytes(), Instant::now())
                    .await
            }
        });
        let results = futures_util::future::join_all(sends).await;
        assert!(results.iter().all(Result::is_ok));

        let messages = Consumer::Memory(queue).ready_batch(BatchLimit::messages(100));
        assert!(
            messages.len() < 50,
            "{} messages for 50 requests",
            messages.len()
        );
        let mut seen: Vec<i64> = Vec::new();
        for message in messages {
            let value: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
            match value {
                serde_json::Value::Array(items) => {
                    seen.extend(items.iter().map(|v| v["n"].as_i64().unwrap()))
                }
                one => seen.push(one["n"].as_i64().unwrap()),
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn every_request_in_a_refused_message_is_told() {
        let queue = MemoryQueue::new(10, Duration::from_millis(10));
        queue.close();
        let outbox = Outbox::start(
            Publisher::Memory(queue),
            config(2, Duration::ZERO),
            OutboxMetrics::disabled(),
        );
        let results = futures_util::future::join_all(
            (0..5).map(|_| outbox.send(b"{}".to_vec(), Instant::now())),
        )
        .await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(PublishError::Unavailable(_))))
        );
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_refused_and_never_published() {
        let queue = MemoryQueue::new(10, Duration::from_secs(1));
        let outbox = Outbox::start(
            Publisher::Memory(queue.clone()),
            config(1, Duration::ZERO),
            OutboxMetrics::disabled(),
        );
        let long_ago = Instant::now() - Duration::from_secs(6);
        let late = outbox.send(b"\"late\"".to_vec(), long_ago).await;
        assert!(matches!(late, Err(PublishError::Timeout)), "{late:?}");
        outbox
            .send(b"\"on time\"".to_vec(), Instant::now())
            .await
            .unwrap();
        assert_eq!(bodies(&queue), [r#""on time""#]);
    }

    #[tokio::test]
    async fn a_request_whose_client_left_before_it_was_sent_is_never_published() {
        // Room for one message, taken: the first request waits for room, holding the only
        // in-flight slot, so the second waits in the outbox.
        let queue = MemoryQueue::new(1, Duration::from_secs(10));
        Publisher::Memory(queue.clone())
            .publish(b"\"earlier\"")
            .await
            .unwrap();
        let outbox = Outbox::start(
            Publisher::Memory(queue.clone()),
            config(1, Duration::ZERO),
            OutboxMetrics::disabled(),
        );
        let first = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(b"\"first\"".to_vec(), Instant::now()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The client of the second request goes away while it waits.
        let gone = tokio::time::timeout(
            Duration::from_millis(50),
            outbox.send(b"\"gone\"".to_vec(), Instant::now()),
        )
        .await;
        assert!(gone.is_err());

        let mut consumer = Consumer::Memory(queue.clone());
        let earlier = consumer.ready_batch(BatchLimit::messages(10));
        consumer.ack(earlier).await.unwrap();
        first.await.unwrap().unwrap();
        let taken = consumer.ready_batch(BatchLimit::messages(10));
        consumer.ack(taken).await.unwrap();
        // Sent after the one that left, so that one has been dealt with by now.
        outbox
            .send(b"\"after\"".to_vec(), Instant::now())
            .await
            .unwrap();
        assert_eq!(bodies(&queue), [r#""after""#]);
    }

    #[tokio::test]
    async fn past_its_byte_bound_an_outbox_refuses_at_once() {
        // A queue with no room: whatever is sent waits for its deadline.
        let queue = MemoryQueue::new(0, Duration::from_secs(10));
        let outbox = Outbox::start(
            Publisher::Memory(queue.clone()),
            OutboxConfig {
                max_bytes: 100,
                ..config(4, Duration::ZERO)
            },
            OutboxMetrics::disabled(),
        );
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(vec![b' '; 60], Instant::now()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let refused = outbox.send(vec![b' '; 60], Instant::now()).await;
        assert!(matches!(refused, Err(PublishError::Full)), "{refused:?}");
        assert!(started.elapsed() < Duration::from_millis(100));
        // Small enough to fit beside the waiting one.
        let fits = tokio::time::timeout(
            Duration::from_millis(100),
            outbox.send(vec![b' '; 30], Instant::now()),
        )
        .await;
        assert!(fits.is_err(), "a request within the bound waits its turn");
        waiting.abort();
    }
}
