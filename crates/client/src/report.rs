//! What became of the events sent.

use serde::Deserialize;
use uuid::Uuid;

/// The outcome of the events answered since the previous report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events the server accepted (answered 202): they are stored once.
    pub accepted: u64,
    /// Events that will not be stored, each with the reason.
    pub refused: Vec<Refusal>,
}

impl Report {
    pub(crate) fn merge(&mut self, other: Report) {
        self.accepted += other.accepted;
        self.refused.extend(other.refused);
    }
}

/// One event the server refused, or the client gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The event's place among all events this client sent, from 0 (as returned by
    /// [`Client::send`](crate::Client::send)).
    pub seq: u64,
    pub id: Uuid,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The problem's `code` (`invalid_events`, `event_too_large`, `invalid_token`, …), or
    /// `undelivered` when the client gave up retrying (the event may be stored).
    pub code: String,
    /// What the server (or the client) said, for people.
    pub message: String,
    /// For `invalid_events`: what is wrong with each field of this event.
    pub errors: Vec<FieldError>,
}

/// What is wrong with one field of one event, as the api's 400 names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    /// The field, without the event's index (`name`, `data`, `timestamp`).
    pub field: String,
    pub code: String,
    pub message: String,
}
