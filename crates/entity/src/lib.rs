//! SeaORM entities, one module per table.

pub mod api_tokens;
pub mod applications;
pub mod events;
pub mod rejected_events;
pub mod sessions;
