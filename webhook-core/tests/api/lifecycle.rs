//! Health, readiness, metrics, graceful shutdown and the `send` command.

use std::time::Duration;

use webhook::app::cli::{Example, SendArgs};

use crate::helpers::{Call, RecordingManager, fixture, fixture_secret, json, spawn_app};

#[tokio::test]
async fn healthz_names_the_service() {
    let app = spawn_app(RecordingManager::new()).await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], env!("CARGO_PKG_NAME"));
    app.stop().await;
}

#[tokio::test]
async fn readyz_follows_the_managers_readiness_check() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    manager.fail_with(true, "database unreachable");
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert_eq!(json(response).await["message"], "database unreachable");
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_deliveries_by_event_type_and_result() {
    let app = spawn_app(RecordingManager::new()).await;
    app.post_webhook(&fixture("event_start.json")).await;
    app.post_webhook(&fixture("event_start.json")).await;
    app.post_webhook(&fixture("test_event.json")).await;
    app.post_with(b"{}", &[]).await;

    let text = app.get("/metrics").await.text().await.unwrap();

    for line in [
        r#"webhook_deliveries_total{event_type="EVENT_START",result="configured"} 1"#,
        r#"webhook_deliveries_total{event_type="EVENT_START",result="duplicate"} 1"#,
        r#"webhook_deliveries_total{event_type="ALL",result="ignored"} 1"#,
        r#"webhook_deliveries_total{event_type="unknown",result="unauthorized"} 1"#,
        r#"webhook_manager_call_duration_seconds_count{operation="configure",result="success"} 1"#,
        "webhook_active_bookings 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_configure_finish() {
    // Arrange: configure takes a while.
    let manager = RecordingManager::new();
    manager.delay_each_call(Duration::from_millis(500));
    let app = spawn_app(manager.clone()).await;
    let client = app.client.clone();
    let url = format!("{}/webhook", app.address);
    let body = fixture("event_start.json");
    let signature =
        webhook::contract::signature::Keys::new(vec![fixture_secret().into_bytes()]).sign(&body);

    // Act: the delivery is in flight when shutdown is requested.
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .header("x-webhook-signature", signature)
            .body(body)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.stop().await;

    // Assert: it completed and was answered.
    let response = in_flight.await.unwrap().expect("answered before shutdown");
    assert_eq!(response.status(), 200);
    assert_eq!(manager.calls(), vec![Call::Configure("103".into())]);
}

#[tokio::test]
async fn a_call_cut_short_by_the_shutdown_deadline_stays_configuring_and_resumes_at_the_next_start()
{
    // Arrange: configure takes longer than the shutdown deadline.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let slow = RecordingManager::new();
    slow.delay_each_call(Duration::from_secs(10));
    let settings = [
        ("DATA_DIR", data),
        ("PROCESSING_BUDGET", "100ms"),
        ("SHUTDOWN_TIMEOUT", "300ms"),
    ];
    let app = crate::helpers::spawn_app_with(&settings, slow.clone()).await;
    let response = app.post_webhook(&fixture("event_start.json")).await;
    assert_eq!(response.status(), 202);

    // Act: stop, then start again on the same ledger with a manager that answers at once.
    let stopping = std::time::Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    let config = webhook::testing::config([
        ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"),
        ("DATA_DIR", data),
    ])
    .unwrap();
    let left = webhook::engine::ledger::open(&config, false)
        .await
        .unwrap()
        .booking("103")
        .await
        .unwrap()
        .unwrap();
    let fast = RecordingManager::new();
    let app = crate::helpers::spawn_app_with(&settings, fast.clone()).await;

    // Assert: it was left configuring, without a lease, and is finished after the restart.
    assert_eq!(left.state, webhook::engine::ledger::State::Configuring);
    assert!(left.lease_owner.is_none(), "{left:?}");
    assert_eq!(
        app.settled("103", Duration::from_secs(5)).await["state"],
        "active"
    );
    assert!(
        slow.calls().is_empty(),
        "the cut-short call completed: {:?}",
        slow.calls()
    );
    assert_eq!(fast.calls(), vec![Call::Configure("103".into())]);
    app.stop().await;
}

#[tokio::test]
async fn the_send_command_signs_built_in_examples_that_the_webhook_accepts() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    let config = webhook::testing::config([
        ("WEBHOOK_SECRET", fixture_secret()),
        ("RESOURCE_TYPE", "Switch Port".into()),
        ("PORT", app.port.to_string()),
    ])
    .unwrap();
    let args = |event| SendArgs {
        file: None,
        event,
        event_id: "77".into(),
        resource_name: "sw1-port-9".into(),
        parameters: r#"{"vlan_id":"300"}"#.into(),
        url: None,
        wait: false,
        wait_timeout: Duration::from_secs(5),
    };

    webhook::app::cli::send(&config, args(Example::Start))
        .await
        .unwrap();
    webhook::app::cli::send(&config, args(Example::Deleted))
        .await
        .unwrap();

    assert_eq!(
        manager.calls(),
        vec![Call::Configure("77".into()), Call::Release("77".into())]
    );
    let r = manager.reservations.lock().unwrap()[0].clone();
    assert_eq!(r.resource.name, "sw1-port-9");
    assert_eq!(r.parameters.get("vlan_id").as_deref(), Some("300"));
    app.stop().await;
}

#[tokio::test]
async fn the_send_command_fails_when_the_webhook_refuses() {
    let app = spawn_app(RecordingManager::new()).await;
    let config = webhook::testing::config([
        (
            "WEBHOOK_SECRET",
            "not the webhook's secret, though long enough to be one".to_owned(),
        ),
        ("PORT", app.port.to_string()),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("start.json");
    std::fs::write(&file, fixture("event_start.json")).unwrap();
    let args = SendArgs {
        file: Some(file),
        event: Example::Start,
        event_id: "1".into(),
        resource_name: "x".into(),
        parameters: "{}".into(),
        url: None,
        wait: false,
        wait_timeout: Duration::from_secs(5),
    };
    let err = webhook::app::cli::send(&config, args).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    app.stop().await;
}
