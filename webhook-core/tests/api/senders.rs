//! What the real senders do, as their source shows it: one START or END at a time for the
//! whole installation (answer fast), bookings updated or deleted while in progress, events
//! re-sent with a new timestamp, batched bodies, bodies whose `data` is a string, custom
//! parameters that are not JSON, and what the back end accepts as reports.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webhook::engine::ledger::Kind;

use crate::helpers::{Call, RecordingManager, TestApp, fixture, json, spawn_app_with};
use crate::helpers::{LOG_REPLY_SECRET, start_backend, start_backend_for, vars};

/// A fixture with top-level fields replaced (and then `data`'s, for a nested event).
fn body_of(name: &str, top: &[(&str, Value)], data: &[(&str, Value)]) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture(name)).unwrap();
    for (field, value) in top {
        body[*field] = value.clone();
    }
    for (field, value) in data {
        body["data"][*field] = value.clone();
    }
    serde_json::to_vec(&body).unwrap()
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> Value {
    json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The fixture START of booking 103, from now until `end`.
fn start_until(end: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let now = chrono::Utc::now();
    body_of(
        "event_start.json",
        &[("eventStart", rfc3339(now)), ("eventEnd", rfc3339(end))],
        &[],
    )
}

/// The fixture `EVENT_UPDATED` of booking 103 (still on its resource 42), now ending at `end`.
fn extended_to(end: chrono::DateTime<chrono::Utc>, sent: &str) -> Vec<u8> {
    body_of(
        "event_updated_extended.json",
        &[("timestamp", json!(sent))],
        &[
            ("start", rfc3339(chrono::Utc::now())),
            ("end", rfc3339(end)),
        ],
    )
}

/// Waits until the manager has received `n` calls, and returns them.
async fn calls(manager: &RecordingManager, n: usize) -> Vec<Call> {
    for _ in 0..200 {
        let calls = manager.calls();
        if calls.len() >= n {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {n} calls, got {:?}", manager.calls());
}

async fn configured(app: &TestApp, manager: &RecordingManager, body: &[u8]) {
    let response = app.post_webhook(body).await;
    assert!(response.status().is_success(), "{}", json(response).await);
    let status = app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(status["state"], "active", "{status}");
    assert_eq!(manager.calls(), vec![Call::Configure("103".into())]);
}

#[tokio::test]
async fn a_start_is_answered_at_once_whatever_the_manager_takes_and_still_configures() {
    // Arrange: the default budget, and a manager that takes 3 s.
    let manager = RecordingManager::new();
    manager.delay_each_call(Duration::from_secs(3));
    let app = spawn_app_with(&[("PROCESSING_BUDGET", "")], manager.clone()).await;

    // Act
    let started = Instant::now();
    let response = app.post_webhook(&fixture("event_start.json")).await;
    let took = started.elapsed();

    // Assert: answered well within 250 ms, 202 with the execution id; configured later.
    assert_eq!(response.status(), 202);
    assert!(took < Duration::from_millis(250), "answered after {took:?}");
    let body = json(response).await;
    assert_eq!(body["status"], "accepted", "{body}");
    assert!(body["executionId"].is_string(), "{body}");
    let status = app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(status["state"], "active");
    assert_eq!(manager.calls(), vec![Call::Configure("103".into())]);
}

#[tokio::test]
async fn an_extended_booking_is_never_released_at_its_old_end() {
    // Arrange: a booking that would end in 2 s, swept 1 s after its end.
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("RELEASE_GRACE", "1s")], manager.clone()).await;
    let now = chrono::Utc::now();
    configured(
        &app,
        &manager,
        &start_until(now + chrono::Duration::seconds(2)),
    )
    .await;

    // Act: the user extends it by hours.
    let later = now + chrono::Duration::hours(3);
    let response = app
        .post_webhook(&extended_to(later, "2026-11-23T11:10:05.21Z"))
        .await;
    assert_eq!(response.status(), 202, "{}", json(response).await);

    // Assert: past the old end plus the grace, it is still configured, never released, and
    // the manager heard of the new end once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, status) = app.status("103").await;
    assert_eq!(
        (status["desired"].as_str(), status["state"].as_str()),
        (Some("active"), Some("active")),
        "{status}"
    );
    assert_eq!(
        manager.calls(),
        vec![
            Call::Configure("103".into()),
            Call::EndChanged("103".into())
        ]
    );
    let told = manager.reservations.lock().unwrap()[1].clone();
    assert_eq!(told.end.timestamp(), later.timestamp());
    // The owner's details from START are kept: the update carries only the user's id.
    assert_eq!(told.user.username.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_shortened_booking_is_released_at_its_new_end() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("RELEASE_GRACE", "1s")], manager.clone()).await;
    let now = chrono::Utc::now();
    configured(
        &app,
        &manager,
        &start_until(now + chrono::Duration::hours(3)),
    )
    .await;

    let response = app
        .post_webhook(&extended_to(
            now + chrono::Duration::seconds(1),
            "2026-11-23T11:10:05Z",
        ))
        .await;
    assert_eq!(response.status(), 202);

    let calls = calls(&manager, 3).await;
    assert_eq!(
        calls,
        vec![
            Call::Configure("103".into()),
            Call::EndChanged("103".into()),
            Call::Release("103".into())
        ]
    );
    let status = app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(status["state"], "released", "{status}");
}

