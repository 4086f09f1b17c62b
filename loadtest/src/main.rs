//! Goose load tests for The Eye's ingestion api.
//!
//! ```sh
//! export EYE_TOKEN=$(cargo eye token create --app loadtest)
//! # One application sending this much is past the default rate limit (10000 events/s):
//! cargo eye app limit loadtest --rate 1000000000/s --burst 1000000000
//! cargo run -p loadtest --release -- --host http://127.0.0.1:8080 -u 64 -t 30s --report-file report.html
//! ```
//!
//! Scenarios (pick with `--scenarios`): `singleevent`, `batchof100`, `realisticmix`.
//! Every Goose flag works, e.g. `--threshold "p95<500ms"` fails a run that misses it.

mod events;

use std::sync::OnceLock;

use goose::prelude::*;

static TOKEN: OnceLock<String> = OnceLock::new();

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    let Ok(token) = std::env::var("EYE_TOKEN") else {
        eprintln!(
            "set EYE_TOKEN to an events:write token, e.g. EYE_TOKEN=$(cargo eye token create --app loadtest), \
             and raise its rate limit: cargo eye app limit loadtest --rate 1000000000/s --burst 1000000000"
        );
        std::process::exit(2);
    };
    let _ = TOKEN.set(token);
    GooseAttack::initialize()?
        .register_scenario(
            scenario!("SingleEvent").register_transaction(transaction!(single_event)),
        )
        .register_scenario(scenario!("BatchOf100").register_transaction(transaction!(batch_of_100)))
        .register_scenario(
            scenario!("RealisticMix")
                .register_transaction(transaction!(single_event).set_weight(16)?)
                .register_transaction(transaction!(batch_of_10).set_weight(2)?)
                .register_transaction(transaction!(invalid_payload).set_weight(1)?)
                .register_transaction(transaction!(duplicate).set_weight(1)?)
                .register_transaction(transaction!(malformed).set_weight(1)?),
        )
        .execute()
        .await?;
    Ok(())
}

/// Posts `body` and counts anything but `expect` as a failure.
async fn post(user: &mut GooseUser, name: &str, body: String, expect: u16) -> TransactionResult {
    let token = TOKEN.get().map(String::as_str).unwrap_or_default();
    let builder = user
        .get_request_builder(&GooseMethod::Post, "/v1/events")?
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body);
    let request = GooseRequest::builder()
        .path("/v1/events")
        .name(name)
        .set_request_builder(builder)
        .expect_status_code(expect)
        .build();
    user.request(request).await?;
    Ok(())
}

async fn single_event(user: &mut GooseUser) -> TransactionResult {
    post(user, "single event", events::valid(), 202).await
}

async fn batch_of_100(user: &mut GooseUser) -> TransactionResult {
    post(user, "batch of 100", events::batch(100), 202).await
}

async fn batch_of_10(user: &mut GooseUser) -> TransactionResult {
    post(user, "batch of 10", events::batch(10), 202).await
}

/// Accepted by the api (the shape is right), rejected by the worker.
async fn invalid_payload(user: &mut GooseUser) -> TransactionResult {
    post(user, "invalid payload", events::invalid_payload(), 202).await
}

/// The same id again: accepted, stored once.
async fn duplicate(user: &mut GooseUser) -> TransactionResult {
    post(user, "duplicate", events::duplicate(), 202).await
}

/// Refused by the api with 400.
async fn malformed(user: &mut GooseUser) -> TransactionResult {
    post(user, "malformed", events::malformed(), 400).await
}
