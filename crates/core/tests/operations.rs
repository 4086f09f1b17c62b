//! The operator's files stay in step with the metrics catalogue: `docs/OPERATIONS.md`
//! describes every metric and every alert, and the alerts and the Grafana dashboard use only
//! metrics that exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use eye_core::metrics::{CATALOGUE, Def, Kind};

fn read(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn def(name: &str) -> Option<&'static Def> {
    CATALOGUE.iter().find(|d| d.name == name)
}

/// Every `eye_…` metric name in `text`, with a histogram's `_bucket`, `_sum` and `_count`
/// taken back to the histogram's name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("eye_") {
        let before = rest[..at].chars().next_back();
        let word: String = rest[at..].chars().take_while(|&c| is_ident(c)).collect();
        rest = &rest[at + word.len()..];
        if before.is_some_and(is_ident) {
            continue;
        }
        let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = word.strip_suffix(suffix)?;
            def(base).filter(|d| d.kind == Kind::Histogram)?;
            Some(base.to_owned())
        });
        names.insert(histogram.unwrap_or(word));
    }
    names
}

/// The rules of `alerts.yml`, each as its name and the text of its block.
fn alerts(yaml: &str) -> Vec<(String, String)> {
    let mut alerts: Vec<(String, String)> = Vec::new();
    for line in yaml.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), String::new()));
        } else if let Some((_, block)) = alerts.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    alerts
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

#[test]
fn the_operations_guide_describes_every_metric_with_its_type_and_labels() {
    let doc = read("docs/OPERATIONS.md");
    for def in CATALOGUE {
        let row_start = format!("| `{}` |", def.name);
        let row = doc
            .lines()
            .find(|line| line.starts_with(&row_start))
            .unwrap_or_else(|| panic!("docs/OPERATIONS.md has no table row for {}", def.name));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], kind_word(def.kind), "the type of {}", def.name);
        for label in def.labels {
            assert!(
                cells[3].contains(&format!("`{label}`")),
                "docs/OPERATIONS.md does not name the label `{label}` of {}",
                def.name
            );
        }
        if def.labels.is_empty() {
            assert_eq!(cells[3], "—", "{} has no labels", def.name);
        }
    }
}

#[test]
fn the_alerts_use_only_catalogued_metrics_and_each_has_an_expression_a_duration_a_severity_and_a_summary()
 {
    let yaml = read("deploy/prometheus/alerts.yml");
    let doc = read("docs/OPERATIONS.md");
    let alerts = alerts(&yaml);
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for (name, block) in &alerts {
        for key in ["expr:", "for:", "severity:", "summary:", "description:"] {
            assert!(
                block.lines().any(|l| l.trim_start().starts_with(key)),
                "alert {name} has no `{key}`"
            );
        }
        let severity = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("severity:"))
            .unwrap()
            .trim();
        assert!(
            ["critical", "warning"].contains(&severity),
            "alert {name} has severity {severity}"
        );
        assert!(
            doc.contains(&format!("### {name}\n")),
            "docs/OPERATIONS.md says nothing of what to do when {name} fires"
        );
    }
    let names: BTreeSet<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), alerts.len(), "alert names are unique");
    for metric in metric_names(&yaml) {
        assert!(
            def(&metric).is_some(),
            "alerts.yml uses {metric}, which is not catalogued"
        );
    }
    let prometheus = read("deploy/prometheus/prometheus.yml");
    assert!(prometheus.contains("rule_files:") && prometheus.contains("- alerts.yml"));
}

#[test]
fn the_grafana_dashboard_is_json_that_shows_every_metric_and_only_catalogued_ones() {
    let text = read("deploy/grafana/the-eye.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let panels = dashboard["panels"].as_array().unwrap();
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title} reads the chosen data source"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            if expr.contains("histogram_quantile") {
                assert!(
                    expr.contains("_bucket") && expr.contains("le"),
                    "panel {title}: a quantile needs the buckets by le: {expr}"
                );
            }
            exprs.push(expr.to_owned());
        }
    }
    let used = metric_names(&exprs.join("\n"));
    for metric in &used {
        assert!(
            def(metric).is_some(),
            "the dashboard uses {metric}, which is not catalogued"
        );
    }
    for def in CATALOGUE {
        assert!(
            used.contains(def.name),
            "no panel of the dashboard shows {}",
            def.name
        );
    }
}

#[test]
fn metric_names_are_read_whole_and_histograms_by_their_own_name() {
    let names = metric_names(
        "rate(eye_worker_commit_seconds_bucket[5m]) / the_eye_x + eye_api_requests_total_count",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["eye_api_requests_total_count", "eye_worker_commit_seconds"]
    );
}
