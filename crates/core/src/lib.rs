//! The contract every part of The Eye shares: events and envelopes, settings, token claims,
//! queue topology and the publisher/consumer seam. No HTTP and no SQL live here.

pub mod event;
pub mod queue;
pub mod settings;
pub mod supervise;
pub mod telemetry;
pub mod token;

pub use event::{Envelope, Event, EventTimestamp, FieldError, IncomingEvent};
pub use settings::Settings;
