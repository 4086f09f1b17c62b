//! `eye tail`: stored events as they arrive, from the admin's Server-Sent Events stream, one a
//! line. The format is small enough to read by hand: `event:` and `data:` lines, a blank line
//! ends an event, lines starting with `:` are comments (keep-alives).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// What to watch and how to print it.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// The admin's base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// A token with `events:read`.
    pub token: String,
    /// One JSON object a line instead of text.
    pub json: bool,
    pub application: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub session_id: Option<String>,
}

/// Characters of `data` a text line shows.
const SHORT_DATA: usize = 80;

impl Tail {
    /// The stream's URL with the filters given.
    pub fn stream_url(&self) -> anyhow::Result<reqwest::Url> {
        let base = self.url.trim_end_matches('/');
        let mut url = reqwest::Url::parse(&format!("{base}/api/v1/events/stream"))
            .with_context(|| format!("`{}` is not a URL", self.url))?;
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in [
                ("application", &self.application),
                ("category", &self.category),
                ("name", &self.name),
                ("session_id", &self.session_id),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, value);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// Prints events until `stop` resolves (then returns Ok) or the stream ends (an error
    /// saying why).
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let url = self.stream_url()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("failed to set up the http client")?;
        let mut response = client
            .get(url.clone())
            .bearer_auth(&self.token)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("failed to reach the admin at {}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|p| p.get("detail").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(body);
            bail!("the admin refused the stream ({status}): {detail}");
        }
        eprintln!("watching {url} (Ctrl-C to stop)");
        tokio::pin!(stop);
        let mut pending = String::new();
        loop {
            let chunk = tokio::select! {
                () = &mut stop => return Ok(()),
                chunk = response.chunk() => chunk.context("lost the stream")?,
            };
            let Some(chunk) = chunk else {
                bail!("the admin ended the stream");
            };
            pending.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                self.handle(&block)?;
            }
        }
    }

    /// One event of the stream.
    fn handle(&self, block: &str) -> anyhow::Result<()> {
        let mut kind = "message";
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                kind = value.trim();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        match kind {
            "event" | "rejected" if self.json => println!("{data}"),
            "event" | "rejected" => println!("{}", line(&data)),
            "dropped" | "closed" => {
                let reason = serde_json::from_str::<Value>(&data)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or(data);
                bail!("the admin stopped the stream ({kind}): {reason}");
            }
            _ => {}
        }
        Ok(())
    }
}

/// `time  application  category/name  session  data`, rejected events marked with reasons.
pub fn line(data: &str) -> String {
    let Ok(event) = serde_json::from_str::<Value>(data) else {
        return data.to_owned();
    };
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or("-");
    let application = event
        .get("application")
        .and_then(Value::as_str)
        .unwrap_or_else(|| text("application_id"));
    let shown = text("data");
    let mut short: String = shown.chars().take(SHORT_DATA).collect();
    if short.len() < shown.len() {
        short.push('…');
    }
    let mut line = format!(
        "{}  {application}  {}/{}  {}  {short}",
        text("received_at"),
        text("category"),
        text("name"),
        text("session_id"),
    );
    if event.get("rejected").and_then(Value::as_bool) == Some(true) {
        let reasons: Vec<&str> = event
            .get("reasons")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        line.push_str(&format!("  REJECTED: {}", reasons.join(",")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_go_into_the_query_string_and_none_leaves_it_out() {
        let tail = Tail {
            url: "http://127.0.0.1:8081/".into(),
            category: Some("ui".into()),
            name: Some("click me".into()),
            ..Default::default()
        };
        assert_eq!(
            tail.stream_url().unwrap().as_str(),
            "http://127.0.0.1:8081/api/v1/events/stream?category=ui&name=click+me"
        );
        let bare = Tail {
            url: "http://a:1".into(),
            ..Default::default()
        };
        assert_eq!(
            bare.stream_url().unwrap().as_str(),
            "http://a:1/api/v1/events/stream"
        );
    }

    #[test]
    fn a_rejected_event_prints_marked_with_its_reasons() {
        let data = r#"{"application":"shop","category":"ui","name":"click","session_id":null,
            "received_at":"2026-01-01T00:00:00Z","data":"{}","rejected":true,
            "reasons":["timestamp_in_future"]}"#;
        let printed = line(data);
        assert!(printed.contains("shop  ui/click"), "{printed}");
        assert!(
            printed.ends_with("REJECTED: timestamp_in_future"),
            "{printed}"
        );
    }
}
