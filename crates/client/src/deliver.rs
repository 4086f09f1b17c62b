//! Delivering one batch: post, read the answer, and retry, split or report until every event
//! of it is accepted or refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use tokio::time::Instant;

use crate::batcher::Pending;
use crate::client::Shared;
use crate::report::{FieldError, Refusal, Report};

/// The part of an `application/problem+json` answer the client reads.
#[derive(Debug, Default, Deserialize)]
struct Problem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

/// What one answer means for the batch that was posted.
enum Answer {
    Accepted,
    /// 400 `invalid_events`: the events named are refused, the others may go again.
    Invalid(Problem),
    /// The batch is too large for the server: halves may pass.
    TooLarge(StatusCode, Problem),
    /// Worth trying again later, not before `after` when the server said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The whole batch is refused; `auth` when the token is.
    Refused {
        status: StatusCode,
        problem: Problem,
        auth: bool,
    },
}

pub(crate) async fn deliver(shared: &Shared, batch: Vec<Pending>) {
    let mut work = vec![batch];
    while let Some(events) = work.pop() {
        let (report, halves) = deliver_part(shared, events).await;
        shared.record(report);
        work.extend(halves);
    }
}

/// Delivers `events` until each is accepted or refused, or returns the two halves to try
/// when the server finds them too many at once.
async fn deliver_part(shared: &Shared, mut events: Vec<Pending>) -> (Report, Vec<Vec<Pending>>) {
    let options = &shared.options;
    let mut report = Report::default();
    let started = Instant::now();
    let mut retries = 0u32;
    while !events.is_empty() {
        let answer = post(shared, &events).await;
        match answer {
            Answer::Accepted => {
                report.accepted += events.len() as u64;
                events.clear();
            }
            Answer::Invalid(problem) => {
                let refused = refuse_named(&mut events, &problem, &mut report);
                if !refused {
                    refuse_all(
                        &mut events,
                        Some(StatusCode::BAD_REQUEST),
                        &problem,
                        &mut report,
                    );
                }
            }
            Answer::TooLarge(status, problem) => {
                if events.len() > 1 {
                    let second = events.split_off(events.len() / 2);
                    return (report, vec![second, events]);
                }
                refuse_all(&mut events, Some(status), &problem, &mut report);
            }
            Answer::Refused {
                status,
                problem,
                auth,
            } => {
                if auth {
                    shared.unauthorized(format!("{} {}", status.as_u16(), problem.detail));
                }
                refuse_all(&mut events, Some(status), &problem, &mut report);
            }
            Answer::Retry { after, reason } => {
                tracing::debug!(%reason, events = events.len(), retries, "retrying a batch");
                shared.failed(reason.clone());
                if options
                    .give_up_after
                    .is_some_and(|limit| started.elapsed() >= limit)
                {
                    let problem = Problem {
                        code: "undelivered".into(),
                        detail: format!(
                            "given up after {:.0?} of retries (last: {reason}); the events may have been stored",
                            started.elapsed()
                        ),
                        errors: Vec::new(),
                    };
                    refuse_all(&mut events, None, &problem, &mut report);
                    break;
                }
                retries += 1;
                tokio::time::sleep(delay(shared, retries, after)).await;
            }
        }
    }
    (report, Vec::new())
}

/// The server's `Retry-After` when it gave one, else exponential backoff with jitter.
fn delay(shared: &Shared, retries: u32, after: Option<Duration>) -> Duration {
    let options = &shared.options;
    let ceiling = options
        .min_backoff
        .saturating_mul(2u32.saturating_pow(retries.saturating_sub(1)))
        .min(options.max_backoff);
    // Between half and all of the ceiling, so clients that failed together retry apart.
    let backoff = ceiling.mul_f64(rand::random_range(0.5..=1.0));
    match after {
        // The server's wait, spread by up to a tenth of it.
        Some(after) => after.mul_f64(rand::random_range(1.0..=1.1)),
        None => backoff,
    }
}

async fn post(shared: &Shared, events: &[Pending]) -> Answer {
    let (body, gzip) = encode(events, shared.options.gzip_above);
    let mut request = shared
        .http
        .post(&shared.endpoint)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, shared.authorization.clone());
    if gzip {
        request = request.header(CONTENT_ENCODING, "gzip");
    }
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) => {
            return Answer::Retry {
                after: None,
                reason: error_chain(&e),
            };
        }
    };
    let status = response.status();
    if status == StatusCode::ACCEPTED || status.is_success() {
        return Answer::Accepted;
    }
    let after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let problem: Problem = match response.bytes().await {
        Ok(body) => serde_json::from_slice(&body).unwrap_or_else(|_| Problem {
            detail: String::from_utf8_lossy(&body).chars().take(200).collect(),
            ..Problem::default()
        }),
        Err(e) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => Problem {
            detail: error_chain(&e),
            ..Problem::default()
        },
        Err(e) => {
            return Answer::Retry {
                after,
                reason: format!("{status}, then {}", error_chain(&e)),
            };
        }
    };
    classify(status, after, problem)
}

