//! What can go wrong for the caller, as opposed to what goes wrong for one event
//! (reported in [`Report`](crate::Report)).

use std::time::Duration;

/// The client could not be started, or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the client needs a tokio runtime: build it inside one")]
    NoRuntime,
    #[error("`{0}` is not an http:// or https:// url")]
    InvalidUrl(String),
    #[error("the token cannot be sent in a header")]
    InvalidToken,
    #[error("the HTTP client could not be built")]
    Http(#[source] reqwest::Error),
    #[error("the client's background task stopped unexpectedly")]
    Stopped,
}

/// An event was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(
        "{capacity} events wait for the server at {url}, which has not accepted any for {silent:.1?}{}",
        last_error.as_ref().map(|e| format!(" (last: {e})")).unwrap_or_default()
    )]
    BufferFull {
        capacity: usize,
        url: String,
        silent: Duration,
        last_error: Option<String>,
    },
    #[error("the server refuses this client's token: {0}")]
    Unauthorized(String),
    #[error("the client is closed")]
    Closed,
}
