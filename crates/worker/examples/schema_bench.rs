//! What a schema-checked event costs the worker against a built-in type: the time of
//! `Registry::check` per event for `page interaction/pageview` (built-in, `validator` crate)
//! and for the same rules as a JSON Schema file, beside a type with no checks of its own
//! (the common checks every event pays). Run in release:
//!
//! `cargo run --release -p eye-worker --example schema_bench -- [events] [rounds]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use eye_core::{Event, Settings};
use eye_worker::validation::Registry;
use serde_json::{Value, json};

/// The rules of the built-in pageview, as a schema.
const PAGEVIEW: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "x-eye-category": "bench",
  "x-eye-name": "pageview",
  "type": "object",
  "required": ["host", "path"],
  "properties": {
    "host": {"type": "string", "minLength": 1, "maxLength": 253},
    "path": {"type": "string", "minLength": 1, "maxLength": 2048}
  }
}"#;

fn events(category: &str, name: &str, data: &Value, n: usize) -> Vec<Event> {
    let at = chrono::Utc::now() - chrono::Duration::seconds(1);
    (0..n)
        .map(|i| {
            let mut data = data.clone();
            if let Some(path) = data.get_mut("path") {
                *path = json!(format!("/products/{i}?ref=newsletter"));
            }
            Event {
                id: uuid::Uuid::new_v4(),
                session_id: uuid::Uuid::new_v4(),
                category: category.into(),
                name: name.into(),
                data: serde_json::value::to_raw_value(&data).unwrap(),
                timestamp: at,
                source: None,
            }
        })
        .collect()
}

/// Nanoseconds per event of one pass over `events`.
fn pass(registry: &Registry, events: &[Event], expect_valid: bool) -> f64 {
    let received_at = chrono::Utc::now();
    let start = Instant::now();
    for event in events {
        let reasons = black_box(registry.check(black_box(event), received_at));
        assert_eq!(reasons.is_empty(), expect_valid, "{reasons:?}");
    }
    start.elapsed().as_nanos() as f64 / events.len() as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(200_000, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(7, |a| a.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("eye-schema-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pageview.json"), PAGEVIEW).unwrap();
    let settings = Settings {
        schema_dir: Some(dir.clone()),
        ..Settings::default()
    };
    let registry = Registry::load(&settings).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let valid = json!({"host": "www.example.com", "path": "/"});
    let invalid = json!({"host": "", "path": "/"});
    let cases = [
        (
            "no checks of its own (common only)",
            "bench",
            "none",
            &valid,
            true,
        ),
        (
            "built-in pageview",
            "page interaction",
            "pageview",
            &valid,
            true,
        ),
        ("schema pageview", "bench", "pageview", &valid, true),
        (
            "built-in pageview, empty host",
            "page interaction",
            "pageview",
            &invalid,
            false,
        ),
        (
            "schema pageview, empty host",
            "bench",
            "pageview",
            &invalid,
            false,
        ),
    ];
    let sets: Vec<Vec<Event>> = cases
        .iter()
        .map(|(_, c, name, data, _)| events(c, name, data, n))
        .collect();
    let mut times = vec![Vec::new(); cases.len()];
    // Interleaved rounds, so that a slower moment of a shared machine hits every case.
    for _ in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            times[i].push(pass(&registry, &sets[i], case.4));
        }
    }
    let ns: Vec<f64> = times.into_iter().map(median).collect();
    println!("{n} events a case, median of {rounds} interleaved rounds, ns per event:");
    for (case, ns) in cases.iter().zip(&ns) {
        println!("  {:<40} {ns:>8.0}", case.0);
    }
    println!(
        "valid events:   schema / built-in = {:.2} (whole check), {:.2} (type checks alone, common subtracted)",
        ns[2] / ns[1],
        (ns[2] - ns[0]) / (ns[1] - ns[0])
    );
    println!(
        "refused events: schema / built-in = {:.2} (whole check)",
        ns[4] / ns[3]
    );
}
