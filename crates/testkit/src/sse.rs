//! A test's reading end of one of the admin's Server-Sent Events streams.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::TestApp;

pub struct Sse {
    response: reqwest::Response,
    pending: String,
}

impl Sse {
    /// Opens the stream at `path` (with its query) and waits until it is watching.
    pub async fn open(app: &TestApp, token: &str, path: &str) -> Self {
        let response = app
            .client
            .get(format!("{}{path}", app.admin_address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut stream = Self {
            response,
            pending: String::new(),
        };
        let first = stream.block(Duration::from_secs(10)).await;
        assert_eq!(first.as_deref(), Some(": watching"));
        stream
    }

    /// The next block (event or comment), if one comes within `wait`.
    pub async fn block(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                return Some(block.trim_end().to_owned());
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event (not a comment) as its kind and JSON, if one comes within `wait`.
    pub async fn event(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.block(left).await?;
            if block.starts_with(':') {
                continue;
            }
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            return Some((kind, serde_json::from_str(&data).unwrap()));
        }
    }
}
