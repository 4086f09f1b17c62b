//! SeaORM entities, one module per table, and the few operations on them that the CLI,
//! the api and the admin share (`tokens`, `rate_limits`, `dead`, `partitions`, `rollups`).

pub mod admin_sessions;
pub mod admin_users;
pub mod api_tokens;
pub mod applications;
pub mod dead;
pub mod dead_letters;
pub mod event_counts;
pub mod events;
pub mod partitions;
pub mod rate_limited;
pub mod rate_limits;
pub mod reads;
pub mod rejected_events;
pub mod report_chunks;
pub mod report_jobs;
pub mod reports;
pub mod rollups;
pub mod schema_reloads;
pub mod sessions;
pub mod tokens;
pub mod trends;
