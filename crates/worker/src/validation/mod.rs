//! Which events are valid. A registry maps `(category, name)` to a validator built by that
//! type's factory; rules every event must meet live in [`common`].

mod common;
mod typed;
pub mod types;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use eye_core::settings::{Settings, UnknownEventPolicy};
use eye_core::{Event, FieldError};
use serde_json::Value;

pub use typed::Typed;

/// Checks the `data` of one event type.
pub trait EventValidator: Send + Sync {
    /// Every problem found; empty when the payload is valid.
    fn validate(&self, data: &Value) -> Vec<FieldError>;
}

/// Builds the validator for one event type from the settings.
pub type Factory = fn(&Settings) -> Box<dyn EventValidator>;

/// One event type: where it is registered and how its validator is made.
pub struct Registration {
    pub category: &'static str,
    pub name: &'static str,
    pub factory: Factory,
}

pub struct Registry {
    validators: HashMap<(String, String), Box<dyn EventValidator>>,
    limits: common::Limits,
    unknown: UnknownEventPolicy,
}

impl Registry {
    /// A registry holding every built-in event type.
    pub fn builtin(settings: &Settings) -> Self {
        let mut registry = Self {
            validators: HashMap::new(),
            limits: common::Limits::from(settings),
            unknown: settings.unknown_events,
        };
        for registration in types::ALL {
            registry.register(registration, settings);
        }
        registry
    }

    pub fn register(&mut self, registration: &Registration, settings: &Settings) {
        let key = (
            registration.category.to_owned(),
            registration.name.to_owned(),
        );
        self.validators
            .insert(key, (registration.factory)(settings));
    }

    /// Every reason to reject the event; empty when it should be stored.
    pub fn check(
        &self,
        event: &Event,
        data: &Value,
        received_at: DateTime<Utc>,
    ) -> Vec<FieldError> {
        let mut reasons = common::check(event, data, received_at, &self.limits);
        if !data.is_object() {
            return reasons;
        }
        match self
            .validators
            .get(&(event.category.clone(), event.name.clone()))
        {
            Some(validator) => reasons.extend(validator.validate(data)),
            None if self.unknown == UnknownEventPolicy::Reject => reasons.push(FieldError::new(
                "name",
                "unknown_event_type",
                format!(
                    "no validator is registered for ({:?}, {:?}) and unknown types are rejected",
                    event.category, event.name
                ),
            )),
            None => {}
        }
        reasons
    }
}
