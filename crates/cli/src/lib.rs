//! How the pieces are put together. The `eye` binary only parses arguments and calls into
//! here; tests start the very same stack.

pub mod broker;
pub mod dead;
pub mod dev;
pub mod metrics;
pub mod report;
pub mod rollups;
pub mod schemas;
pub mod send;
pub mod stack;
pub mod tail;