#[tokio::test]
async fn a_moved_booking_releases_the_old_resource_then_configures_the_new_one() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;
    configured(&app, &manager, &fixture("event_start.json")).await;

    let response = app.post_webhook(&fixture("event_updated_moved.json")).await;
    assert_eq!(response.status(), 202, "{}", json(response).await);

    let calls = calls(&manager, 3).await;
    assert_eq!(
        calls,
        vec![
            Call::Configure("103".into()),
            Call::Release("103".into()),
            Call::Configure("103".into())
        ]
    );
    let seen = manager.reservations.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|r| r.resource.id).collect::<Vec<_>>(),
        [42, 42, 43]
    );
    let status = app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(status["state"], "active", "{status}");

    // END names the new resource, and releases it once.
    let end = body_of(
        "event_end.json",
        &[
            ("resourceId", json!(43)),
            ("resourceName", json!("sw1-port-4")),
        ],
        &[],
    );
    app.post_webhook(&end).await;
    let calls = self::calls(&manager, 4).await;
    assert_eq!(calls[3], Call::Release("103".into()));
    assert_eq!(manager.reservations.lock().unwrap()[3].resource.id, 43);
}

#[tokio::test]
async fn a_booking_given_to_another_user_is_released_then_configured_for_them() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;
    configured(&app, &manager, &fixture("event_start.json")).await;

    let update = body_of(
        "event_updated_extended.json",
        &[],
        &[
            ("keycloakId", json!("0b9a7f4e-new-owner")),
            ("end", json!("2026-11-23T12:00:00Z")),
        ],
    );
    assert_eq!(app.post_webhook(&update).await.status(), 202);

    let calls = calls(&manager, 3).await;
    assert_eq!(
        calls[1..],
        [Call::Release("103".into()), Call::Configure("103".into())]
    );
    let seen = manager.reservations.lock().unwrap().clone();
    assert_eq!(seen[1].user.id, "5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13");
    assert_eq!(seen[2].user.id, "0b9a7f4e-new-owner");
    // Nothing of the previous owner goes to the new one.
    assert_eq!(seen[2].user.username, None);
}

#[tokio::test]
async fn a_booking_moved_to_another_resource_type_is_released_and_an_unknown_one_ignored() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;
    let mut body: Value = serde_json::from_slice(&fixture("event_updated_moved.json")).unwrap();
    body["data"]["resource"]["type"]["name"] = json!("GPU Server");
    let moved_away = serde_json::to_vec(&body).unwrap();

    // Never started here: nothing to do, and nothing recorded.
    let reply = json(app.post_webhook(&moved_away).await).await;
    assert_eq!(reply["status"], "ignored", "{reply}");
    assert_eq!(app.status("103").await.0, 404);

    configured(&app, &manager, &fixture("event_start.json")).await;
    app.post_webhook(&moved_away).await;
    assert_eq!(calls(&manager, 2).await[1], Call::Release("103".into()));
    let status = app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(status["state"], "released", "{status}");
}

