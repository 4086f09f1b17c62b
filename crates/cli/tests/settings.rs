//! A setting out of range stops a service before it listens, naming the setting, its value
//! and its range.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `eye` with a complete configuration plus `setting`; the process must end on its own.
fn eye(args: &[&str], data_dir: &std::path::Path, setting: (&str, &str)) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(args)
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .env(
            "EYE_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", data_dir.join("eye.db").display()),
        )
        .env("EYE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env(
            "EYE_JWT_SECRET",
            "settings-test-secret-settings-test-secret",
        )
        .env("EYE_API_ADDR", "127.0.0.1:0")
        .env("EYE_ADMIN_ADDR", "127.0.0.1:0")
        .env(setting.0, setting.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "`eye {}` with {}={} kept running: {}",
                args.join(" "),
                setting.0,
                setting.1,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn each_service_refuses_to_start_with_a_setting_out_of_range_and_names_it() {
    let cases = [
        (
            &["api"][..],
            "EYE_TOKEN_REFRESH_MS",
            "0",
            "token_refresh_ms = 0",
        ),
        (&["api"][..], "EYE_API_WORKERS", "0", "api_workers = 0"),
        (
            &["api"][..],
            "EYE_RATE_LIMIT_BURST",
            "0",
            "rate_limit_burst = 0",
        ),
        (
            &["api"][..],
            "EYE_PUBLISH_CHANNELS",
            "0",
            "publish_channels = 0",
        ),
        (
            &["worker"][..],
            "EYE_WORKER_BATCH_MESSAGES",
            "0",
            "worker_batch_messages = 0",
        ),
        (
            &["admin"][..],
            "EYE_TOKEN_REFRESH_MS",
            "0",
            "token_refresh_ms = 0",
        ),
        (
            &["migrate"][..],
            "EYE_CLOCK_SKEW_SECS",
            "-5",
            "clock_skew_secs = -5",
        ),
    ];
    for (args, name, value, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = eye(args, dir.path(), (name, value));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "`eye {}` with {name}={value} succeeded",
            args.join(" ")
        );
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("must be between"), "{stderr}");
        assert!(
            !dir.path().join("eye.db").exists(),
            "`eye {}` connected to the database before refusing {name}",
            args.join(" ")
        );
    }
}

#[test]
fn the_api_refuses_a_zero_or_unreadable_rate_limit_naming_it() {
    for (value, says) in [("0/s", "lets nothing through"), ("fast", "is not a rate")] {
        let dir = tempfile::tempdir().unwrap();
        let output = eye(&["api"], dir.path(), ("EYE_RATE_LIMIT", value));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "EYE_RATE_LIMIT={value} was accepted"
        );
        assert!(
            stderr.contains(&format!("rate_limit = \"{value}\"")),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
        assert!(!dir.path().join("eye.db").exists());
    }
}

#[test]
fn eye_dev_refuses_a_setting_out_of_range_before_it_creates_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let output = eye(
        &["dev", "--data-dir", data_dir.to_str().unwrap()],
        dir.path(),
        ("EYE_PUBLISH_CHANNELS", "0"),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("publish_channels = 0"), "{stderr}");
    assert!(!data_dir.exists(), "the data directory was created");
}
