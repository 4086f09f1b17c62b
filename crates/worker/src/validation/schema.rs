//! Event types from JSON Schema (draft 2020-12) files: one type a file, named inside it by
//! `x-eye-category` and `x-eye-name`, compiled once when the directory is loaded.
//!
//! A refused payload's reasons follow the built-in types: `field` is the place in `data`
//! (`data.items[0].price`; for `required`, the missing property itself), `code` is the keyword
//! prefixed with `schema.` (`schema.minimum`), `message` is the validator's, without the
//! failing value (a reason never copies the payload), cut at [`MESSAGE_CHARS`] characters and
//! ended by the same place as a JSON Pointer into `data` (`… (at /items/0/price)`; none for
//! `data` itself).

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use eye_core::{FieldError, Settings};
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde_json::Value;

use super::common::{PATH_CHARS, child};
use super::{EventValidator, MAX_REASONS};

/// The only draft accepted, as `$schema` names it.
pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Largest schema file read, so a wrong directory cannot fill the memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Most schema files a directory may hold, so a wrong directory cannot stall a start.
pub const MAX_FILES: usize = 1000;

/// Most skipped entries named by a listing; the rest are counted.
const MAX_SKIPPED: usize = 100;

/// Longest category or name the columns hold; `max_name_chars` may lower it.
const MAX_LABEL_CHARS: usize = 128;

/// Longest message of a reason, in characters; longer ones are cut.
pub const MESSAGE_CHARS: usize = 200;

/// Longest category or name a schema file may declare under `settings`: what an event may
/// carry (`max_name_chars`), within what the columns hold.
pub fn max_label_chars(settings: &Settings) -> usize {
    settings.max_name_chars.min(MAX_LABEL_CHARS)
}

/// One compiled event type.
pub struct SchemaType {
    pub category: String,
    pub name: String,
    pub file: PathBuf,
    pub validator: SchemaValidator,
}

/// A file that could not become an event type, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// Every problem of a directory, one a file (or the directory itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct SchemaErrors(pub Vec<SchemaError>);

fn lines(errors: &[SchemaError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

/// An entry of the directory that is not read as a schema, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub why: &'static str,
}

/// What a directory holds: the schema files, and the entries passed over.
#[derive(Debug, Default)]
pub struct Listing {
    /// The `*.json` files, in name order.
    pub files: Vec<PathBuf>,
    /// The entries passed over, in name order; at most [`MAX_SKIPPED`].
    pub skipped: Vec<Skipped>,
    /// How many more entries were passed over.
    pub more_skipped: usize,
}

/// The `*.json` files of `dir`, in name order, and what else it holds: subdirectories, other
/// files, hidden files (such as editors' backups) and names that are not UTF-8 are passed
/// over. More than [`MAX_FILES`] schema files is an error.
pub fn files(dir: &Path) -> Result<Listing, SchemaError> {
    let unreadable = |e: std::io::Error| SchemaError {
        file: dir.to_owned(),
        message: format!("cannot read the schema directory: {e}"),
    };
    let mut listing = Listing::default();
    let mut skipped = Vec::new();
    let mut count = 0usize;
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let why = match path.file_name().map(|n| n.to_str()) {
            None | Some(None) => Some("its name is not UTF-8"),
            Some(Some(name)) if name.starts_with('.') => Some("hidden"),
            Some(Some(_)) if path.is_dir() => Some("a directory: subdirectories are not read"),
            Some(Some(_)) if path.extension().is_none_or(|e| e != "json") => {
                Some("not a .json file")
            }
            Some(Some(_)) if !path.is_file() => Some("not a regular file"),
            Some(Some(_)) => None,
        };
        match why {
            Some(why) => skipped.push(Skipped { path, why }),
            None => {
                count += 1;
                if count <= MAX_FILES {
                    listing.files.push(path);
                }
            }
        }
    }
    if count > MAX_FILES {
        return Err(SchemaError {
            file: dir.to_owned(),
            message: format!(
                "holds {count} schema files; at most {MAX_FILES} are read (is it the right directory?)"
            ),
        });
    }
    listing.files.sort();
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    listing.more_skipped = skipped.len().saturating_sub(MAX_SKIPPED);
    skipped.truncate(MAX_SKIPPED);
    listing.skipped = skipped;
    Ok(listing)
}