fn classify(status: StatusCode, after: Option<Duration>, problem: Problem) -> Answer {
    match status {
        StatusCode::BAD_REQUEST if problem.code == "invalid_events" => Answer::Invalid(problem),
        StatusCode::PAYLOAD_TOO_LARGE => Answer::TooLarge(status, problem),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Answer::Refused {
            status,
            problem,
            auth: true,
        },
        // 429 rate_limited, 503 broker down, 504 broker_unconfirmed ("maybe stored": the same
        // ids make the retry safe), and any other server error.
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => Answer::Retry {
            after,
            reason: format!("{status} {}", problem.code),
        },
        s if s.is_server_error() => Answer::Retry {
            after,
            reason: format!("{status} {}", problem.code),
        },
        _ => Answer::Refused {
            status,
            problem,
            auth: false,
        },
    }
}

/// The events as one JSON array, gzipped when larger than `gzip_above`.
fn encode(events: &[Pending], gzip_above: Option<usize>) -> (Vec<u8>, bool) {
    let size = events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 1;
    let mut json = Vec::with_capacity(size);
    json.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(event.json.as_bytes());
    }
    json.push(b']');
    if gzip_above.is_none_or(|limit| json.len() <= limit) {
        return (json, false);
    }
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::fast());
    match encoder.write_all(&json).and_then(|()| encoder.finish()) {
        Ok(compressed) => (compressed, true),
        // Writing to memory does not fail; sending uncompressed is right if it did.
        Err(_) => (json, false),
    }
}

/// Refuses the events a 400 names (`[3].name`), with their field errors. False when it names
/// none of them.
fn refuse_named(events: &mut Vec<Pending>, problem: &Problem, report: &mut Report) -> bool {
    let mut named: BTreeMap<usize, Vec<FieldError>> = BTreeMap::new();
    for error in &problem.errors {
        if let Some((index, field)) = split_index(&error.field)
            && index < events.len()
        {
            named.entry(index).or_default().push(FieldError {
                field: field.to_owned(),
                code: error.code.clone(),
                message: error.message.clone(),
            });
        }
    }
    if named.is_empty() {
        return false;
    }
    let mut index = 0;
    events.retain(|event| {
        let keep = match named.remove(&index) {
            Some(errors) => {
                report.refused.push(Refusal {
                    seq: event.seq,
                    id: event.id,
                    status: Some(400),
                    code: problem.code.clone(),
                    message: errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                    errors,
                });
                false
            }
            None => true,
        };
        index += 1;
        keep
    });
    true
}

/// `[3].data.path` → (3, `data.path`); `[3]` → (3, ``).
fn split_index(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix('[')?;
    let (index, rest) = rest.split_once(']')?;
    Some((index.parse().ok()?, rest.strip_prefix('.').unwrap_or(rest)))
}

fn refuse_all(
    events: &mut Vec<Pending>,
    status: Option<StatusCode>,
    problem: &Problem,
    report: &mut Report,
) {
    let code = if problem.code.is_empty() {
        status.map_or("undelivered", |s| s.canonical_reason().unwrap_or("error"))
    } else {
        &problem.code
    };
    for event in events.drain(..) {
        report.refused.push(Refusal {
            seq: event.seq,
            id: event.id,
            status: status.map(|s| s.as_u16()),
            code: code.to_owned(),
            message: problem.detail.clone(),
            errors: Vec::new(),
        });
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn field_names_give_the_event_index_and_the_field() {
        assert_eq!(split_index("[3].name"), Some((3, "name")));
        assert_eq!(split_index("[12].data.path"), Some((12, "data.path")));
        assert_eq!(split_index("[0]"), Some((0, "")));
        assert_eq!(split_index("name"), None);
        assert_eq!(split_index("[x].name"), None);
    }

    #[test]
    fn large_bodies_are_gzipped_and_small_ones_not() {
        let events: Vec<Pending> = (0..100)
            .map(|i| Pending {
                seq: i,
                id: uuid::Uuid::now_v7(),
                json: format!(r#"{{"name":"event {i}"}}"#),
            })
            .collect();
        let (plain, gzip) = encode(&events, None);
        assert!(!gzip);
        let text: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(text.as_array().unwrap().len(), 100);
        let (compressed, gzip) = encode(&events, Some(100));
        assert!(gzip);
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut inflated,
        )
        .unwrap();
        assert_eq!(inflated, plain);
    }

    #[test]
    fn rate_limits_and_unconfirmed_publishes_are_retried_and_bad_requests_not() {
        let problem = |code: &str| Problem {
            code: code.into(),
            ..Problem::default()
        };
        let retried = |status| matches!(classify(status, None, problem("x")), Answer::Retry { .. });
        assert!(retried(StatusCode::TOO_MANY_REQUESTS));
        assert!(retried(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retried(StatusCode::GATEWAY_TIMEOUT));
        assert!(retried(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!retried(StatusCode::BAD_REQUEST));
        assert!(!retried(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, None, problem("invalid_token")),
            Answer::Refused { auth: true, .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, problem("invalid_events")),
            Answer::Invalid(_)
        ));
    }
}
