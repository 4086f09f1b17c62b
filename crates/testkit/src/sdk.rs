//! Third-party SDKs, installed once from their registries into a cache directory of the
//! machine's (never vendored), and run as the applications using them would run them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Installs serially: the tests of one binary run at once and share the directory.
static INSTALLING: Mutex<()> = Mutex::new(());

fn cache() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("eye-sdks")
}

/// Runs `command` to fill `dir` unless a previous run finished filling it; a half-filled
/// directory from an interrupted run is started over.
fn install(dir: &Path, what: &str, command: impl FnOnce(&Path) -> Command) -> PathBuf {
    let _guard = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let done = dir.join(".installed");
    if done.exists() {
        return dir.to_owned();
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let output = command(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the installer of {what}: {e}"));
    assert!(
        output.status.success(),
        "installing {what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&done, what).unwrap();
    dir.to_owned()
}

/// `segment-analytics-python` from PyPI: the directory to put on `PYTHONPATH`.
pub fn segment_python() -> PathBuf {
    const PACKAGE: &str = "segment-analytics-python==2.4.0";
    let dir = cache().join("python").join(PACKAGE.replace("==", "-"));
    install(&dir, PACKAGE, |dir| {
        let mut pip = Command::new("python3");
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(dir)
        .arg(PACKAGE);
        pip
    })
}

/// An npm package installed under `dir`: its `node_modules` directory.
fn npm(package: &str, dir: &str) -> PathBuf {
    let dir = cache().join("node").join(dir);
    install(&dir, package, |dir| {
        let mut npm = Command::new("npm");
        npm.args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(dir)
            .arg(package);
        npm
    })
    .join("node_modules")
}

/// `@segment/analytics-node` from npm: the `node_modules` directory to put on `NODE_PATH`.
pub fn segment_node() -> PathBuf {
    npm("@segment/analytics-node@3.1.0", "analytics-node-3.1.0")
}

/// `@segment/analytics-next` from npm: its browser bundle's directory (`index.js`, which
/// defines `AnalyticsNext`, and the chunks it loads on demand).
pub fn segment_next() -> PathBuf {
    npm("@segment/analytics-next@1.84.3", "analytics-next-1.84.3")
        .join("@segment/analytics-next/dist/umd")
}
