//! Which events are valid. A registry maps `(category, name)` to a validator built by that
//! type's factory, and to the checks of a JSON Schema file for it ([`schema`], loaded from
//! `schema_dir`); rules every event must meet live in [`common`].

mod common;
pub mod schema;
pub mod tree;
mod typed;
pub mod types;

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use eye_core::settings::{Settings, UnknownEventPolicy};
use eye_core::{Event, FieldError};
use serde_json::Value;

pub use typed::Typed;

/// Most reasons kept for one rejected event, as in the api's 400s; one more counts the rest.
pub const MAX_REASONS: usize = 50;

/// The reasons kept, at most [`MAX_REASONS`], and one that counts the rest: those past the
/// cap and `left_out`, found but never formatted.
fn cap(mut reasons: Vec<FieldError>, left_out: usize) -> Vec<FieldError> {
    let more = reasons.len().saturating_sub(MAX_REASONS) + left_out;
    reasons.truncate(MAX_REASONS);
    if more > 0 {
        reasons.push(more_reasons(more));
    }
    reasons
}

/// The reason that counts those left out.
fn more_reasons(more: usize) -> FieldError {
    FieldError::new(
        "",
        "more_reasons",
        format!("{more} more reasons were left out"),
    )
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

/// The checks of one event type: a built-in validator, a schema file's, or both (the file's
/// checks are added to the built-in ones).
#[derive(Default)]
struct Entry {
    builtin: Option<Box<dyn EventValidator>>,
    schema: Option<(PathBuf, schema::SchemaValidator)>,
}

impl Entry {
    /// The built-in checks' reasons and at most as many of the schema's as fit in
    /// [`MAX_REASONS`] with `found` before them; how many of the schema's were left out.
    fn check(&self, data: &Value, found: usize) -> (Vec<FieldError>, usize) {
        let mut reasons = self
            .builtin
            .as_ref()
            .map(|v| v.validate(data))
            .unwrap_or_default();
        let mut left_out = 0;
        if let Some((_, schema)) = &self.schema {
            let room = MAX_REASONS.saturating_sub(found + reasons.len());
            let (more, past) = schema.validate_at_most(data, room);
            reasons.extend(more);
            left_out = past;
        }
        (reasons, left_out)
    }
}

/// One event type in force, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub category: String,
    pub name: String,
    pub builtin: bool,
    /// The schema file that adds its checks, if any.
    pub schema_file: Option<PathBuf>,
}

pub struct Registry {
    /// category → name → checks; nested so that lookups borrow the event's strings.
    validators: HashMap<String, HashMap<String, Entry>>,
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

    /// The built-in types and those of the files in `schema_dir`, if it is set. A broken
    /// file fails the whole load, naming each file at fault.
    pub fn load(settings: &Settings) -> Result<Self, schema::SchemaErrors> {
        let mut registry = Self::builtin(settings);
        if let Some(dir) = &settings.schema_dir {
            for loaded in schema::load_dir(dir, schema::max_label_chars(settings))? {
                registry.add_schema(loaded);
            }
        }
        Ok(registry)
    }

    pub fn register(&mut self, registration: &Registration, settings: &Settings) {
        self.entry(registration.category, registration.name).builtin =
            Some((registration.factory)(settings));
    }

    /// Adds a schema file's checks to its type, built-in or not.
    pub fn add_schema(&mut self, loaded: schema::SchemaType) {
        self.entry(&loaded.category, &loaded.name).schema = Some((loaded.file, loaded.validator));
    }

