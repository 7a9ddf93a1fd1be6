//! Reporting back, against a local server that validates like the reservation system's
//! back end: required fields, enum values, length limits (in UTF-16 units, as Java counts),
//! no unknown fields, and the signature.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{RecordingManager, fixture, spawn_app_with, start_backend, vars};

fn utf16_len(v: &Value) -> usize {
    v.as_str().map(|s| s.encode_utf16().count()).unwrap_or(0)
}

#[tokio::test]
async fn a_processed_start_sends_a_notification_and_an_audit_entry_the_back_end_accepts() {
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let app = spawn_app_with(&vars(&endpoints), RecordingManager::new()).await;

    let response = app.post_webhook(&fixture("event_start.json")).await;
    assert_eq!(response.status(), 200);
    let reply = response.text().await.unwrap();

    let (notifications, logs) = backend.wait_for(1).await;
    let n = &notifications[0];
    assert_eq!(n["webhookId"], "7");
    assert_eq!(n["userId"], "5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13");
    assert_eq!(n["type"], "SUCCESS");
    assert_eq!(n["eventId"], "103");
    assert_eq!(n["resourceId"], "42");
    assert_eq!(n["eventType"], "EVENT_START");
    assert_eq!(
        n["message"],
        "Configure(\"103\") done for 5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13"
    );
    let l = &logs[0];
    assert_eq!(l["webhookId"], "7");
    assert_eq!(l["eventType"], "EVENT_START");
    assert_eq!(
        l["payload"],
        String::from_utf8(fixture("event_start.json")).unwrap()
    );
    assert_eq!(l["statusCode"], 200);
    assert_eq!(l["response"], reply);
    assert_eq!(l["success"], true);
    assert_eq!(l["resourceId"], 42);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_configure_is_reported_as_an_error_and_long_texts_are_cut_to_the_limits() {
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let manager = RecordingManager::new();
    // Multi-byte and astral characters make byte, char and UTF-16 counts differ.
    manager.fail_with(false, &"é😀".repeat(400));
    let app = spawn_app_with(&vars(&endpoints), manager).await;
    let padded = String::from_utf8(fixture("event_start.json"))
        .unwrap()
        .replace("Thesis experiments", &"ü".repeat(5000));

    let response = app.post_webhook(padded.as_bytes()).await;
    assert_eq!(response.status(), 500);

    let (notifications, logs) = backend.wait_for(1).await;
    assert_eq!(notifications[0]["type"], "ERROR");
    assert!(utf16_len(&notifications[0]["message"]) <= 500);
    assert!(
        notifications[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Could not configure sw1-port-3")
    );
    assert_eq!(logs[0]["success"], false);
    assert_eq!(logs[0]["statusCode"], 500);
    assert_eq!(utf16_len(&logs[0]["payload"]), 4000);
    app.stop().await;
}

#[tokio::test]
async fn ignored_events_are_not_reported_and_duplicates_only_audited() {
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let app = spawn_app_with(&vars(&endpoints), RecordingManager::new()).await;

    app.post_webhook(&fixture("event_start_other_type.json"))
        .await;
    app.post_webhook(&fixture("event_start.json")).await;
    app.post_webhook(&fixture("event_start.json")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (notifications, logs) = {
        let r = backend.received.lock().unwrap();
        (r.notifications.len(), r.logs.len())
    };
    assert_eq!((notifications, logs), (1, 2));
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_or_slow_report_endpoint_never_fails_or_delays_the_event() {
    // Nothing listens on this port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // This one accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let notification = format!("http://127.0.0.1:{closed}/api/notifications/webhook");
    let log = format!("http://127.0.0.1:{silent_port}/api/webhooks/log");
    let app = spawn_app_with(
        &[
            ("NOTIFICATION_ENDPOINT", &notification),
            ("WEBHOOK_LOG_ENDPOINT", &log),
            ("WEBHOOK_LOG_TIMEOUT", "300ms"),
        ],
        RecordingManager::new(),
    )
    .await;

    let started = std::time::Instant::now();
    let response = app.post_webhook(&fixture("event_start.json")).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let expected = [
        r#"webhook_reports_total{endpoint="notification",result="error"} 1"#,
        r#"webhook_reports_total{endpoint="webhook_log",result="error"} 1"#,
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.get("/metrics").await.text().await.unwrap();
        if expected.iter().all(|line| metrics.contains(line)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for line in expected {
        assert!(metrics.contains(line), "{metrics}");
    }
    app.stop().await;
}
