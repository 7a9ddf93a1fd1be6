//! The sender's own bodies and signatures (`tests/fixtures/`), and what each must do.

use serde_json::Value;

use crate::helpers::{Call, RecordingManager, fixture, json, signatures, spawn_app};

/// The signature the sender computed for a fixture, as the given field of `signatures.json`.
fn signature_of(file: &str, field: &str) -> String {
    signatures()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["body_file"] == format!("events/{file}"))
        .unwrap_or_else(|| panic!("no signature for {file}"))[field]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Each fixture, replayed in the sender's bytes with its recorded signature, on a fresh app
/// or after the recorded START of booking 103: status, reply status word, and the manager
/// calls made.
#[tokio::test]
async fn every_fixture_gets_the_contracted_reply_and_manager_calls() {
    let configure = |id: &str| vec![Call::Configure(id.into())];
    let calls = |list: &[fn(String) -> Call]| -> Vec<Call> {
        list.iter().map(|call| call("103".into())).collect()
    };
    // (START delivered first, fixture, status, reply status word, calls in order)
    let cases: Vec<(bool, &str, u16, &str, Vec<Call>)> = vec![
        (
            false,
            "event_start.json",
            200,
            "configured",
            configure("103"),
        ),
        (
            false,
            "event_start_minimal.json",
            200,
            "configured",
            configure("105"),
        ),
        // A booking this ledger never configured has nothing to release (decision 0003).
        (false, "event_end.json", 200, "ignored", vec![]),
        (false, "event_deleted.json", 200, "ignored", vec![]),
        (false, "event_start_other_type.json", 200, "ignored", vec![]),
        (false, "event_created.json", 200, "ignored", vec![]),
        (
            false,
            "resource_status_changed.json",
            200,
            "ignored",
            vec![],
        ),
        (false, "test_event.json", 200, "ignored", vec![]),
        (false, "future_event_type.json", 200, "ignored", vec![]),
        // An update of a booking that has not started changes nothing now.
        (false, "event_updated_extended.json", 200, "ignored", vec![]),
        (false, "event_updated_moved.json", 200, "ignored", vec![]),
        // A deleted resource with no booking in progress here releases nothing.
        (false, "resource_deleted.json", 200, "ignored", vec![]),
        // The batched START: booking 104 is a Switch Port, 105 a GPU Server.
        (false, "batch_start.json", 200, "batch", configure("104")),
        // Booking 103 in progress: a new end is told, not reconfigured (12:00 to 14:00).
        (
            true,
            "event_updated_extended.json",
            202,
            "accepted",
            calls(&[Call::Configure, Call::EndChanged]),
        ),
        // Moved from resource 42 to 43: the old one released, then the new one configured.
        (
            true,
            "event_updated_moved.json",
            202,
            "accepted",
            calls(&[Call::Configure, Call::Release, Call::Configure]),
        ),
        // Resource 42 deleted with booking 103 on it: released, with no END to come.
        (
            true,
            "resource_deleted.json",
            200,
            "batch",
            calls(&[Call::Configure, Call::Release]),
        ),
    ];
    for (started, file, code, status, calls) in cases {
        for encoding in ["x_webhook_signature_base64", "hex"] {
            // Arrange
            let manager = RecordingManager::new();
            let app = spawn_app(manager.clone()).await;
            if started {
                let start = "event_start.json";
                let response = app
                    .post_with(
                        &fixture(start),
                        &[("x-webhook-signature", &signature_of(start, encoding))],
                    )
                    .await;
                assert_eq!(json(response).await["status"], "configured", "{file}");
            }
            // Act
            let response = app
                .post_with(
                    &fixture(file),
                    &[("x-webhook-signature", &signature_of(file, encoding))],
                )
                .await;
            // Assert
            assert_eq!(response.status().as_u16(), code, "{file} ({encoding})");
            let body = json(response).await;
            assert_eq!(body["status"], status, "{file}: {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            // A 202's calls follow the reply; the others' are made before it.
            if code == 202 {
                for _ in 0..200 {
                    if manager.calls().len() >= calls.len() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
            }
            assert_eq!(manager.calls(), calls, "{file} ({encoding})");
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn the_start_fixture_reaches_the_manager_as_a_typed_reservation() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;

    let response = app.post_webhook(&fixture("event_start.json")).await;

    assert_eq!(response.status(), 200);
    let r = manager.reservations.lock().unwrap()[0].clone();
    assert_eq!(r.event_id, "103");
    assert_eq!(r.user.id, "5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13");
    assert_eq!(r.user.username.as_deref(), Some("alice"));
    assert_eq!(r.user.email.as_deref(), Some("alice@example.org"));
    assert!(
        r.user
            .ssh_public_key
            .as_deref()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    assert_eq!(r.resource.id, 42);
    assert_eq!(r.resource.name, "sw1-port-3");
    assert_eq!(r.resource.kind, "Switch Port");
    assert_eq!(
        r.site.as_ref().unwrap().name.as_deref(),
        Some("Main campus")
    );
    assert_eq!(r.start.to_rfc3339(), "2026-11-23T10:00:00+00:00");
    assert_eq!(r.end.to_rfc3339(), "2026-11-23T12:00:00+00:00");
    assert_eq!(r.parameters.get("vlan_id").as_deref(), Some("100"));
    assert_eq!(r.parameters.get("note").as_deref(), Some("keep LLDP on"));
    assert_eq!(
        r.parameters.raw(),
        Some("{\"vlan_id\":\"100\",\"note\":\"keep LLDP on\"}")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_booking_arrives_with_the_same_id_and_user_as_its_start() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;

    app.post_webhook(&fixture("event_start.json")).await;
    let response = app.post_webhook(&fixture("event_deleted.json")).await;

    assert_eq!(json(response).await["status"], "released");
    let seen = manager.reservations.lock().unwrap().clone();
    assert_eq!(seen[0].event_id, seen[1].event_id);
    assert_eq!(seen[0].user.id, seen[1].user.id);
    assert_eq!(seen[0].resource.id, seen[1].resource.id);
    assert_eq!(seen[1].resource.kind, "Switch Port");
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_start_configures_once() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;

    let first = json(app.post_webhook(&fixture("event_start.json")).await).await;
    let second = app.post_webhook(&fixture("event_start.json")).await;

    assert_eq!(first["status"], "configured");
    assert_eq!(second.status(), 200);
    let second: Value = json(second).await;
    assert_eq!(second["status"], "duplicate");
    assert_eq!(second["eventId"], "103");
    assert_eq!(manager.calls(), vec![Call::Configure("103".into())]);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_duplicate_starts_configure_once() {
    // Two sender replicas deliver the same START at the same moment while configure is slow.
    let manager = RecordingManager::new();
    manager.delay_each_call(std::time::Duration::from_millis(300));
    let app = spawn_app(manager.clone()).await;

    let body = fixture("event_start.json");
    let (a, b) = tokio::join!(app.post_webhook(&body), app.post_webhook(&body));

    let mut statuses = vec![
        json(a).await["status"].as_str().unwrap().to_owned(),
        json(b).await["status"].as_str().unwrap().to_owned(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["configured", "duplicate"]);
    assert_eq!(manager.calls(), vec![Call::Configure("103".into())]);
    app.stop().await;
}

#[tokio::test]
async fn start_then_end_configures_then_releases_and_a_repeated_end_does_nothing() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;

    app.post_webhook(&fixture("event_start.json")).await;
    let end = json(app.post_webhook(&fixture("event_end.json")).await).await;
    let again = json(app.post_webhook(&fixture("event_end.json")).await).await;
    let deleted = json(app.post_webhook(&fixture("event_deleted.json")).await).await;

    assert_eq!(end["status"], "released");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(deleted["status"], "duplicate");
    assert_eq!(
        manager.calls(),
        vec![Call::Configure("103".into()), Call::Release("103".into())]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_start_arriving_after_its_end_configures_nothing() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;

    let end = json(app.post_webhook(&fixture("event_end.json")).await).await;
    let late = json(app.post_webhook(&fixture("event_start.json")).await).await;

    assert_eq!(end["status"], "ignored");
    assert_eq!(late["status"], "ignored");
    assert!(manager.calls().is_empty(), "{:?}", manager.calls());
    app.stop().await;
}

#[tokio::test]
async fn a_booking_deleted_before_it_started_is_not_released_and_never_configured() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    // The same DELETED, but for a booking whose START was never sent.
    let text = String::from_utf8(fixture("event_deleted.json")).unwrap();
    let future = text.replace(",\"startNotifiedAt\":\"2026-11-23T09:55:00.412Z\"", "");
    assert_ne!(future, text);

    let deleted = json(app.post_webhook(future.as_bytes()).await).await;
    let start = json(app.post_webhook(&fixture("event_start.json")).await).await;

    assert_eq!(deleted["status"], "ignored");
    assert_eq!(start["status"], "ignored");
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_failed_configure_is_a_5xx_with_the_reason_and_a_later_start_tries_again() {
    let manager = RecordingManager::new();
    // One attempt: a transient failure is then final too (retries: tests/api/retries.rs).
    let app = crate::helpers::spawn_app_with(&[("MAX_ATTEMPTS", "1")], manager.clone()).await;

    manager.fail_with(false, "VLAN 100 is not allowed on this switch");
    let permanent = app.post_webhook(&fixture("event_start.json")).await;
    manager.fail_with(true, "the switch did not answer in time");
    let transient = app.post_webhook(&fixture("event_start.json")).await;

    assert_eq!(permanent.status(), 500);
    let body = json(permanent).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["message"],
        "configure failed: VLAN 100 is not allowed on this switch"
    );
    assert_eq!(transient.status(), 503);
    assert_eq!(manager.calls().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_resource_type_matches_whatever_the_case_and_a_configured_type_with_spaces_and_accents_works()
 {
    let manager = RecordingManager::new();
    let app =
        crate::helpers::spawn_app_with(&[("RESOURCE_TYPE", "  switch PORT ")], manager.clone())
            .await;
    let start = json(app.post_webhook(&fixture("event_start.json")).await).await;
    assert_eq!(start["status"], "configured");
    app.stop().await;

    let manager = RecordingManager::new();
    let app = crate::helpers::spawn_app_with(
        &[("RESOURCE_TYPE", "Salle de réunion « B »")],
        manager.clone(),
    )
    .await;
    let text = String::from_utf8(fixture("event_start.json")).unwrap();
    let body = text.replace("\"Switch Port\"", "\"Salle de Réunion « B »\"");
    let start = json(app.post_webhook(body.as_bytes()).await).await;
    let other = json(app.post_webhook(&fixture("event_start.json")).await).await;
    assert_eq!(start["status"], "configured");
    assert_eq!(other["status"], "ignored");
    assert_eq!(
        manager.reservations.lock().unwrap()[0].resource.kind,
        "Salle de Réunion « B »"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_public_github_vector_and_the_decoded_secret_case_verify() {
    // GitHub's documented vector: secret "It's a Secret to Everybody", body "Hello, World!".
    // The vector verifies; its 26-byte secret is too short for the service to start with.
    let v = signatures();
    let public = &v["public_vector"];
    let secret = public["secret"].as_str().unwrap();
    let mut headers = poem::http::HeaderMap::new();
    let header = format!("sha256={}", public["sha256_hex"].as_str().unwrap());
    headers.insert("x-hub-signature-256", header.parse().unwrap());
    let keys = webhook::contract::signature::Keys::new(vec![secret.as_bytes().to_vec()]);
    assert!(
        keys.verify(&headers, public["body"].as_str().unwrap().as_bytes())
            .is_ok()
    );
    let refused = webhook::testing::config([("WEBHOOK_SECRET", secret)])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("WEBHOOK_SECRET is 26 bytes"), "{refused}");

    // Agent registries decode a Base64 secret first: a configuration choice.
    let case = &v["decoded_secret_case"];
    let body = fixture("event_start.json");
    let header = case["x_hub_signature_256"].as_str().unwrap();
    for (encoding, expected) in [("base64", 200), ("utf8", 401)] {
        let manager = RecordingManager::new();
        let app = crate::helpers::spawn_app_with(
            &[("WEBHOOK_SECRET_ENCODING", encoding)],
            manager.clone(),
        )
        .await;
        let response = app
            .post_with(&body, &[("x-hub-signature-256", header)])
            .await;
        assert_eq!(
            response.status(),
            expected,
            "WEBHOOK_SECRET_ENCODING={encoding}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_rotated_secret_is_still_accepted_alongside_the_new_one() {
    let manager = RecordingManager::new();
    let old = crate::helpers::fixture_secret();
    let app = crate::helpers::spawn_app_with(
        &[
            (
                "WEBHOOK_SECRET",
                "the-new-secret-issued-by-the-reservation-system",
            ),
            ("WEBHOOK_PREVIOUS_SECRETS", &old),
        ],
        manager.clone(),
    )
    .await;
    let sig = signature_of("event_start.json", "x_webhook_signature_base64");
    let response = app
        .post_with(
            &fixture("event_start.json"),
            &[("x-webhook-signature", &sig)],
        )
        .await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}