#[tokio::test]
async fn an_update_of_a_booking_not_started_changes_nothing_now() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;
    let reply = app.post_webhook(&fixture("event_updated_moved.json")).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(json(reply).await["status"], "ignored");
    // Its START then configures the booking as the START describes it.
    configured(&app, &manager, &fixture("event_start.json")).await;
    assert_eq!(manager.reservations.lock().unwrap()[0].resource.id, 42);
}

#[tokio::test]
async fn a_deleted_resource_releases_its_bookings_in_progress_and_no_other() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;
    configured(&app, &manager, &fixture("event_start.json")).await;
    let other = body_of(
        "event_start.json",
        &[
            ("eventId", json!("104")),
            ("resourceId", json!(44)),
            ("resourceName", json!("sw1-port-5")),
        ],
        &[],
    );
    app.post_webhook(&other).await;
    app.settled("104", Duration::from_secs(10)).await;

    let response = app.post_webhook(&fixture("resource_deleted.json")).await;
    assert!(response.status().is_success());
    let reply = json(response).await;
    assert_eq!(reply["results"][0]["eventId"], "103", "{reply}");

    let status = app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(status["state"], "released", "{status}");
    assert_eq!(
        manager.calls(),
        vec![
            Call::Configure("103".into()),
            Call::Configure("104".into()),
            Call::Release("103".into())
        ]
    );
    let (_, other) = app.status("104").await;
    assert_eq!(other["state"], "active");
}

