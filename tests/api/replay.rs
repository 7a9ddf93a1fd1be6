//! The signed `timestamp` outside `REPLAY_TOLERANCE` is refused as a replay.

use crate::helpers::{RecordingManager, fixture, json, spawn_app_with};

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
