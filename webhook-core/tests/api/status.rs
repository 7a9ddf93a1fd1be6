//! `GET /bookings/{id}`: state and history for holders of the admin token, never the
//! manager's outcome.

use crate::helpers::{RecordingManager, fixture, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_status_shows_state_and_history_but_never_the_outcome() {
    let app = spawn_app(RecordingManager::new()).await;
    app.post_webhook(&fixture("event_start.json")).await;
    app.post_webhook(&fixture("event_start.json")).await;
    app.post_webhook(&fixture("event_end.json")).await;

    let (code, status) = app.status("103").await;

    assert_eq!(code, 200);
    assert_eq!(status["state"], "released");
    assert_eq!(status["desired"], "released");
    assert_eq!(status["settled"], true);
    assert_eq!(status["resourceId"], 42);
    let history: Vec<&str> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["what"].as_str().unwrap())
        .collect();
    let expected = [
        "EVENT_START received: configure requested",
        "configure attempt 1 started by ",
        "configured (attempt 1)",
        "EVENT_START received again: already configured",
        "EVENT_END received: release requested",
        "release attempt 1 started by ",
        "released (attempt 1)",
    ];
    assert_eq!(history.len(), expected.len(), "{history:#?}");
    for (line, start) in history.iter().zip(expected) {
        assert!(line.starts_with(start), "{history:#?}");
    }
    // The outcome ("Configure(\"103\") done for <user>") may hold credentials.
    assert!(!status.to_string().contains("done for"), "{status}");
    app.stop().await;
}

#[tokio::test]
async fn the_status_needs_the_admin_token_and_does_not_exist_without_one() {
    let app = spawn_app(RecordingManager::new()).await;
    let wrong = app
        .client
        .get(format!("{}/bookings/103", app.address))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = app.status("404404").await;
    assert_eq!(unknown.0, 404);
    assert_eq!(unknown.1["status"], "unknown");
    app.stop().await;

    let app = spawn_app_with(&[("ADMIN_TOKEN", "")], RecordingManager::new()).await;
    assert_eq!(app.get("/bookings/103").await.status(), 404);
    assert_eq!(app.status("103").await.0, 404);
    app.stop().await;
}
