//! The signed `timestamp` outside `REPLAY_TOLERANCE` is refused as a replay.

use crate::helpers::{Call, RecordingManager, fixture, json, spawn_app_with};

fn start_sent_at(timestamp: &str) -> Vec<u8> {
    String::from_utf8(fixture("event_start.json"))
        .unwrap()
        .replace("2026-11-23T09:55:00.412337125Z", timestamp)
        .into_bytes()
}

#[tokio::test]
async fn an_event_older_than_the_tolerance_is_refused_with_409_naming_the_tolerance() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("REPLAY_TOLERANCE", "5m")], manager.clone()).await;

    // The fixture was sent on 2026-11-23; an hour-old copy is just as stale.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    for body in [fixture("event_start.json"), start_sent_at(&hour_ago)] {
        let response = app.post_webhook(&body).await;
        assert_eq!(response.status(), 409);
        let reply = json(response).await;
        assert_eq!(reply["status"], "replay");
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.contains("replay") && message.contains("REPLAY_TOLERANCE (5m)"),
            "{message}"
        );
    }
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_fresh_event_within_the_tolerance_is_handled() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("REPLAY_TOLERANCE", "5m")], manager.clone()).await;
    let now = chrono::Utc::now().to_rfc3339();

    let response = app.post_webhook(&start_sent_at(&now)).await;

    assert_eq!(json(response).await["status"], "configured");
    assert_eq!(manager.calls().len(), 1);
    app.stop().await;
}

/// `body` with its top-level signed `timestamp` set to `at`.
fn dated(name: &str, at: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
    v["timestamp"] = at.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn every_dated_event_is_checked_not_only_bookings() {
    let manager = RecordingManager::new();
    manager.answer_events(crate::helpers::HookAnswer::Handled("seen".into()));
    let app = spawn_app_with(&[("REPLAY_TOLERANCE", "5m")], manager.clone()).await;
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();

    // The ALL ping, a nested event for the hook, an unknown type, another resource type's
    // START: recorded an hour ago, played back now.
    for name in [
        "test_event.json",
        "event_updated_moved.json",
        "future_event_type.json",
        "event_start_other_type.json",
    ] {
        let response = app.post_webhook(&dated(name, &hour_ago)).await;
        assert_eq!(response.status(), 409, "{name}");
        let reply = json(response).await;
        assert_eq!(reply["status"], "replay", "{name}: {reply}");
    }
    assert!(manager.events().is_empty(), "{:?}", manager.events());

    // Sent now, the same events go through.
    let now = chrono::Utc::now().to_rfc3339();
    let response = app.post_webhook(&dated("test_event.json", &now)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["status"], "handled");
    assert_eq!(manager.events().len(), 1);

    // A body without a timestamp has nothing to check; a malformed one is refused.
    let response = app
        .post_webhook(br#"{"eventType":"SOMETHING_NEW","data":{}}"#)
        .await;
    assert_eq!(response.status(), 200);
    let response = app
        .post_webhook(br#"{"eventType":"ALL","timestamp":"yesterday","data":{}}"#)
        .await;
    assert_eq!(response.status(), 400);
    assert!(
        json(response).await["message"]
            .as_str()
            .unwrap()
            .contains("timestamp")
    );
    app.stop().await;
}

/// `name` with the signed `timestamp` replaced by `at`, byte for byte otherwise.
fn fixture_sent_at(name: &str, at: &str) -> Vec<u8> {
    let body = String::from_utf8(fixture(name)).unwrap();
    let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
    let was = sent["timestamp"].as_str().unwrap();
    body.replace(was, at).into_bytes()
}

/// Retention forgets a settled booking; what keeps its START from configuring it again,
/// replayed, is the replay check, which retention therefore needs.
#[tokio::test]
async fn a_pruned_bookings_start_replayed_is_still_refused() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(
        &[("REPLAY_TOLERANCE", "1s"), ("LEDGER_RETENTION", "2s")],
        manager.clone(),
    )
    .await;
    let now = chrono::Utc::now().to_rfc3339();
    let start = fixture_sent_at("event_start.json", &now);
    assert_eq!(
        json(app.post_webhook(&start).await).await["status"],
        "configured"
    );
    let end = fixture_sent_at("event_end.json", &now);
    assert_eq!(
        json(app.post_webhook(&end).await).await["status"],
        "released"
    );
    assert_eq!(app.status("103").await.0, 200);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.status("103").await.0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "booking 103 is still in the ledger 20 s after it settled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let replayed = app.post_webhook(&start).await;
    assert_eq!(replayed.status(), 409);
    assert_eq!(json(replayed).await["status"], "replay");
    assert_eq!(
        manager.calls(),
        [Call::Configure("103".into()), Call::Release("103".into())]
    );
    app.stop().await;
}
