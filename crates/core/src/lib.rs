//! The contract every part of The Eye shares: events and envelopes, settings, token claims,
//! queue topology and the publisher/consumer seam. No HTTP and no SQL live here.

pub mod csv;
pub mod event;
pub mod metrics;
pub mod origin;
pub mod queue;
pub mod rate_limit;
pub mod request_id;
pub mod settings;
pub mod supervise;
pub mod telemetry;
pub mod token;

pub use event::{Envelope, Event, EventTimestamp, FieldError, IncomingEvent};
pub use request_id::RequestId;
pub use settings::Settings;
