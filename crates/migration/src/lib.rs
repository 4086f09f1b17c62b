//! Schema migrations for PostgreSQL and SQLite. Run with `eye migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_create_applications_and_tokens;
mod m20261121_000002_create_events_and_sessions;
mod m20261121_000003_create_rejected_events;
mod m20261121_000004_create_admin_users;
mod m20261121_000005_index_events_received_at;
mod m20261123_000006_application_keys;
mod m20261123_000007_create_dead_letters;
mod m20261123_000008_rate_limits;
mod m20261123_000009_event_source;
mod m20261123_000010_publishable_keys;
mod m20261123_000011_schema_reloads;
mod m20261123_000012_monthly_partitions;
mod m20261124_000013_event_counts;
mod m20261124_000014_reports;
mod m20261124_000015_trend_marks;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_applications_and_tokens::Migration),
            Box::new(m20261121_000002_create_events_and_sessions::Migration),
            Box::new(m20261121_000003_create_rejected_events::Migration),
            Box::new(m20261121_000004_create_admin_users::Migration),
            Box::new(m20261121_000005_index_events_received_at::Migration),
            Box::new(m20261123_000006_application_keys::Migration),
            Box::new(m20261123_000007_create_dead_letters::Migration),
            Box::new(m20261123_000008_rate_limits::Migration),
            Box::new(m20261123_000009_event_source::Migration),
            Box::new(m20261123_000010_publishable_keys::Migration),
            Box::new(m20261123_000011_schema_reloads::Migration),
            Box::new(m20261123_000012_monthly_partitions::Migration),
            Box::new(m20261124_000013_event_counts::Migration),
            Box::new(m20261124_000014_reports::Migration),
            Box::new(m20261124_000015_trend_marks::Migration),
        ]
    }
}
