//! Sends a few events to a running api and prints the report.
//!
//! ```sh
//! eye dev &                                   # an api on 127.0.0.1:8080 and a dev token
//! EYE_TOKEN=<an events:write token> cargo run -p eye-client --example send
//! ```

use eye_client::{Client, Event};
use serde_json::json;
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("EYE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token = std::env::var("EYE_TOKEN")?;
    let client = Client::builder(&url, &token).build()?;

    let session = Uuid::new_v4();
    for path in ["/", "/pricing", "/signup"] {
        let event = Event::new(session, "page interaction", "pageview")
            .data(json!({"host": "www.example.com", "path": path}));
        let receipt = client.send(event).await?;
        println!("sent {} as event {}", receipt.id, receipt.seq);
    }
    // A field the api refuses: reported for this event alone, the others are stored.
    client
        .send(Event::from_json(
            r#"{"session_id":"e2085be5-9137-4e4e-80b5-f1ffddc25423","category":"page interaction","data":{},"timestamp":"2021-01-01 09:15:27"}"#,
        )?)
        .await?;

    let report = client.close().await?;
    println!("{} accepted", report.accepted);
    for refusal in &report.refused {
        println!(
            "event {} refused: {} {}",
            refusal.seq, refusal.code, refusal.message
        );
    }
    Ok(())
}
