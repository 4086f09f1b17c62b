//! Which events are valid. A registry maps `(category, name)` to a validator built by that
//! type's factory; rules every event must meet live in [`common`].

mod common;
pub mod tree;
mod typed;
pub mod types;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use eye_core::settings::{Settings, UnknownEventPolicy};
use eye_core::{Event, FieldError};
use serde_json::Value;

pub use typed::Typed;

/// Most reasons kept for one rejected event, as in the api's 400s; one more counts the rest.
pub const MAX_REASONS: usize = 50;

fn cap(mut reasons: Vec<FieldError>) -> Vec<FieldError> {
    if reasons.len() > MAX_REASONS {
        let more = reasons.len() - MAX_REASONS;
        reasons.truncate(MAX_REASONS);
        reasons.push(FieldError::new(
            "",
            "more_reasons",
            format!("{more} more reasons were left out"),
        ));
    }
    reasons
}

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
    /// category → name → validator; nested so that lookups borrow the event's strings.
    validators: HashMap<String, HashMap<String, Box<dyn EventValidator>>>,
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
        self.validators
            .entry(registration.category.to_owned())
            .or_default()
            .insert(
                registration.name.to_owned(),
                (registration.factory)(settings),
            );
    }

    /// Every reason to reject the event, at most [`MAX_REASONS`] and one that counts the
    /// rest; empty when it should be stored.
    pub fn check(&self, event: &Event, received_at: DateTime<Utc>) -> Vec<FieldError> {
        let (data, mut reasons) = tree::of(event.data.get());
        reasons.extend(self.check_tree(event, &data, received_at));
        cap(reasons)
    }

    fn check_tree(
        &self,
        event: &Event,
        data: &Value,
        received_at: DateTime<Utc>,
    ) -> Vec<FieldError> {
        let mut reasons = common::check(event, data, received_at, &self.limits);
        if !data.is_object() {
            return reasons;
        }
        let validator = self
            .validators
            .get(&event.category)
            .and_then(|names| names.get(&event.name));
        match validator {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use serde_json::json;

    fn check(
        category: &str,
        name: &str,
        data: Value,
        settings: &Settings,
    ) -> Vec<(String, String)> {
        let received_at = Utc::now();
        let event = Event {
            id: uuid::Uuid::new_v4(),
            session_id: uuid::Uuid::new_v4(),
            category: category.into(),
            name: name.into(),
            data: serde_json::value::to_raw_value(&data).unwrap(),
            timestamp: received_at - Duration::seconds(1),
        };
        Registry::builtin(settings)
            .check(&event, received_at)
            .into_iter()
            .map(|r| (r.field, r.code))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[test]
    fn built_in_types_accept_their_payloads_and_name_what_is_missing() {
        let s = Settings::default();
        let page = json!({"host": "h", "path": "/"});
        assert!(check("page interaction", "pageview", page.clone(), &s).is_empty());
        assert_eq!(
            check("page interaction", "cta click", page, &s),
            pairs(&[("data.element", "required")])
        );
        let form = json!({"host": "h", "path": "/", "form": {"email": "a@b.c"}});
        assert!(check("form interaction", "submit", form, &s).is_empty());
        let bad_form = json!({"host": "h", "path": "/", "form": "email=a@b.c"});
        assert_eq!(
            check("form interaction", "submit", bad_form, &s),
            pairs(&[("data.form", "invalid_type")])
        );
        let empty_host = json!({"host": "", "path": "/"});
        assert_eq!(
            check("page interaction", "pageview", empty_host, &s),
            pairs(&[("data.host", "length")])
        );
    }

    #[test]
    fn common_rules_apply_to_every_type() {
        let s = Settings::default();
        assert_eq!(
            check(" ", "pageview", json!({}), &s),
            pairs(&[("category", "empty")])
        );
        assert_eq!(
            check("c", &"n".repeat(129), json!({}), &s),
            pairs(&[("name", "too_long")])
        );
        assert_eq!(
            check("c", "n", json!({"a": ["ok", "nul\u{0}"]}), &s),
            pairs(&[("data.a[1]", "invalid_character")])
        );
        let long = "x".repeat(s.max_data_string_chars + 1);
        assert_eq!(
            check("c", "n", json!({"deep": {"s": long}}), &s),
            pairs(&[("data.deep.s", "too_long")])
        );
        assert_eq!(
            check("c", "n", json!(null), &s),
            pairs(&[("data", "not_object")])
        );
        let mut deep = json!("nul\u{0}");
        for _ in 0..100 {
            deep = json!({ "level": deep });
        }
        let found = check("c", "n", json!({ "d": deep }), &s);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].0.chars().count(),
            256,
            "paths are cut: {}",
            found[0].0
        );
        assert!(found[0].0.ends_with('…'));
    }

    #[test]
    fn unknown_types_are_accepted_or_rejected_by_policy() {
        let mut s = Settings::default();
        assert!(check("video", "play", json!({}), &s).is_empty());
        s.unknown_events = UnknownEventPolicy::Reject;
        assert_eq!(
            check("video", "play", json!({}), &s),
            pairs(&[("name", "unknown_event_type")])
        );
    }
}
