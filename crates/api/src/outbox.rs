//! Coalesces concurrent requests into one broker message. Each request still gets its own
//! answer: 202 once the message holding its envelope is confirmed, 503 otherwise.
//!
//! At most `max_in_flight` messages await their confirm at once; requests arriving meanwhile
//! queue up and leave together in the next message, so batching grows with load and adds no
//! wait when the api is idle. An optional linger waits a little longer to fill a message.

use std::sync::Arc;
use std::time::Duration;

use eye_core::queue::{PublishError, Publisher};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A message holds at most this many bytes of envelopes (one envelope alone may be larger).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Requests that may wait for a place in a message before senders wait too.
const PENDING: usize = 16 * 1024;

struct Pending {
    envelope: Vec<u8>,
    done: oneshot::Sender<Result<(), PublishError>>,
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Pending>,
}

impl Outbox {
    pub fn start(publisher: Publisher, max_in_flight: usize, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel(PENDING);
        tokio::spawn(run(publisher, rx, max_in_flight.max(1), linger));
        Self { tx }
    }

    /// Returns once the broker confirmed the message carrying `envelope`.
    pub async fn send(&self, envelope: Vec<u8>) -> Result<(), PublishError> {
        let (done, confirmed) = oneshot::channel();
        self.tx
            .send(Pending { envelope, done })
            .await
            .map_err(|_| PublishError::Unavailable("the api is shutting down".into()))?;
        confirmed
            .await
            .map_err(|_| PublishError::Unavailable("the publisher stopped".into()))?
    }
}

async fn run(
    publisher: Publisher,
    mut rx: mpsc::Receiver<Pending>,
    max_in_flight: usize,
    linger: Duration,
) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut size = first.envelope.len();
        let mut batch = vec![first];
        // One deadline per message, so a steady stream cannot hold the first request longer.
        let deadline = tokio::time::Instant::now() + linger;
        while size < MAX_MESSAGE_BYTES {
            let next = match rx.try_recv() {
                Ok(next) => Some(next),
                Err(_) if !linger.is_zero() => tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            let Some(next) = next else { break };
            size += next.envelope.len() + 1;
            batch.push(next);
        }
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let result = publisher.publish(&message(&mut batch, size)).await;
            for pending in batch {
                let _ = pending.done.send(result.clone());
            }
            drop(permit);
        });
    }
}

/// One envelope as is (moved, not copied), several as a JSON array of envelopes.
fn message(batch: &mut [Pending], size: usize) -> Vec<u8> {
    if let [only] = batch {
        return std::mem::take(&mut only.envelope);
    }
    let mut body = Vec::with_capacity(size + 2);
    body.push(b'[');
    for (i, pending) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&pending.envelope);
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use eye_core::queue::{BatchLimit, Consumer, MemoryQueue};

    #[tokio::test]
    async fn concurrent_requests_share_messages_and_each_gets_its_answer() {
        let queue = MemoryQueue::new(1000, Duration::from_secs(1));
        let outbox = Outbox::start(
            Publisher::Memory(queue.clone()),
            1,
            Duration::from_millis(5),
        );
        let sends = (0..50).map(|i| {
            let outbox = outbox.clone();
            async move { outbox.send(format!(r#"{{"n":{i}}}"#).into_bytes()).await }
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
        let outbox = Outbox::start(Publisher::Memory(queue), 2, Duration::ZERO);
        let results =
            futures_util::future::join_all((0..5).map(|_| outbox.send(b"{}".to_vec()))).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(PublishError::Unavailable(_))))
        );
    }
}