/// A directory compiled: its types, and what it passed over.
pub struct Loaded {
    pub types: Vec<SchemaType>,
    pub skipped: Vec<Skipped>,
    pub more_skipped: usize,
}

/// Compiles every file of `dir`, refusing a category or name longer than `max_label_chars`
/// ([`max_label_chars`]). Any broken file, or two files for one type, fails the whole
/// directory: a set in force is never half of what was deployed.
pub fn load_dir(dir: &Path, max_label_chars: usize) -> Result<Vec<SchemaType>, SchemaErrors> {
    load(dir, max_label_chars).map(|loaded| loaded.types)
}

/// [`load_dir`], with what the directory holds besides its schema files.
pub fn load(dir: &Path, max_label_chars: usize) -> Result<Loaded, SchemaErrors> {
    let listing = files(dir).map_err(|e| SchemaErrors(vec![e]))?;
    let mut types: Vec<SchemaType> = Vec::with_capacity(listing.files.len());
    let mut errors = Vec::new();
    for file in listing.files {
        match load_file(&file, max_label_chars) {
            Ok(loaded) => {
                let twin = types
                    .iter()
                    .find(|t| t.category == loaded.category && t.name == loaded.name);
                match twin {
                    Some(twin) => errors.push(SchemaError {
                        message: format!(
                            "declares ({:?}, {:?}), which {} declares too; one type a file",
                            loaded.category,
                            loaded.name,
                            twin.file.display()
                        ),
                        file,
                    }),
                    None => types.push(loaded),
                }
            }
            Err(message) => errors.push(SchemaError { file, message }),
        }
    }
    if errors.is_empty() {
        Ok(Loaded {
            types,
            skipped: listing.skipped,
            more_skipped: listing.more_skipped,
        })
    } else {
        Err(SchemaErrors(errors))
    }
}

/// One file, compiled; the error says what to change in it.
pub fn load_file(file: &Path, max_label_chars: usize) -> Result<SchemaType, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "is larger than {MAX_FILE_BYTES} bytes, the most a schema may have"
        ));
    }
    let schema: Value = serde_json::from_slice(&bytes).map_err(|e| format!("is not JSON: {e}"))?;
    let (category, name) = labels(&schema, max_label_chars)?;
    let validator = compile(&schema)?;
    Ok(SchemaType {
        category,
        name,
        file: file.to_owned(),
        validator,
    })
}

fn labels(schema: &Value, max_chars: usize) -> Result<(String, String), String> {
    let Some(object) = schema.as_object() else {
        return Err("must be a JSON object (a schema with x-eye-category and x-eye-name)".into());
    };
    match object.get("$schema").and_then(Value::as_str) {
        Some(DRAFT) | None => {}
        Some(other) => {
            return Err(format!(
                "$schema is {:?}; only draft 2020-12 ({DRAFT:?}) is supported",
                cut(other, MESSAGE_CHARS)
            ));
        }
    }
    let label = |key: &str| match object.get(key) {
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(format!("{key} must be a non-empty string"))
        }
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(format!(
            "{key} is {} characters long; events may have a category and a name of at most \
             {max_chars} (max_name_chars), so none could be of this type",
            s.chars().count()
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{key} must be a string")),
        None => Err(format!(
            "{key} is missing: name the event type with x-eye-category and x-eye-name"
        )),
    };
    Ok((label("x-eye-category")?, label("x-eye-name")?))
}

/// Draft 2020-12 whatever the file says, `format` asserted (an event with a wrong `email` is
/// refused, not annotated), the schema itself checked against the meta-schema, `pattern`s
/// compiled by a linear-time engine (one it cannot run, with lookaround or backreferences, is
/// refused here rather than stall a batch). No `$ref` is fetched: the crate is built without
/// resolvers, so one outside the file fails here.
fn compile(schema: &Value) -> Result<SchemaValidator, String> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
        .map(SchemaValidator)
        .map_err(|e| invalid_schema(&e))
}