#[tokio::test]
async fn a_nested_event_sent_again_with_a_new_timestamp_acts_once() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;
    let now = chrono::Utc::now();
    configured(
        &app,
        &manager,
        &start_until(now + chrono::Duration::hours(1)),
    )
    .await;
    let later = now + chrono::Duration::hours(2);

    // The back end's retry sends the same update with a new timestamp, twice.
    let update: Value =
        serde_json::from_slice(&extended_to(later, "2026-11-23T11:10:05Z")).unwrap();
    for sent in [
        "2026-11-23T11:10:05Z",
        "2026-11-23T11:11:05Z",
        "2026-11-23T11:12:05Z",
    ] {
        let mut again = update.clone();
        again["timestamp"] = json!(sent);
        app.post_webhook(&serde_json::to_vec(&again).unwrap()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for sent in ["2026-11-23T10:31:12Z", "2026-11-23T10:32:12Z"] {
        let deleted = body_of("event_deleted.json", &[("timestamp", json!(sent))], &[]);
        app.post_webhook(&deleted).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.settled("103", Duration::from_secs(10)).await;
    assert_eq!(
        manager.calls(),
        vec![
            Call::Configure("103".into()),
            Call::EndChanged("103".into()),
            Call::Release("103".into())
        ]
    );
}

#[tokio::test]
async fn custom_parameters_that_are_not_json_refuse_the_booking_and_tell_its_user() {
    let backend = start_backend().await;
    let manager = RecordingManager::new();
    let endpoints = backend.endpoints();
    let app = spawn_app_with(&vars(&endpoints), manager.clone()).await;
    let start = String::from_utf8(fixture("event_start.json"))
        .unwrap()
        .replace(
            "{\\\"vlan_id\\\":\\\"100\\\",\\\"note\\\":\\\"keep LLDP on\\\"}",
            "{vlan_id: 100",
        );

    let response = app.post_webhook(start.as_bytes()).await;

    assert_eq!(response.status(), 200);
    let reply = json(response).await;
    assert_eq!(reply["status"], "refused", "{reply}");
    let (notifications, _) = backend.wait_for(1).await;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    // Exactly one: once nothing is left to deliver, and a while later, still one.
    let store = webhook::engine::ledger::open(&crate::outbox::cli_config(&app), false)
        .await
        .unwrap();
    let pending = crate::outbox::outbox_when(&*store, false, <[_]>::is_empty).await;
    assert!(pending.is_empty(), "still to deliver: {pending:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let notifications = backend.received.lock().unwrap().notifications.clone();
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let n = &notifications[0];
    assert_eq!(n["type"], "ERROR");
    assert_eq!(n["userId"], "5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13");
    let message = n["message"].as_str().unwrap();
    assert!(
        message.contains("customParameters is not valid JSON"),
        "{message}"
    );
    assert!(manager.calls().is_empty(), "{:?}", manager.calls());
    let (_, status) = app.status("103").await;
    assert_eq!(status["state"], "refused");
}

#[tokio::test]
async fn a_parameter_the_manager_refuses_is_the_users_error_not_the_senders() {
    struct Picky;
    #[async_trait::async_trait]
    impl webhook::manager::ResourceManager for Picky {
        async fn configure(
            &self,
            r: &webhook::contract::reservation::Reservation,
        ) -> Result<webhook::manager::Outcome, webhook::manager::ManagerError> {
            Err(webhook::manager::ManagerError::invalid_parameter(
                "vlan_id",
                format!(
                    "{} is not allowed",
                    r.parameters.get("vlan_id").unwrap_or_default()
                ),
            ))
        }
        async fn release(
            &self,
            _: &webhook::contract::reservation::Reservation,
        ) -> Result<webhook::manager::Outcome, webhook::manager::ManagerError> {
            Ok(webhook::manager::Outcome::new(""))
        }
    }
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let app = spawn_app_with(&vars(&endpoints), std::sync::Arc::new(Picky)).await;

    let response = app.post_webhook(&fixture("event_start.json")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["status"], "refused");
    let (notifications, logs) = backend.wait_for(1).await;
    assert_eq!(notifications[0]["type"], "ERROR");
    assert!(
        notifications[0]["message"]
            .as_str()
            .unwrap()
            .contains("custom parameter vlan_id: 100 is not allowed"),
        "{notifications:?}"
    );
    assert_eq!(logs[0]["success"], true, "{logs:?}");
}

#[tokio::test]
async fn a_batch_configures_the_bookings_of_this_type_and_ignores_the_others() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;

    let response = app.post_webhook(&fixture("batch_start.json")).await;

    assert_eq!(response.status(), 200);
    let reply = json(response).await;
    assert_eq!(reply["results"][0]["eventId"], "104", "{reply}");
    assert_eq!(reply["results"][0]["status"], "configured", "{reply}");
    assert_eq!(reply["results"][1]["eventId"], "105", "{reply}");
    assert_eq!(reply["results"][1]["status"], "ignored", "{reply}");
    assert_eq!(manager.calls(), vec![Call::Configure("104".into())]);
    // User fields come from the top of the batch.
    let r = manager.reservations.lock().unwrap()[0].clone();
    assert_eq!(r.user.username.as_deref(), Some("alice"));
    assert_eq!(r.resource.name, "sw1-port-5");
}

#[tokio::test]
async fn a_nested_event_whose_data_is_a_string_is_acknowledged_and_ignored() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[], manager.clone()).await;
    for event in ["EVENT_DELETED", "EVENT_UPDATED", "RESOURCE_DELETED"] {
        let body = serde_json::to_vec(&json!({
            "eventType": event,
            "timestamp": "2026-11-23T10:31:12Z",
            "webhookId": "7",
            "data": format!("Payload serialization failed due to detached entity. Event type: {event}"),
        }))
        .unwrap();
        let response = app.post_webhook(&body).await;
        assert_eq!(response.status(), 200, "{event}");
        assert_eq!(json(response).await["status"], "ignored", "{event}");
    }
    assert!(manager.calls().is_empty());
}

