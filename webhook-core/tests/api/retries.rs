//! Transient failures retried with backoff, permanent ones not, and work longer than the
//! processing budget answered 202 and finished in the background; each with its report.

use std::time::{Duration, Instant};

use webhook::app::cli::{Example, SendArgs};

use crate::helpers::{
    ADMIN_TOKEN, Call, RecordingManager, fixture, fixture_secret, json, spawn_app_with,
};
use crate::helpers::{start_backend, vars};

#[tokio::test]
async fn a_transient_failure_is_retried_with_backoff_until_it_succeeds_and_success_is_reported() {
    // Arrange: the first three calls fail transiently; backoff starts at 100 ms.
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.extend([("RETRY_BACKOFF", "100ms"), ("MAX_ATTEMPTS", "5")]);
    let manager = RecordingManager::new();
    manager.fail_next(3, true, "the switch is busy");
    let app = crate::helpers::spawn_app_with(&settings, manager.clone()).await;

    // Act
    let started = Instant::now();
    let response = app.post_webhook(&fixture("event_start.json")).await;

    // Assert: one reply after the fourth call; waits of at least 100, 200 and 400 ms.
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["status"], "configured");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(manager.calls(), vec![Call::Configure("103".into()); 4]);
    let (notifications, logs) = backend.wait_for(1).await;
    assert_eq!(notifications[0]["type"], "SUCCESS");
    assert_eq!(logs[0]["statusCode"], 200);
    assert_eq!(logs[0]["retryCount"], 3);
    let status = app.settled("103", Duration::from_secs(5)).await;
    assert_eq!(status["attempts"], 4);
    let history = status["history"].to_string();
    assert!(
        history.contains("configure attempt 3 failed (transient): the switch is busy"),
        "{history}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_failure_is_not_retried_and_the_error_is_reported() {
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.push(("RETRY_BACKOFF", "50ms"));
    let manager = RecordingManager::new();
    manager.fail_next(1, false, "VLAN 4095 is reserved");
    let app = crate::helpers::spawn_app_with(&settings, manager.clone()).await;

    let response = app.post_webhook(&fixture("event_start.json")).await;

    assert_eq!(response.status(), 500);
    let (notifications, logs) = backend.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(manager.calls().len(), 1, "retried: {:?}", manager.calls());
    assert_eq!(notifications[0]["type"], "ERROR");
    assert!(
        notifications[0]["message"]
            .as_str()
            .unwrap()
            .ends_with("VLAN 4095 is reserved")
    );
    assert_eq!(
        (logs[0]["statusCode"].clone(), logs[0]["success"].clone()),
        (500.into(), false.into())
    );
    let status = app.settled("103", Duration::from_secs(1)).await;
    assert_eq!(status["state"], "failed");
    app.stop().await;
}

#[tokio::test]
async fn transient_failures_beyond_max_attempts_end_in_a_503_and_an_error_report() {
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.extend([("RETRY_BACKOFF", "50ms"), ("MAX_ATTEMPTS", "3")]);
    let manager = RecordingManager::new();
    manager.fail_with(true, "the switch did not answer");
    let app = crate::helpers::spawn_app_with(&settings, manager.clone()).await;

    let response = app.post_webhook(&fixture("event_start.json")).await;

    assert_eq!(response.status(), 503);
    assert_eq!(manager.calls().len(), 3);
    let (notifications, _) = backend.wait_for(1).await;
    assert_eq!(notifications[0]["type"], "ERROR");
    app.stop().await;
}

#[tokio::test]
async fn work_longer_than_the_budget_is_answered_202_and_finished_and_reported_in_the_background() {
    // Arrange: configure takes 2 s, the budget is 300 ms.
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.push(("PROCESSING_BUDGET", "300ms"));
    let manager = RecordingManager::new();
    manager.delay_each_call(Duration::from_secs(2));
    let app = crate::helpers::spawn_app_with(&settings, manager.clone()).await;

    // Act
    let started = Instant::now();
    let first = app.post_webhook(&fixture("event_start.json")).await;
    let again = app.post_webhook(&fixture("event_start.json")).await;

    // Assert: both answered within the budget (600 ms at most, well before the first call
    // could end), without a second configure.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(first.status(), 202);
    let first = json(first).await;
    assert_eq!(first["status"], "accepted");
    assert!(
        first["executionId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{first}"
    );
    assert_eq!(again.status(), 202);
    assert_eq!(json(again).await["status"], "in_progress");
    let status = app.settled("103", Duration::from_secs(5)).await;
    assert_eq!(status["state"], "active");
    assert_eq!(status["executionId"], first["executionId"]);
    // The audit log gets what the sender was told, then the final result.
    for _ in 0..100 {
        if backend.received.lock().unwrap().logs.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (notifications, logs) = backend.wait_for(1).await;
    let codes: Vec<_> = logs
        .iter()
        .map(|l| l["statusCode"].as_u64().unwrap())
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(notifications.len(), 1);
    assert_eq!(manager.calls(), vec![Call::Configure("103".into())]);
    app.stop().await;
}

#[tokio::test]
async fn the_send_command_waits_for_background_work_to_finish() {
    let manager = RecordingManager::new();
    manager.delay_each_call(Duration::from_millis(800));
    let app =
        crate::helpers::spawn_app_with(&[("PROCESSING_BUDGET", "200ms")], manager.clone()).await;
    let config = webhook::testing::config([
        ("WEBHOOK_SECRET", fixture_secret()),
        ("RESOURCE_TYPE", "Switch Port".into()),
        ("PORT", app.port.to_string()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
    ])
    .unwrap();
    let args = SendArgs {
        file: None,
        event: Example::Start,
        event_id: "88".into(),
        resource_name: "sw1-port-8".into(),
        parameters: "{}".into(),
        url: None,
        wait: true,
        wait_timeout: Duration::from_secs(10),
    };

    webhook::app::cli::send(&config, args).await.unwrap();

    assert_eq!(manager.calls(), vec![Call::Configure("88".into())]);
    let (_, status) = app.status("88").await;
    assert_eq!(status["state"], "active");
    app.stop().await;
}

#[tokio::test]
async fn a_release_that_fails_beyond_max_attempts_is_tried_until_it_succeeds() {
    // Arrange: the backend is down at END for longer than all attempts.
    let manager = RecordingManager::new();
    let app = spawn_app_with(
        &[("MAX_ATTEMPTS", "2"), ("RETRY_BACKOFF", "50ms")],
        manager.clone(),
    )
    .await;
    app.post_webhook(&fixture("event_start.json")).await;
    manager.fail_next(5, true, "the switch does not answer");

    // Act
    app.post_webhook(&fixture("event_end.json")).await;

    // Assert: while it fails, the release is counted as failing; once the backend is back,
    // the booking is released.
    let mut failing = false;
    for _ in 0..200 {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        if metrics.contains("webhook_failing_releases 1") {
            failing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failing, "no failing release was counted");
    let status = app.settled("103", Duration::from_secs(30)).await;
    assert_eq!(status["state"], "released", "{status}");
    let releases = manager
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Release(_)))
        .count();
    assert_eq!(releases, 6);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("webhook_failing_releases 0"), "{metrics}");
}
