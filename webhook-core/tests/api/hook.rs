//! The manager's hook for every other verified event: what reaches it, exactly as sent, and
//! how its answer becomes the reply.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use webhook::contract::event::Source;
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

use crate::helpers::{
    HookAnswer, RecordingManager, SeenEvent, fixture, json, spawn_app, spawn_app_with,
};

/// A manager that leaves `on_event` as the trait defines it.
struct WithoutHook;

#[async_trait]
impl ResourceManager for WithoutHook {
    async fn configure(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("configured"))
    }

    async fn release(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        Ok(Outcome::new("released"))
    }
}

/// The reservation system's events that are neither a start nor an end of a booking.
const OTHER_FIXTURES: [(&str, &str); 4] = [
    ("event_created.json", "EVENT_CREATED"),
    ("resource_status_changed.json", "RESOURCE_STATUS_CHANGED"),
    ("test_event.json", "ALL"),
    ("future_event_type.json", "EVENT_RESCHEDULED"),
];

#[tokio::test]
async fn every_other_event_type_reaches_the_hook_with_its_type_and_raw_body() {
    // Arrange
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    let odd = br#"{"eventType":"EVENT_TELEPORTED","eventId":{"weird":true}}"#.to_vec();
    let mut sent: Vec<(Vec<u8>, &str)> = OTHER_FIXTURES
        .iter()
        .map(|(file, event_type)| (fixture(file), *event_type))
        .collect();
    sent.push((odd, "EVENT_TELEPORTED"));

    // Act
    let mut replies = Vec::new();
    for (body, _) in &sent {
        replies.push(app.post_webhook(body).await);
    }

    // Assert
    for reply in replies {
        assert_eq!(reply.status(), 200);
        assert_eq!(json(reply).await["status"], "ignored");
    }
    let seen = manager.events();
    assert_eq!(seen.len(), sent.len(), "{seen:?}");
    for (event, (body, event_type)) in seen.iter().zip(&sent) {
        assert_eq!(event.source, Source::ReservationSystem);
        assert_eq!(event.event_type, *event_type);
        assert_eq!(
            &event.body, body,
            "{event_type}: the body is passed byte for byte"
        );
    }
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_hook_can_tell_which_resource_type_an_event_is_about() {
    // Arrange
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    let created = String::from_utf8(fixture("event_created.json")).unwrap();
    let other_type = created.replace("\"Switch Port\"", "\"Meeting Room\"");

    // Act
    app.post_webhook(created.as_bytes()).await;
    app.post_webhook(other_type.as_bytes()).await;
    app.post_webhook(&fixture("resource_status_changed.json"))
        .await;
    app.post_webhook(&fixture("test_event.json")).await;

    // Assert
    let ours: Vec<Option<bool>> = manager.events().iter().map(|e| e.ours).collect();
    assert_eq!(ours, [Some(true), Some(false), Some(true), None]);
    app.stop().await;
}

#[tokio::test]
async fn booking_events_and_bookings_of_other_resource_types_never_reach_the_hook() {
    // Arrange
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;

    // Act
    for file in [
        "event_start.json",
        "event_end.json",
        "event_deleted.json",
        "event_start_other_type.json",
    ] {
        app.post_webhook(&fixture(file)).await;
    }

    // Assert
    assert!(manager.events().is_empty(), "{:?}", manager.events());
    app.stop().await;
}

#[tokio::test]
async fn without_a_hook_other_events_are_acknowledged_as_ignored_with_their_reason() {
    // Arrange
    let app = spawn_app(Arc::new(WithoutHook)).await;
    let expected = [
        "EVENT_CREATED needs no action",
        "RESOURCE_STATUS_CHANGED needs no action",
        "test event received",
        "event type \"EVENT_RESCHEDULED\" is not handled by this webhook",
    ];

    for ((file, _), message) in OTHER_FIXTURES.iter().zip(expected) {
        // Act
        let response = app.post_webhook(&fixture(file)).await;

        // Assert
        assert_eq!(response.status(), 200, "{file}");
        let body = json(response).await;
        assert_eq!(body["status"], "ignored", "{file}");
        assert_eq!(body["message"], message, "{file}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_hook_that_handles_an_event_answers_200_handled_with_its_message() {
    // Arrange
    let manager = RecordingManager::new();
    manager.answer_events(HookAnswer::Handled("maintenance workflow 7 started".into()));
    let app = spawn_app(manager.clone()).await;

    // Act
    let response = app
        .post_webhook(&fixture("resource_status_changed.json"))
        .await;

    // Assert
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["status"], "handled");
    assert_eq!(body["message"], "maintenance workflow 7 started");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_hook_answers_5xx_failed_with_its_reason() {
    for (transient, code) in [(false, 500), (true, 503)] {
        // Arrange
        let manager = RecordingManager::new();
        manager.answer_events(HookAnswer::Fail(
            transient,
            "the workflow engine said no".into(),
        ));
        let app = spawn_app(manager.clone()).await;

        // Act
        let response = app
            .post_webhook(&fixture("resource_status_changed.json"))
            .await;

        // Assert
        assert_eq!(response.status(), code);
        let body = json(response).await;
        assert_eq!(body["status"], "failed");
        assert_eq!(
            body["message"],
            "handling RESOURCE_STATUS_CHANGED failed: the workflow engine said no"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_hook_slower_than_the_budget_is_answered_202_and_still_finishes() {
    // Arrange
    let manager = RecordingManager::new();
    manager.answer_events(HookAnswer::Slow(Duration::from_millis(600)));
    let app = spawn_app_with(&[("PROCESSING_BUDGET", "200ms")], manager.clone()).await;

    // Act
    let response = app.post_webhook(&fixture("test_event.json")).await;

    // Assert
    assert_eq!(response.status(), 202);
    let body = json(response).await;
    assert_eq!(body["status"], "accepted");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("ALL is still being handled"),
        "{body}"
    );
    // Shutdown waits for it.
    app.stop().await;
    assert_eq!(*manager.events_done.lock().unwrap(), 1);
}

#[tokio::test]
async fn waldur_events_outside_the_lists_reach_the_hook_with_their_source() {
    // Arrange: Waldur's completed order, as the approval event of the same order.
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("WALDUR_TOKEN", "waldur-token")], manager.clone()).await;
    let body = String::from_utf8(fixture("waldur_order_completed.json"))
        .unwrap()
        .replace(
            "\"event_type\": \"marketplace_order_completed\"",
            "\"event_type\": \"marketplace_order_approved\"",
        )
        .into_bytes();

    // Act
    let response = app.post_waldur(&body, "waldur-token").await;

    // Assert
    assert_eq!(json(response).await["status"], "ignored");
    assert_eq!(
        manager.events(),
        [SeenEvent {
            source: Source::Waldur,
            event_type: "marketplace_order_approved".into(),
            body,
            ours: Some(true),
        }]
    );
    assert!(manager.calls().is_empty());
    app.stop().await;
}