/// Why a schema does not compile, and where in the file (a JSON Pointer).
fn invalid_schema(error: &ValidationError<'_>) -> String {
    let place = error.instance_path().as_str();
    let what = match error.kind() {
        ValidationErrorKind::Format { format } if format == "regex" => format!(
            "{} is not a regular expression that can be checked in linear time \
             (lookaround such as (?=…) or (?<!…), and backreferences such as \\1, are not \
             supported)",
            cut(&error.instance().to_string(), MESSAGE_CHARS)
        ),
        _ => cut(&error.to_string(), MESSAGE_CHARS),
    };
    if place.is_empty() {
        format!("is not a valid schema: {what}")
    } else {
        format!("is not a valid schema: {what} (at {place})")
    }
}

/// `text` cut at `max` characters, an ellipsis marking the cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => {
            let mut cut: String = text.chars().take(max - 1).collect();
            cut.push('…');
            cut
        }
    }
}

/// The checks of one schema file.
pub struct SchemaValidator(Validator);

impl SchemaValidator {
    /// At most `room` reasons, and how many more there are; the errors past `room` are
    /// counted, never formatted.
    pub fn validate_at_most(&self, data: &Value, room: usize) -> (Vec<FieldError>, usize) {
        // The usual case, valid, costs no error values.
        if self.0.is_valid(data) {
            return (Vec::new(), 0);
        }
        let mut reasons = Vec::new();
        let mut more = 0;
        for error in self.0.iter_errors(data) {
            if reasons.len() < room {
                reasons.push(reason(&error));
            } else {
                more += 1;
            }
        }
        (reasons, more)
    }
}

fn reason(error: &ValidationError<'_>) -> FieldError {
    let mut field = String::from("data");
    let mut pointer = error.instance_path().as_str().to_owned();
    for segment in error.instance_path().segments() {
        field = match segment {
            LocationSegment::Property(key) => child(&field, format_args!(".{key}")),
            LocationSegment::Index(i) => child(&field, format_args!("[{i}]")),
        };
    }
    if let ValidationErrorKind::Required { property } = error.kind() {
        let key = property
            .as_str()
            .map_or_else(|| property.to_string(), str::to_owned);
        field = child(&field, format_args!(".{key}"));
        pointer = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
    }
    let code = format!("schema.{}", error.kind().keyword());
    let mut message = cut(&error.masked_with("the value").to_string(), MESSAGE_CHARS);
    if !pointer.is_empty() {
        message = format!("{message} (at {})", cut(&pointer, PATH_CHARS));
    }
    FieldError::new(field, &code, message)
}

