//! `eye send`: events from a file of JSON Lines (or one JSON array) through `eye-client`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use eye_client::{Client, Event, Refusal, SendError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// What to send, and how.
pub struct SendOptions {
    /// The file; `None` reads standard input.
    pub file: Option<PathBuf>,
    /// Stop at the first line that is not an event.
    pub strict: bool,
    /// Show a progress bar on standard error (only drawn on a terminal).
    pub progress: bool,
}

/// What became of the input, by line (or, for a JSON array, by position in it, from 1).
#[derive(Debug, Default)]
pub struct Summary {
    /// `line`, or `event` for a JSON array.
    pub unit: &'static str,
    /// Events handed to the client.
    pub sent: u64,
    pub accepted: u64,
    /// Lines that are not events, never sent: (line, reason).
    pub bad: Vec<(u64, String)>,
    /// Events the server refused: (line, reason).
    pub refused: Vec<(u64, String)>,
    /// `--strict` stopped reading at this line.
    pub stopped_at: Option<u64>,
}

impl Summary {
    /// True when every event of the input was accepted.
    pub fn all_accepted(&self) -> bool {
        self.bad.is_empty() && self.refused.is_empty() && self.accepted == self.sent
    }

    /// One line per problem in input order, then the totals.
    pub fn render(&self) -> String {
        let mut problems: Vec<&(u64, String)> = self.bad.iter().chain(&self.refused).collect();
        problems.sort_by_key(|(line, _)| *line);
        let mut text = String::new();
        for (line, reason) in problems {
            text.push_str(&format!("{} {line}: {reason}\n", self.unit));
        }
        text.push_str(&format!(
            "sent {} events: {} accepted, {} refused; {} {}s not sent",
            self.sent,
            self.accepted,
            self.refused.len(),
            self.bad.len(),
            self.unit,
        ));
        if let Some(line) = self.stopped_at {
            text.push_str(&format!(
                "; stopped at {} {line} (--strict): the rest was not read",
                self.unit
            ));
        }
        text.push('\n');
        text
    }
}

/// Reads the input, sends every event through a client built from `client`, and waits until
/// each is answered.
pub async fn run(options: SendOptions, client: eye_client::Builder) -> anyhow::Result<Summary> {
    let (reader, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = match &options.file {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("failed to open {}", path.display()))?;
            let size = file.metadata().await.ok().map(|m| m.len());
            (Box::new(file), size)
        }
        None => (Box::new(tokio::io::stdin()), None),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let progress = Progress::new(options.progress, size);
    let client = client.build().context("failed to start the client")?;
    let mut sending = Sending {
        client,
        lines: Vec::new(),
        summary: Summary::default(),
        progress,
    };

    let first = reader
        .fill_buf()
        .await
        .context("failed to read the input")?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied();
    let read = if first == Some(b'[') {
        sending.summary.unit = "event";
        sending.array(&mut reader, options.strict).await
    } else {
        sending.summary.unit = "line";
        sending.lines(&mut reader, options.strict).await
    };
    let Sending {
        client,
        lines,
        mut summary,
        progress,
    } = sending;
    // Whatever stopped the reading, what was sent is delivered and counted.
    let report = client.close().await.context("the client stopped")?;
    progress.finish();
    summary.accepted = report.accepted;
    summary.refused = report
        .refused
        .iter()
        .map(|r| (lines.get(r.seq as usize).copied().unwrap_or(0), reason(r)))
        .collect();
    read?;
    Ok(summary)
}

struct Sending {
    client: Client,
    /// The line of each event sent, by its `seq`.
    lines: Vec<u64>,
    summary: Summary,
    progress: Progress,
}

impl Sending {
    async fn lines<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut BufReader<R>,
        strict: bool,
    ) -> anyhow::Result<()> {
        let mut buffer = Vec::new();
        let mut line = 0u64;
        let mut read = 0u64;
        loop {
            buffer.clear();
            let n = reader
                .read_until(b'\n', &mut buffer)
                .await
                .context("failed to read the input")?;
            if n == 0 {
                return Ok(());
            }
            line += 1;
            read += n as u64;
            let text = match std::str::from_utf8(&buffer) {
                Ok(text) => text.trim(),
                Err(_) => {
                    if self.bad(line, "not UTF-8 text".into(), strict) {
                        return Ok(());
                    }
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            if !self.send(line, text, strict).await? {
                return Ok(());
            }
            self.progress.update(read, self.summary.sent);
        }
    }

    async fn array<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut BufReader<R>,
        strict: bool,
    ) -> anyhow::Result<()> {
        let mut input = String::new();
        reader
            .read_to_string(&mut input)
            .await
            .context("failed to read the input")?;
        let events: Vec<&RawValue> = serde_json::from_str(&input)
            .context("the input starts with `[` but is not one JSON array")?;
        let total = input.len() as u64;
        for (i, event) in events.iter().enumerate() {
            if !self.send(i as u64 + 1, event.get(), strict).await? {
                break;
            }
            self.progress.update(
                total * (i as u64 + 1) / events.len() as u64,
                self.summary.sent,
            );
        }
        Ok(())
    }

    /// Sends one event; false when reading should stop.
    async fn send(&mut self, line: u64, text: &str, strict: bool) -> anyhow::Result<bool> {
        let event = match Event::from_json(text) {
            Ok(event) => event,
            Err(e) => return Ok(!self.bad(line, e.to_string(), strict)),
        };
        match self.client.send(event).await {
            Ok(receipt) => {
                debug_assert_eq!(receipt.seq as usize, self.lines.len());
                self.lines.push(line);
                self.summary.sent += 1;
                Ok(true)
            }
            Err(e @ SendError::Unauthorized(_)) => Err(e).context("the api refuses the token"),
            Err(e) => Err(e).context("the client stopped taking events"),
        }
    }

    /// Records a bad line; true when reading should stop.
    fn bad(&mut self, line: u64, reason: String, strict: bool) -> bool {
        self.summary.bad.push((line, reason));
        if strict {
            self.summary.stopped_at = Some(line);
        }
        strict
    }
}

fn reason(refusal: &Refusal) -> String {
    let status = refusal.status.map(|s| format!("{s} ")).unwrap_or_default();
    format!("refused ({status}{}): {}", refusal.code, refusal.message)
}

/// A progress bar on standard error, or nothing when it is not a terminal.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(wanted: bool, size: Option<u64>) -> Self {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let bar = match size {
                Some(size) => {
                    ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
                        .with_style(
                            ProgressStyle::with_template(
                                "{wide_bar} {bytes}/{total_bytes} {msg} ETA {eta}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        )
                }
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                    .with_style(
                        ProgressStyle::with_template("{spinner} {bytes} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    ),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            started: now,
            last: now,
        }
    }

    fn update(&mut self, bytes: u64, events: u64) {
        let Some(bar) = &self.bar else { return };
        let now = Instant::now();
        if now.duration_since(self.last) < Duration::from_millis(100) {
            return;
        }
        self.last = now;
        bar.set_position(bytes);
        let rate = events as f64 / now.duration_since(self.started).as_secs_f64().max(0.001);
        bar.set_message(format!("{events} events, {rate:.0} events/s"));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
