//! What every HTTP service of The Eye shares: the request id of each request and the
//! `application/problem+json` body of each error.
//!
//! - [`request_id`]: the middleware that gives a request its id, the tracing span and
//!   task-local holding it while the request is handled, and the `X-Request-Id` answer header.
//! - [`problem`]: one problem body for the api, token checks and the admin's read api.
//! - [`openapi`]: what their OpenAPI descriptions share: problems, the bearer token, request ids.
//! - [`proxies`]: the client's address, believing forwarding headers of trusted proxies only.

pub mod openapi;
pub mod problem;
pub mod proxies;
pub mod request_id;

pub use eye_core::RequestId;
pub use problem::Problem;
pub use request_id::{current_request_id, request_id};