#[tokio::test]
async fn a_blank_outcome_is_reported_with_a_message_the_back_end_accepts() {
    struct Quiet;
    #[async_trait::async_trait]
    impl webhook::manager::ResourceManager for Quiet {
        async fn configure(
            &self,
            _: &webhook::contract::reservation::Reservation,
        ) -> Result<webhook::manager::Outcome, webhook::manager::ManagerError> {
            Ok(webhook::manager::Outcome::new("  "))
        }
        async fn release(
            &self,
            _: &webhook::contract::reservation::Reservation,
        ) -> Result<webhook::manager::Outcome, webhook::manager::ManagerError> {
            Ok(webhook::manager::Outcome::new(""))
        }
    }
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let app = spawn_app_with(&vars(&endpoints), std::sync::Arc::new(Quiet)).await;
    app.post_webhook(&fixture("event_start.json")).await;
    app.post_webhook(&fixture("event_end.json")).await;
    let (notifications, _) = backend.wait_for(2).await;
    assert_eq!(backend.received.lock().unwrap().refused, 0);
    let messages: Vec<&str> = notifications
        .iter()
        .map(|n| n["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "sw1-port-3 is ready for your booking 103.",
            "Your booking 103 of sw1-port-3 has ended: its access was removed."
        ]
    );
}

#[tokio::test]
async fn reports_are_signed_with_the_secret_their_booking_came_with() {
    // Arrange: webhook 7 has the fixture secret; webhook 8, made to move to a new secret,
    // has another. The service accepts both.
    let old = crate::helpers::fixture_secret();
    let new = "a-new-secret-for-the-new-webhook-8-0123456789";
    let backend = start_backend_for(&[("7", &old), ("8", new)]).await;
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.push(("WEBHOOK_SECRET", new));
    settings.push(("WEBHOOK_PREVIOUS_SECRETS", &old));
    let app = spawn_app_with(&settings, RecordingManager::new()).await;

    // Act: booking 103 arrives under webhook 7 (old secret), booking 104 under 8 (new).
    app.post_webhook(&fixture("event_start.json")).await;
    let under_new = body_of(
        "event_start.json",
        &[
            ("eventId", json!("104")),
            ("resourceId", json!(44)),
            ("webhookId", json!(8)),
        ],
        &[],
    );
    let signature =
        webhook::contract::signature::Keys::new(vec![new.as_bytes().to_vec()]).sign(&under_new);
    app.post_with(&under_new, &[("x-webhook-signature", &signature)])
        .await;

    // Assert: the back end, which checks each report with its webhook's key, took all four.
    let (notifications, logs) = backend.wait_for(2).await;
    assert_eq!(backend.received.lock().unwrap().refused, 0);
    let mut webhooks: Vec<&str> = notifications
        .iter()
        .chain(&logs)
        .map(|r| r["webhookId"].as_str().unwrap())
        .collect();
    webhooks.sort();
    assert_eq!(webhooks, ["7", "7", "8", "8"]);
    let store = webhook::engine::ledger::open(&crate::outbox::cli_config(&app), false)
        .await
        .unwrap();
    let entries = store.outbox_list(true, 10).await.unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.last_status.as_deref() != Some("401 Unauthorized"))
    );
}

#[tokio::test]
async fn the_audit_logs_reply_which_holds_the_webhooks_secret_is_never_kept() {
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let app = spawn_app_with(&vars(&endpoints), RecordingManager::new()).await;
    app.post_webhook(&fixture("event_start.json")).await;
    backend.wait_for(1).await;
    let store = webhook::engine::ledger::open(&crate::outbox::cli_config(&app), false)
        .await
        .unwrap();
    let entries = crate::outbox::outbox_when(&*store, true, |entries| {
        entries.iter().all(|e| e.last_status.is_some()) && entries.len() == 2
    })
    .await;
    let log = entries.iter().find(|e| e.kind == Kind::WebhookLog).unwrap();
    assert_eq!(log.last_status.as_deref(), Some("201 Created"));
    let ledger =
        std::fs::read(webhook::engine::ledger::sqlite::Sqlite::path(&app.data_dir)).unwrap();
    let wal = app.data_dir.join("ledger.db-wal");
    let wal = std::fs::read(wal).unwrap_or_default();
    for bytes in [ledger, wal] {
        assert!(
            !bytes
                .windows(LOG_REPLY_SECRET.len())
                .any(|w| w == LOG_REPLY_SECRET.as_bytes()),
            "the audit log's secret is in the ledger"
        );
    }
}
