//! The alerts and the dashboard in k8s/monitoring use only metrics the service exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};
use webhook::testing::{fixture, spawn_app_with, start_backend, vars};

/// A manager whose calls all succeed: what is measured here is the service.
struct Succeeding;

#[async_trait]
impl ResourceManager for Succeeding {
    async fn configure(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("configured"))
    }
    async fn release(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("released"))
    }
}

/// The metric names a PromQL text refers to.
///
/// Every metric the service exports is named `webhook_...` (its registry's prefix), so a
/// name is any `webhook_` followed by lower-case letters, digits and underscores, starting
/// where no identifier character precedes it. Label values such as `job="webhook"` have no
/// underscore after the prefix and are not names. Nothing is stripped: PromQL cannot refer
/// to a histogram but through its `_bucket`, `_sum` or `_count` series, which a scrape lists
/// as they are. The other series the rules use, `up`, is Prometheus's own.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = promql;
    while let Some(at) = rest.find("webhook_") {
        let starts_name = !rest[..at].chars().next_back().is_some_and(ident);
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if starts_name {
            names.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// The series names of a scrape: the first word of each sample line.
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `expr` of every panel target of a Grafana dashboard, rows' panels included.
fn dashboard_exprs(panel: &serde_json::Value, out: &mut Vec<String>) {
    for target in panel["targets"].as_array().into_iter().flatten() {
        if let Some(expr) = target["expr"].as_str() {
            out.push(expr.to_owned());
        }
    }
    for inner in panel["panels"].as_array().into_iter().flatten() {
        dashboard_exprs(inner, out);
    }
}

#[test]
fn the_tokenizer_takes_metric_names_and_nothing_else() {
    let names = metric_names(
        r#"sum(rate(webhook_deliveries_total{job="webhook", result="x"}[5m])) / my_webhook_x
           + histogram_quantile(0.9, webhook_manager_call_duration_seconds_bucket)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "webhook_deliveries_total",
            "webhook_manager_call_duration_seconds_bucket"
        ]
    );
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_in_a_scrape() {
    // Arrange: the app reports to a back end, so that every labelled series exists once a
    // booking has started and ended and a delivery was refused.
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let app = spawn_app_with(&vars(&endpoints), Arc::new(Succeeding)).await;
    assert_eq!(
        app.post_webhook(&fixture("event_start.json"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_webhook(&fixture("event_end.json")).await.status(),
        200
    );
    assert_eq!(app.post_with(b"{}", &[]).await.status(), 401);
    backend.wait_for(2).await;

    // Act: scrape until the reports' counters show the deliveries to the back end.
    let mut text = String::new();
    for _ in 0..100 {
        text = app.get("/metrics").await.text().await.unwrap();
        if text.contains("webhook_reports_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scraped = scraped_names(&text);

    // Assert: the rules (expressions and the annotations that name metrics) and the
    // dashboard's queries name only scraped series.
    let rules = metric_names(&read("k8s/monitoring/rules.yaml"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("k8s/monitoring/dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        dashboard_exprs(panel, &mut exprs);
    }
    let panels = metric_names(&exprs.join("\n"));
    for (used, file) in [(&rules, "rules.yaml"), (&panels, "dashboard.json")] {
        assert!(used.len() >= 5, "{file}: too few names found: {used:?}");
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(
            missing.is_empty(),
            "k8s/monitoring/{file} uses {missing:?}, which /metrics does not export:\n{text}"
        );
    }
    // Nothing is overdue or waiting once the booking was released and reported.
    for line in [
        "webhook_overdue_bookings 0",
        "webhook_outbox_oldest_age_seconds 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    app.stop().await;
}
