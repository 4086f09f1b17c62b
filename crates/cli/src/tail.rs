//! `eye tail`: stored events as they arrive, from the admin's Server-Sent Events stream, one a
//! line; with `--trends`, each minute's counts and top pages as they are published. The format is small enough to read by hand: `event:` and `data:` lines, a blank line
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
    /// The per-minute trends instead of the events (filtered by application only).
    pub trends: bool,
}

/// Characters of `data` a text line shows.
const SHORT_DATA: usize = 80;

impl Tail {
    /// The stream's URL with the filters given.
    pub fn stream_url(&self) -> anyhow::Result<reqwest::Url> {
        let base = self.url.trim_end_matches('/');
        let stream = if self.trends { "trends" } else { "events" };
        let mut url = reqwest::Url::parse(&format!("{base}/api/v1/{stream}/stream"))
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
            "trend" if self.json => println!("{data}"),
            "trend" => {
                for line in trend_lines(&data) {
                    println!("{line}");
                }
            }
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

/// A minute's trend as lines: `minute  application  category/name  count` for each type,
/// then `minute  application  page  host/path  count` for each top page, or one line saying
/// nothing was stored.
pub fn trend_lines(data: &str) -> Vec<String> {
    let Ok(trend) = serde_json::from_str::<Value>(data) else {
        return vec![data.to_owned()];
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let count = |v: &Value| v.get("count").and_then(Value::as_i64).unwrap_or(0);
    let list = |key: &str| {
        trend
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let minute = text(&trend, "minute");
    let application = |v: &Value| {
        v.get("application")
            .and_then(Value::as_str)
            .map_or_else(|| text(v, "application_id"), str::to_owned)
    };
    let mut lines: Vec<String> = list("counts")
        .iter()
        .map(|c| {
            format!(
                "{minute}  {}  {}/{}  {}",
                application(c),
                text(c, "category"),
                text(c, "name"),
                count(c)
            )
        })
        .collect();
    lines.extend(list("top_pages").iter().map(|p| {
        format!(
            "{minute}  {}  page  {}{}  {}",
            application(p),
            text(p, "host"),
            text(p, "path"),
            count(p)
        )
    }));
    if lines.is_empty() {
        lines.push(format!("{minute}  nothing stored"));
    }
    if trend.get("pages_counted").and_then(Value::as_bool) == Some(false) {
        lines.push(format!(
            "{minute}  (the top pages could not be counted in time)"
        ));
    }
    lines
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
    fn trends_read_their_own_stream_and_print_a_line_per_type_and_page() {
        let tail = Tail {
            url: "http://a:1".into(),
            application: Some("shop".into()),
            trends: true,
            ..Default::default()
        };
        assert_eq!(
            tail.stream_url().unwrap().as_str(),
            "http://a:1/api/v1/trends/stream?application=shop"
        );
        let data = r#"{"minute":"2026-01-01T10:05:00Z","pages_counted":true,
            "counts":[{"application":"shop","category":"ui","name":"click","count":3}],
            "top_pages":[{"application":"shop","host":"h.example","path":"/a","count":2}]}"#;
        assert_eq!(
            trend_lines(data),
            [
                "2026-01-01T10:05:00Z  shop  ui/click  3",
                "2026-01-01T10:05:00Z  shop  page  h.example/a  2"
            ]
        );
        let quiet =
            r#"{"minute":"2026-01-01T10:06:00Z","pages_counted":true,"counts":[],"top_pages":[]}"#;
        assert_eq!(trend_lines(quiet), ["2026-01-01T10:06:00Z  nothing stored"]);
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
