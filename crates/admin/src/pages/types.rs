//! Event types: the built-in ones and those of the schema files in `schema_dir`, as this
//! admin reads that directory (it is a process of its own: on another machine it reads its
//! own copy, and workers put a change in force only once reloaded).
//!
//! The directory is compiled again only when it changed: a view first takes a cheap
//! fingerprint (the names, sizes and modification times of its entries) and reuses the last
//! outcome while it is the same. When a load fails, the page keeps showing the last set this
//! admin loaded whole, as workers keep theirs, beside the files at fault.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use eye_core::Settings;
use eye_worker::validation::{Registry, schema};

use crate::State;
use crate::auth::{self, Viewer};
use crate::error::PageError;
use crate::views::html;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRow {
    pub category: String,
    pub name: String,
    pub builtin: bool,
    /// The schema file's name, when one adds its checks.
    pub file: Option<String>,
}

/// Which set the rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The directory as it is now (or no directory: the built-in types).
    Current,
    /// The directory cannot be used now: the last set this admin loaded whole from it.
    LastLoaded,
    /// The directory cannot be used and this admin never loaded it whole: the built-in types.
    BuiltinOnly,
}

/// One reading of the directory.
#[derive(Debug)]
pub struct View {
    pub rows: Arc<Vec<TypeRow>>,
    /// Each file that cannot be used, with why.
    pub errors: Vec<String>,
    pub shown: Shown,
}

/// The last reading of `schema_dir`, reused while the directory's fingerprint is unchanged,
/// and the last set loaded whole.
#[derive(Default)]
pub struct Cache {
    last: Mutex<Last>,
}

#[derive(Default)]
struct Last {
    /// The fingerprint of the directory when `view` was read; `None` when it had none.
    fingerprint: Option<u64>,
    view: Option<Arc<View>>,
    /// The rows of the last load that succeeded.
    loaded: Option<Arc<Vec<TypeRow>>>,
}

impl Cache {
    /// The types of `dir`, compiled again only if it changed since the last view. Blocking
    /// file work.
    pub fn view(&self, dir: &Path, max_label_chars: usize) -> Arc<View> {
        let fingerprint = fingerprint(dir);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(view) = &last.view
            && fingerprint.is_some()
            && last.fingerprint == fingerprint
        {
            return view.clone();
        }
        let view = match schema::load_dir(dir, max_label_chars) {
            Ok(types) => {
                let mut registry = builtin();
                types.into_iter().for_each(|t| registry.add_schema(t));
                let rows = Arc::new(rows(&registry));
                last.loaded = Some(rows.clone());
                View {
                    rows,
                    errors: Vec::new(),
                    shown: Shown::Current,
                }
            }
            Err(errors) => {
                let errors = errors.0.iter().map(ToString::to_string).collect();
                match &last.loaded {
                    Some(rows) => View {
                        rows: rows.clone(),
                        errors,
                        shown: Shown::LastLoaded,
                    },
                    None => View {
                        rows: Arc::new(rows(&builtin())),
                        errors,
                        shown: Shown::BuiltinOnly,
                    },
                }
            }
        };
        let view = Arc::new(view);
        last.fingerprint = fingerprint;
        last.view = Some(view.clone());
        view
    }
}

/// The names, sizes and modification times of the entries of `dir` (symbolic links
/// followed, so a swapped link counts as a change), hashed; `None` when it cannot be read.
fn fingerprint(dir: &Path) -> Option<u64> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let metadata = std::fs::metadata(entry.path())
            .ok()
            .map(|m| (m.len(), m.modified().ok(), m.is_dir()));
        entries.push((entry.file_name(), metadata));
    }
    entries.sort();
    let mut hasher = DefaultHasher::new();
    entries.hash(&mut hasher);
    Some(hasher.finish())
}

fn builtin() -> Registry {
    Registry::builtin(&Settings::default())
}

fn rows(registry: &Registry) -> Vec<TypeRow> {
    registry
        .types()
        .into_iter()
        .map(|t| TypeRow {
            category: t.category,
            name: t.name,
            builtin: t.builtin,
            file: t.schema_file.map(|f| {
                f.file_name().map_or_else(
                    || f.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            }),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "types.html")]
struct TypesPage {
    viewer: Option<Viewer>,
    rows: Arc<Vec<TypeRow>>,
    /// `schema_dir`, when set.
    dir: Option<String>,
    /// Each file that cannot be used, with why.
    errors: Vec<String>,
    shown: Shown,
}

#[tracing::instrument(skip_all)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let view = match state.schema_dir.clone() {
        None => Arc::new(View {
            rows: Arc::new(rows(&builtin())),
            errors: Vec::new(),
            shown: Shown::Current,
        }),
        Some(dir) => {
            let data = state.clone();
            // Reading and compiling files is blocking work.
            web::block(move || data.schema_types.view(&dir, data.schema_label_chars))
                .await
                // Only a panic of the loader gets here.
                .map_err(|e| PageError::Render(askama::Error::Custom(Box::new(e))))?
        }
    };
    html(&TypesPage {
        viewer: Some(viewer),
        rows: view.rows.clone(),
        dir: state.schema_dir.as_ref().map(|d| d.display().to_string()),
        errors: view.errors.clone(),
        shown: view.shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir() -> TempDir {
        let dir = std::env::temp_dir().join(format!("eye-types-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    #[test]
    fn the_directory_is_compiled_again_only_when_it_changed_and_a_broken_one_keeps_the_last_set() {
        let dir = temp_dir();
        let cache = Cache::default();
        let builtin = rows(&builtin()).len();
        let first = cache.view(&dir.0, 128);
        assert_eq!((first.rows.len(), first.shown), (builtin, Shown::Current));
        assert!(Arc::ptr_eq(&first, &cache.view(&dir.0, 128)), "not reused");

        std::fs::write(
            dir.0.join("play.json"),
            r#"{"x-eye-category": "video", "x-eye-name": "play"}"#,
        )
        .unwrap();
        let loaded = cache.view(&dir.0, 128);
        assert_eq!(loaded.rows.len(), builtin + 1);
        assert!(Arc::ptr_eq(&loaded, &cache.view(&dir.0, 128)), "not reused");

        std::fs::write(dir.0.join("broken.json"), "{").unwrap();
        let broken = cache.view(&dir.0, 128);
        assert_eq!(broken.shown, Shown::LastLoaded);
        assert_eq!(broken.rows, loaded.rows);
        assert_eq!(broken.errors.len(), 1);
        assert!(
            broken.errors[0].contains("broken.json"),
            "{:?}",
            broken.errors
        );

        std::fs::remove_file(dir.0.join("broken.json")).unwrap();
        let fixed = cache.view(&dir.0, 128);
        assert_eq!((fixed.shown, fixed.errors.len()), (Shown::Current, 0));

        // Never loaded whole: only the built-in types.
        let cache = Cache::default();
        std::fs::write(dir.0.join("broken.json"), "{").unwrap();
        let broken = cache.view(&dir.0, 128);
        assert_eq!(
            (broken.shown, broken.rows.len()),
            (Shown::BuiltinOnly, builtin)
        );
    }
}
