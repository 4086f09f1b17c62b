//! `eye report`: asks the admin's read api for a report job, waits for it, and saves its CSV.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// How often a waiting `eye report` asks again.
const POLL: Duration = Duration::from_secs(1);

/// Where the admin is and who asks.
#[derive(Debug, Clone)]
pub struct ReportClient {
    /// The admin's base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// A token with `events:read`.
    pub token: String,
}

/// What a report covers: the api's request fields.
#[derive(Debug, Clone, Default)]
pub struct NewReport {
    pub kind: String,
    pub window: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub application: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
}

impl NewReport {
    fn body(&self) -> Value {
        let mut body = json!({"kind": self.kind});
        for (key, value) in [
            ("window", &self.window),
            ("from", &self.from),
            ("to", &self.to),
            ("application", &self.application),
            ("category", &self.category),
            ("name", &self.name),
        ] {
            if let Some(value) = value {
                body[key] = json!(value);
            }
        }
        body
    }
}

impl ReportClient {
    fn client() -> anyhow::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("failed to set up the http client")
    }

    /// Sends `method path` with the token (and `body` as JSON).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut request = Self::client()?
            .request(method, url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .with_context(|| format!("could not reach the admin at {}", self.url))
    }

    /// Starts a report; returns what the api answered (its id and status).
    pub async fn create(&self, report: &NewReport) -> anyhow::Result<Value> {
        let path = "/api/v1/reports";
        let response = self
            .send(reqwest::Method::POST, path, Some(report.body()))
            .await?;
        answer(response).await
    }

    /// Report `id` as it stands.
    pub async fn status(&self, id: &str) -> anyhow::Result<Value> {
        let path = format!("/api/v1/reports/{id}");
        answer(self.send(reqwest::Method::GET, &path, None).await?).await
    }

    /// Asks until report `id` is no longer running; a failed report is an error with its reason.
    pub async fn wait(&self, id: &str) -> anyhow::Result<Value> {
        loop {
            let report = self.status(id).await?;
            match report["status"].as_str() {
                Some("running") => tokio::time::sleep(POLL).await,
                Some("failed") => bail!(
                    "report {id} failed: {}",
                    report["reason"].as_str().unwrap_or("no reason given")
                ),
                _ => return Ok(report),
            }
        }
    }

    /// Writes the CSV of report `id` to `out` (standard output without one), as it arrives;
    /// returns the bytes written.
    pub async fn download(&self, id: &str, out: Option<&PathBuf>) -> anyhow::Result<u64> {
        let path = format!("/api/v1/reports/{id}/csv");
        let mut response = self.send(reqwest::Method::GET, &path, None).await?;
        if !response.status().is_success() {
            answer(response).await?;
            bail!("the admin did not send the CSV");
        }
        let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin> = match out {
            Some(path) => Box::new(
                tokio::fs::File::create(path)
                    .await
                    .with_context(|| format!("could not create {}", path.display()))?,
            ),
            None => Box::new(tokio::io::stdout()),
        };
        let mut written = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the download was cut short")?
        {
            sink.write_all(&chunk)
                .await
                .context("could not write the CSV")?;
            written += chunk.len() as u64;
        }
        sink.flush().await.context("could not write the CSV")?;
        Ok(written)
    }
}

/// The JSON of a successful answer, or an error with the problem's detail.
async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("the admin answered {status} without JSON"))?;
    if status.is_success() {
        return Ok(body);
    }
    bail!(
        "the admin answered {status} ({}): {}",
        body["code"].as_str().unwrap_or("?"),
        body["detail"].as_str().unwrap_or("no detail")
    )
}
