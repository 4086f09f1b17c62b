//! Api tokens at the door: the ingestion api and the admin's read api check bearer tokens
//! the same way, against the same cache of `api_tokens`. The database row is the authority
//! for what a token may do; the signed claims only have to agree with it.

mod error;
mod gate;

pub use error::AuthError;
pub use gate::{Grant, REFRESH_TASK, TokenGate, origin};