    fn entry(&mut self, category: &str, name: &str) -> &mut Entry {
        self.validators
            .entry(category.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_default()
    }

    /// Every type in force, by category and name.
    pub fn types(&self) -> Vec<TypeInfo> {
        let mut types: Vec<TypeInfo> = self
            .validators
            .iter()
            .flat_map(|(category, names)| {
                names.iter().map(|(name, entry)| TypeInfo {
                    category: category.clone(),
                    name: name.clone(),
                    builtin: entry.builtin.is_some(),
                    schema_file: entry.schema.as_ref().map(|(file, _)| file.clone()),
                })
            })
            .collect();
        types.sort_by(|a, b| (&a.category, &a.name).cmp(&(&b.category, &b.name)));
        types
    }

    /// Every reason to reject the event, at most [`MAX_REASONS`] and one that counts the
    /// rest; empty when it should be stored.
    pub fn check(&self, event: &Event, received_at: DateTime<Utc>) -> Vec<FieldError> {
        let (data, mut reasons) = tree::of(event.data.get());
        let (more, left_out) = self.check_tree(event, &data, received_at, reasons.len());
        reasons.extend(more);
        cap(reasons, left_out)
    }

    /// The reasons for `data`, `found` already found before; and how many were left out.
    fn check_tree(
        &self,
        event: &Event,
        data: &Value,
        received_at: DateTime<Utc>,
        found: usize,
    ) -> (Vec<FieldError>, usize) {
        let mut reasons = common::check(event, data, received_at, &self.limits);
        if !data.is_object() {
            return (reasons, 0);
        }
        let validator = self
            .validators
            .get(&event.category)
            .and_then(|names| names.get(&event.name));
        let mut left_out = 0;
        match validator {
            Some(validator) => {
                let (more, past) = validator.check(data, found + reasons.len());
                reasons.extend(more);
                left_out = past;
            }
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
        (reasons, left_out)
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
            source: None,
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

    fn schema_dir(schemas: &[Value]) -> (tempfile::TempDir, Settings) {
        let dir = tempfile::tempdir().unwrap();
        for (i, schema) in schemas.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{i}.json")), schema.to_string()).unwrap();
        }
        let settings = Settings {
            schema_dir: Some(dir.path().to_owned()),
            ..Settings::default()
        };
        (dir, settings)
    }

    fn check_with(registry: &Registry, category: &str, name: &str, data: Value) -> Vec<String> {
        let received_at = Utc::now();
        let event = Event {
            id: uuid::Uuid::new_v4(),
            session_id: uuid::Uuid::new_v4(),
            category: category.into(),
            name: name.into(),
            data: serde_json::value::to_raw_value(&data).unwrap(),
            timestamp: received_at,
            source: None,
        };
        registry
            .check(&event, received_at)
            .into_iter()
            .map(|r| format!("{} {}", r.field, r.code))
            .collect()
    }

    #[test]
    fn a_schema_for_a_built_in_type_adds_its_checks_to_the_built_in_ones() {
        let (_dir, s) = schema_dir(&[json!({
            "x-eye-category": "page interaction", "x-eye-name": "pageview",
            "properties": {"path": {"type": "string", "pattern": "^/"}},
            "required": ["referrer"]
        })]);
        let registry = Registry::load(&s).unwrap();
        let mut found = check_with(
            &registry,
            "page interaction",
            "pageview",
            json!({"path": "x"}),
        );
        // The built-in reasons come first; the schema's in its own order.
        found[1..].sort();
        assert_eq!(
            found,
            [
                "data.host required",
                "data.path schema.pattern",
                "data.referrer schema.required"
            ]
        );
        let info = registry
            .types()
            .into_iter()
            .find(|t| t.name == "pageview")
            .unwrap();
        assert!(info.builtin);
        assert_eq!(info.schema_file, Some(s.schema_dir.unwrap().join("0.json")));
    }

    #[test]
    fn a_schema_only_type_is_known_even_when_unknown_types_are_rejected() {
        let (_dir, mut s) = schema_dir(&[json!({
            "x-eye-category": "video", "x-eye-name": "play",
            "properties": {"seconds": {"type": "integer", "minimum": 0}}
        })]);
        s.unknown_events = UnknownEventPolicy::Reject;
        let registry = Registry::load(&s).unwrap();
        assert!(check_with(&registry, "video", "play", json!({"seconds": 3})).is_empty());
        assert_eq!(
            check_with(&registry, "video", "play", json!({"seconds": -1})),
            ["data.seconds schema.minimum"]
        );
        assert_eq!(registry.types().len(), types::ALL.len() + 1);
    }

    #[test]
    fn schema_reasons_are_capped_like_the_others() {
        let (_dir, s) = schema_dir(&[json!({
            "x-eye-category": "c", "x-eye-name": "n",
            "properties": {"xs": {"items": {"type": "string"}}}
        })]);
        let registry = Registry::load(&s).unwrap();
        let found = check_with(&registry, "c", "n", json!({"xs": vec![1; 80]}));
        assert_eq!(found.len(), MAX_REASONS + 1);
        assert_eq!(found[0], "data.xs[0] schema.type");
        assert_eq!(found[MAX_REASONS], " more_reasons");
        // Those left out are counted with the others.
        let received_at = Utc::now();
        let event = Event {
            id: uuid::Uuid::new_v4(),
            session_id: uuid::Uuid::new_v4(),
            category: "c".into(),
            name: "n".into(),
            data: serde_json::value::to_raw_value(&json!({"xs": vec![1; 1000]})).unwrap(),
            timestamp: received_at,
            source: None,
        };
        let found = registry.check(&event, received_at);
        assert_eq!(found.len(), MAX_REASONS + 1);
        assert_eq!(found[MAX_REASONS].message, "950 more reasons were left out");
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