impl EventValidator for SchemaValidator {
    fn validate(&self, data: &Value) -> Vec<FieldError> {
        let (mut reasons, more) = self.validate_at_most(data, MAX_REASONS);
        if more > 0 {
            reasons.push(super::more_reasons(more));
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir_with(files: &[(&str, Value)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, schema) in files {
            std::fs::write(dir.path().join(name), schema.to_string()).unwrap();
        }
        dir
    }

    fn load_types(dir: &Path) -> Result<Vec<SchemaType>, SchemaErrors> {
        load_dir(dir, MAX_LABEL_CHARS)
    }

    fn order_schema() -> Value {
        json!({
            "$schema": DRAFT,
            "x-eye-category": "checkout",
            "x-eye-name": "order",
            "type": "object",
            "required": ["total", "items"],
            "properties": {
                "total": {"type": "number", "minimum": 0},
                "items": {"type": "array", "items": {
                    "type": "object",
                    "required": ["sku"],
                    "properties": {"price": {"type": "number", "minimum": 0}}
                }}
            }
        })
    }

    fn one_type(schema: Value) -> SchemaValidator {
        let dir = dir_with(&[("t.json", schema)]);
        load_types(dir.path()).unwrap().remove(0).validator
    }

    fn reasons(validator: &SchemaValidator, data: Value) -> Vec<(String, String)> {
        validator
            .validate(&data)
            .into_iter()
            .map(|r| (r.field, r.code))
            .collect()
    }

    /// The message of the one file of `schema` that cannot be used.
    fn refusal(schema: Value) -> String {
        let dir = dir_with(&[("t.json", schema)]);
        let errors = load_types(dir.path()).err().unwrap().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].message.clone()
    }

    #[test]
    fn a_directory_compiles_each_json_file_into_its_named_type() {
        let dir = dir_with(&[("order.json", order_schema())]);
        std::fs::write(dir.path().join("README.md"), "not a schema").unwrap();
        std::fs::write(dir.path().join(".order.json.swp"), "{").unwrap();
        let types = load_types(dir.path()).unwrap();
        assert_eq!(types.len(), 1);
        assert_eq!(
            (&*types[0].category, &*types[0].name),
            ("checkout", "order")
        );
        assert_eq!(types[0].file, dir.path().join("order.json"));
    }

    #[test]
    fn what_a_directory_passes_over_is_listed_with_why() {
        let dir = dir_with(&[("order.json", order_schema())]);
        std::fs::write(dir.path().join("README.md"), "not a schema").unwrap();
        std::fs::write(dir.path().join(".order.json.swp"), "{").unwrap();
        std::fs::create_dir(dir.path().join("old.json")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt as _;
            let name = std::ffi::OsStr::from_bytes(b"caf\xe9.json");
            std::fs::write(dir.path().join(name), "{").unwrap();
        }
        let loaded = load(dir.path(), MAX_LABEL_CHARS).unwrap();
        assert_eq!(loaded.types.len(), 1);
        let skipped: Vec<(String, &str)> = loaded
            .skipped
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, s.why)
            })
            .collect();
        assert!(skipped.contains(&("README.md".into(), "not a .json file")));
        assert!(skipped.contains(&(".order.json.swp".into(), "hidden")));
        assert!(skipped.contains(&(
            "old.json".into(),
            "a directory: subdirectories are not read"
        )));
        #[cfg(unix)]
        assert!(skipped.contains(&("caf\u{fffd}.json".into(), "its name is not UTF-8")));
        assert_eq!(loaded.more_skipped, 0);
    }

    #[test]
    fn reasons_name_the_place_in_data_and_the_keyword() {
        let v = one_type(order_schema());
        assert!(reasons(&v, json!({"total": 3, "items": [{"sku": "a", "price": 1}]})).is_empty());
        let found = reasons(
            &v,
            json!({"total": -1, "items": [{"sku": "a"}, {"price": -2}]}),
        );
        let expected = [
            ("data.items[1].price", "schema.minimum"),
            ("data.items[1].sku", "schema.required"),
            ("data.total", "schema.minimum"),
        ];
        let mut sorted = found.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            expected.map(|(f, c)| (f.to_owned(), c.to_owned())),
            "{found:?}"
        );
        let message = &v.validate(&json!({"items": []}))[0].message;
        assert!(message.contains("total"), "{message}");
    }

    #[test]
    fn messages_end_with_the_json_pointer_and_never_copy_the_value() {
        let v = one_type(order_schema());
        let mut found: Vec<(String, String)> = v
            .validate(&json!({"total": -1, "items": [{"sku": "a"}, {"price": -2}], "x": 1}))
            .into_iter()
            .map(|r| (r.field, r.message))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                (
                    "data.items[1].price".to_owned(),
                    "the value is less than the minimum of 0 (at /items/1/price)".to_owned()
                ),
                (
                    "data.items[1].sku".to_owned(),
                    "\"sku\" is a required property (at /items/1/sku)".to_owned()
                ),
                (
                    "data.total".to_owned(),
                    "the value is less than the minimum of 0 (at /total)".to_owned()
                ),
            ]
        );
        // A key that holds the separators is escaped in the pointer.
        let v = one_type(json!({"x-eye-category": "c", "x-eye-name": "n",
            "properties": {"a/b~c": {"type": "string"}}}));
        let message = &v.validate(&json!({"a/b~c": 1}))[0].message;
        assert!(message.ends_with("(at /a~1b~0c)"), "{message}");
    }

    #[test]
    fn a_root_failure_against_a_large_payload_gives_a_short_message() {
        let v = one_type(json!({"x-eye-category": "c", "x-eye-name": "n",
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
            "not": {"required": ["secret"]},
            "enum": [{"a": 1}]}));
        let big = "SECRET".repeat(100_000);
        let found = v.validate(&json!({"secret": big, "c": [big, big]}));
        assert!(!found.is_empty());
        for reason in &found {
            assert!(
                reason.message.chars().count() <= MESSAGE_CHARS,
                "{}",
                reason.message.len()
            );
            assert!(!reason.message.contains("SECRET"), "{}", reason.message);
            assert_eq!(reason.field, "data");
        }
        assert!(found.iter().any(|r| r.code == "schema.oneOf"), "{found:?}");
    }

    #[test]
    fn past_the_cap_errors_are_counted_not_formatted() {
        let v = one_type(json!({"x-eye-category": "c", "x-eye-name": "n",
            "properties": {"xs": {"items": {"type": "string"}}}}));
        let found = v.validate(&json!({"xs": vec![1; 1000]}));
        assert_eq!(found.len(), MAX_REASONS + 1);
        assert_eq!(found[0].field, "data.xs[0]");
        assert_eq!(found[MAX_REASONS].code, "more_reasons");
        assert!(
            found[MAX_REASONS].message.starts_with("950 more"),
            "{}",
            found[MAX_REASONS].message
        );
        let (some, more) = v.validate_at_most(&json!({"xs": vec![1; 1000]}), 3);
        assert_eq!((some.len(), more), (3, 997));
    }

    #[test]
    fn a_pattern_with_lookaround_is_refused_at_load_and_a_plain_one_checks() {
        let with = |pattern: &str| {
            json!({"x-eye-category": "c", "x-eye-name": "n",
                "properties": {"code": {"type": "string", "pattern": pattern}}})
        };
        let message = refusal(with("^(?!admin)[a-z]+$"));
        assert!(message.starts_with("is not a valid schema"), "{message}");
        assert!(message.contains("linear time"), "{message}");
        assert!(message.contains("lookaround"), "{message}");
        assert!(
            message.ends_with("(at /properties/code/pattern)"),
            "{message}"
        );
        let message = refusal(with("(a)\\1"));
        assert!(message.contains("linear time"), "{message}");

        let v = one_type(with("^[a-z]+\\d*$"));
        assert!(v.validate(&json!({"code": "abc12"})).is_empty());
        assert_eq!(
            reasons(&v, json!({"code": "ABC"})),
            [("data.code".to_owned(), "schema.pattern".to_owned())]
        );
        // A pattern that backtracks exponentially elsewhere runs in linear time.
        let v = one_type(with("^(a+)+$"));
        let started = std::time::Instant::now();
        assert_eq!(
            v.validate(&json!({"code": format!("{}!", "a".repeat(5000))}))
                .len(),
            1
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn two_files_for_one_type_are_refused_naming_both() {
        let dir = dir_with(&[("a.json", order_schema()), ("b.json", order_schema())]);
        let errors = load_types(dir.path()).err().unwrap();
        assert_eq!(errors.0.len(), 1);
        let text = errors.to_string();
        assert!(text.contains("a.json") && text.contains("b.json"), "{text}");
        assert!(text.contains("\"checkout\", \"order\""), "{text}");
    }

    #[test]
    fn broken_files_are_each_named_with_what_to_change() {
        let mut wrong_draft = order_schema();
        wrong_draft["$schema"] = json!("http://json-schema.org/draft-07/schema#");
        let mut unnamed = order_schema();
        unnamed.as_object_mut().unwrap().remove("x-eye-name");
        let mut bad_keyword = order_schema();
        bad_keyword["properties"]["total"]["minimum"] = json!("zero");
        let mut remote = order_schema();
        remote["properties"]["total"] = json!({"$ref": "https://example.com/money.json"});
        let dir = dir_with(&[
            ("bad_keyword.json", bad_keyword),
            ("remote.json", remote),
            ("unnamed.json", unnamed),
            ("wrong_draft.json", wrong_draft),
            ("fine.json", order_schema()),
        ]);
        std::fs::write(dir.path().join("not_json.json"), "{\"type\": ").unwrap();
        let errors = load_types(dir.path()).err().unwrap().0;
        let by_file: Vec<(String, String)> = errors
            .iter()
            .map(|e| {
                let name = e.file.file_name().unwrap().to_string_lossy().into_owned();
                (name, e.message.clone())
            })
            .collect();
        let names: Vec<&str> = by_file.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "bad_keyword.json",
                "not_json.json",
                "remote.json",
                "unnamed.json",
                "wrong_draft.json"
            ]
        );
        let message = |file: &str| &by_file.iter().find(|(n, _)| n == file).unwrap().1;
        assert!(message("bad_keyword.json").starts_with("is not a valid schema"));
        assert!(
            message("bad_keyword.json").ends_with("(at /properties/total/minimum)"),
            "{}",
            message("bad_keyword.json")
        );
        assert!(message("not_json.json").starts_with("is not JSON"));
        assert!(message("remote.json").starts_with("is not a valid schema"));
        assert!(message("unnamed.json").contains("x-eye-name is missing"));
        assert!(message("wrong_draft.json").contains("2020-12"));
    }

    #[test]
    fn a_category_or_name_longer_than_events_may_carry_is_refused() {
        let mut long = order_schema();
        long["x-eye-name"] = json!("n".repeat(129));
        let message = refusal(long);
        assert!(
            message.contains("x-eye-name is 129 characters long") && message.contains("128"),
            "{message}"
        );
        let dir = dir_with(&[("order.json", order_schema())]);
        let errors = load_dir(dir.path(), 5).err().unwrap().to_string();
        assert!(
            errors.contains("x-eye-category is 8 characters long")
                && errors.contains("at most 5 (max_name_chars)"),
            "{errors}"
        );
        let settings = Settings {
            max_name_chars: 1000,
            ..Settings::default()
        };
        assert_eq!(max_label_chars(&settings), MAX_LABEL_CHARS);
    }

    #[test]
    fn a_large_file_or_too_many_files_are_refused_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let large = dir.path().join("large.json");
        let padding = " ".repeat(usize::try_from(MAX_FILE_BYTES).unwrap());
        std::fs::write(&large, format!("{{}}{padding}")).unwrap();
        let message = load_file(&large, MAX_LABEL_CHARS).err().unwrap();
        assert!(message.contains(&MAX_FILE_BYTES.to_string()), "{message}");

        let dir = tempfile::tempdir().unwrap();
        for i in 0..=MAX_FILES {
            std::fs::write(dir.path().join(format!("{i}.json")), "{}").unwrap();
        }
        let errors = load_types(dir.path()).err().unwrap().0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, dir.path());
        assert!(
            errors[0].message.contains(&format!(
                "holds {} schema files; at most {MAX_FILES}",
                MAX_FILES + 1
            )),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let errors = load_types(&missing).err().unwrap();
        assert_eq!(errors.0[0].file, missing);
        assert!(
            errors
                .to_string()
                .contains("cannot read the schema directory")
        );
    }

    #[test]
    fn formats_are_checked() {
        let v = one_type(json!({
            "x-eye-category": "c", "x-eye-name": "n",
            "properties": {"email": {"type": "string", "format": "email"}}
        }));
        assert_eq!(
            reasons(&v, json!({"email": "nobody"})),
            [("data.email".to_owned(), "schema.format".to_owned())]
        );
    }
}
