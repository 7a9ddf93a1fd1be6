//! `POST /waldur`: Waldur's marketplace events (`tests/fixtures/events/waldur_order_created.json`
//! and variants of it) drive the same manager through the same ledger; who may send them.

use serde_json::Value;

use crate::helpers::{Call, RecordingManager, TestApp, fixture, json, spawn_app, spawn_app_with};

const TOKEN: &str = "waldur-token";
const BOOKING: &str = "waldur-4f7a9c";

/// The fixture with another `event_type` and extra context fields (`(key, JSON value)`).
fn waldur_event(event_type: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::from_utf8(fixture("waldur_order_created.json")).unwrap();
    text = text.replace(
        "\"event_type\":\"marketplace_order_created\"",
        &format!("\"event_type\":\"{event_type}\""),
    );
    for (key, value) in extra {
        let field = format!("\"{key}\":");
        text = match text.find(&field) {
            // Replace the fixture's value: up to the next `,"` or the end of the context.
            Some(at) => {
                let start = at + field.len();
                let end = start
                    + text[start..]
                        .find([',', '}'])
                        .expect("the context goes on after the value");
                format!("{}{value}{}", &text[..start], &text[end..])
            }
            None => text.replace(
                "\"user_email\":\"alice@example.org\"",
                &format!("\"user_email\":\"alice@example.org\",{field}{value}"),
            ),
        };
    }
    text.into_bytes()
}

async fn waldur_app(manager: std::sync::Arc<RecordingManager>) -> TestApp {
    spawn_app_with(&[("WALDUR_TOKEN", TOKEN)], manager).await
}

async fn post(app: &TestApp, body: &[u8]) -> (u16, Value) {
    let response = app.post_waldur(body, &[("x-webhook-token", TOKEN)]).await;
    let code = response.status().as_u16();
    (code, json(response).await)
}

#[tokio::test]
async fn the_fixture_and_its_variants_get_the_contracted_replies_and_manager_calls() {
    let configure = vec![Call::Configure(BOOKING.into())];
    let cases: Vec<(&str, Vec<u8>, &str, Vec<Call>)> = vec![
        (
            "created",
            fixture("waldur_order_created.json"),
            "ignored",
            vec![],
        ),
        (
            "completed",
            waldur_event("marketplace_order_completed", &[]),
            "configured",
            configure.clone(),
        ),
        (
            "approved (not listed by default)",
            waldur_event("marketplace_order_approved", &[]),
            "ignored",
            vec![],
        ),
        (
            "terminated before it was configured",
            waldur_event("marketplace_resource_terminate_succeeded", &[]),
            "ignored",
            vec![],
        ),
        (
            "another offering",
            waldur_event(
                "marketplace_order_completed",
                &[("offering_name", "\"GPU Node\"")],
            ),
            "ignored",
            vec![],
        ),
        (
            "an update order",
            waldur_event(
                "marketplace_order_completed",
                &[("order_type", "\"Update\"")],
            ),
            "ignored",
            vec![],
        ),
    ];
    for (name, body, status, calls) in cases {
        // Arrange
        let manager = RecordingManager::new();
        let app = waldur_app(manager.clone()).await;
        // Act
        let (code, reply) = post(&app, &body).await;
        // Assert
        assert_eq!(code, 200, "{name}: {reply}");
        assert_eq!(reply["status"], status, "{name}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(manager.calls(), calls, "{name}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_completed_order_reaches_the_manager_as_a_reservation() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;

    // Act
    let (code, reply) = post(&app, &waldur_event("marketplace_order_completed", &[])).await;

    // Assert
    assert_eq!((code, reply["eventId"].as_str()), (200, Some(BOOKING)));
    let r = manager.reservations.lock().unwrap()[0].clone();
    assert_eq!(r.event_id, BOOKING, "no resource_uuid: the order's uuid");
    assert_eq!(r.user.id, "u-77");
    assert_eq!(r.user.email.as_deref(), Some("alice@example.org"));
    assert_eq!(
        r.resource.name, "Switch Port",
        "no resource_name: the offering's"
    );
    assert_eq!(r.resource.kind, "Switch Port");
    assert!(r.resource.id > 0);
    assert_eq!(r.title.as_deref(), Some("Lab VLAN"));
    assert_eq!(
        r.description.as_deref(),
        Some("Marketplace order Lab VLAN has been created.")
    );
    assert_eq!(r.start.to_rfc3339(), "2026-11-23T10:00:00+00:00");
    assert_eq!(r.end, webhook::waldur::open_end());
    assert_eq!(r.parameters.get("project_name").as_deref(), Some("Thesis"));
    assert_eq!(r.parameters.get("plan_name").as_deref(), Some("Hourly"));
    app.stop().await;
}

#[tokio::test]
async fn a_resource_uuid_keys_the_booking_and_names_come_from_the_resource() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    let extra = [
        ("resource_uuid", "\"r-5\""),
        ("resource_name", "\"lab-vlan-5\""),
        ("user_uuid", "null"),
    ];

    // Act
    let (_, reply) = post(&app, &waldur_event("marketplace_order_completed", &extra)).await;

    // Assert
    assert_eq!(reply["eventId"], "waldur-r-5");
    let r = manager.reservations.lock().unwrap()[0].clone();
    assert_eq!(r.resource.name, "lab-vlan-5");
    assert_eq!(r.user.id, "alice@example.org", "no user_uuid: the e-mail");
    app.stop().await;
}

#[tokio::test]
async fn an_order_configures_once_and_its_termination_releases_once() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    let completed = waldur_event("marketplace_order_completed", &[]);

    // Act
    let first = post(&app, &completed).await.1;
    let again = post(&app, &completed).await.1;
    let terminated = post(
        &app,
        &waldur_event("marketplace_resource_terminate_succeeded", &[]),
    )
    .await
    .1;
    let cancelled = post(&app, &waldur_event("marketplace_order_terminated", &[]))
        .await
        .1;

    // Assert
    assert_eq!(first["status"], "configured");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(terminated["status"], "released");
    assert_eq!(cancelled["status"], "duplicate");
    assert_eq!(
        manager.calls(),
        [
            Call::Configure(BOOKING.into()),
            Call::Release(BOOKING.into())
        ]
    );
    let (code, status) = app.status(BOOKING).await;
    assert_eq!((code, status["state"].as_str()), (200, Some("released")));
    app.stop().await;
}

#[tokio::test]
async fn a_completed_termination_order_releases_and_a_cancelled_one_does_not() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    let of_type = |event_type, order_type| {
        waldur_event(
            event_type,
            &[("resource_uuid", "\"r-9\""), ("order_type", order_type)],
        )
    };

    // Act
    let created = post(&app, &of_type("marketplace_order_completed", "\"Create\"")).await;
    let cancelled = post(
        &app,
        &of_type("marketplace_order_terminated", "\"Terminate\""),
    )
    .await;
    let terminated = post(
        &app,
        &of_type("marketplace_order_completed", "\"Terminate\""),
    )
    .await;

    // Assert
    assert_eq!(created.1["status"], "configured");
    assert_eq!(
        cancelled.1["status"], "ignored",
        "a cancelled termination keeps it"
    );
    assert_eq!(terminated.1["status"], "released");
    assert_eq!(
        manager.calls(),
        [
            Call::Configure("waldur-r-9".into()),
            Call::Release("waldur-r-9".into())
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_event_lists_and_the_offering_filter_are_configurable() {
    // Arrange
    let manager = RecordingManager::new();
    let app = spawn_app_with(
        &[
            ("WALDUR_TOKEN", TOKEN),
            ("WALDUR_CONFIGURE_EVENTS", "marketplace_order_approved"),
            (
                "WALDUR_RELEASE_EVENTS",
                "marketplace_order_rejected, marketplace_order_failed",
            ),
            ("WALDUR_RESOURCE_TYPE", "marketplace.basic"),
        ],
        manager.clone(),
    )
    .await;
    let typed =
        |event_type| waldur_event(event_type, &[("offering_type", "\"Marketplace.Basic\"")]);

    // Act
    let completed = post(&app, &typed("marketplace_order_completed")).await.1;
    let approved = post(&app, &typed("marketplace_order_approved")).await.1;
    let failed = post(&app, &typed("marketplace_order_failed")).await.1;
    let untyped = post(&app, &waldur_event("marketplace_order_approved", &[]))
        .await
        .1;

    // Assert
    assert_eq!(completed["status"], "ignored");
    assert_eq!(approved["status"], "configured");
    assert_eq!(failed["status"], "released");
    assert_eq!(
        untyped["status"], "ignored",
        "offering Switch Port: not ours"
    );
    assert_eq!(
        manager.calls(),
        [
            Call::Configure(BOOKING.into()),
            Call::Release(BOOKING.into())
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn waldur_bookings_are_not_reported_back_to_the_reservation_system() {
    // Arrange: a back end that records reports; the reservation system's booking is reported.
    let backend = crate::report::start_backend().await;
    let mut vars: Vec<(&str, &str)> = vec![("WALDUR_TOKEN", TOKEN)];
    let endpoints = backend.endpoints();
    vars.extend(endpoints.iter().map(|(k, v)| (*k, v.as_str())));
    let manager = RecordingManager::new();
    let app = spawn_app_with(&vars, manager.clone()).await;

    // Act
    post(&app, &waldur_event("marketplace_order_completed", &[])).await;
    app.post_webhook(&fixture("event_start.json")).await;

    // Assert
    let (notifications, logs) = backend.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let counts = {
        let r = backend.received.lock().unwrap();
        (r.notifications.len(), r.logs.len())
    };
    assert_eq!(counts, (1, 1));
    assert_eq!(notifications[0]["eventId"], "103");
    assert_eq!(logs[0]["eventType"], "EVENT_START");
    assert_eq!(manager.calls().len(), 2);
    app.stop().await;
}

type Case<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    u16,
    &'a str,
);

#[tokio::test]
async fn who_may_post_is_decided_by_address_and_token_before_the_body_is_read() {
    let body = waldur_event("marketplace_order_completed", &[]);
    let token = ("x-webhook-token", TOKEN);
    let cases: Vec<Case> = vec![
        (
            "missing token",
            vec![("WALDUR_TOKEN", TOKEN)],
            vec![],
            401,
            "missing token: send X-Webhook-Token",
        ),
        (
            "wrong token",
            vec![("WALDUR_TOKEN", TOKEN)],
            vec![("x-webhook-token", "guess")],
            401,
            "X-Webhook-Token does not match WALDUR_TOKEN",
        ),
        (
            "address outside the allow-list",
            vec![("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8")],
            vec![],
            403,
            "client address 127.0.0.1 is not in WALDUR_ALLOWED_CIDRS",
        ),
        (
            "the right token from outside the allow-list",
            vec![
                ("WALDUR_TOKEN", TOKEN),
                ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
            ],
            vec![token],
            403,
            "client address 127.0.0.1",
        ),
        (
            "spoofed X-Forwarded-For from an untrusted peer",
            vec![("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8")],
            vec![("x-forwarded-for", "10.1.2.3")],
            403,
            "client address 127.0.0.1",
        ),
        (
            "a spoofed entry left of what the trusted proxy saw",
            vec![
                ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
                ("WALDUR_TRUSTED_PROXIES", "127.0.0.1"),
            ],
            vec![("x-forwarded-for", "10.1.2.3, 192.0.2.7")],
            403,
            "client address 192.0.2.7",
        ),
        (
            "an unreadable X-Forwarded-For from a trusted proxy",
            vec![
                ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
                ("WALDUR_TRUSTED_PROXIES", "127.0.0.0/8"),
            ],
            vec![("x-forwarded-for", "somewhere")],
            403,
            "X-Forwarded-For: \"somewhere\" is not an IP address",
        ),
        (
            "the trusted proxy is honoured",
            vec![
                ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
                ("WALDUR_TRUSTED_PROXIES", "127.0.0.1/32"),
            ],
            vec![("x-forwarded-for", "10.1.2.3")],
            200,
            "configured",
        ),
        (
            "through a chain of trusted proxies",
            vec![
                ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
                ("WALDUR_TRUSTED_PROXIES", "127.0.0.1, 10.200.0.0/16"),
            ],
            vec![("x-forwarded-for", "192.0.2.7, 10.1.2.3, 10.200.0.9")],
            200,
            "configured",
        ),
        (
            "token and allow-list both satisfied",
            vec![
                ("WALDUR_TOKEN", TOKEN),
                ("WALDUR_ALLOWED_CIDRS", "127.0.0.1"),
            ],
            vec![token],
            200,
            "configured",
        ),
    ];
    for (name, vars, headers, code, message) in cases {
        // Arrange
        let manager = RecordingManager::new();
        let app = spawn_app_with(&vars, manager.clone()).await;
        // Act
        let response = app.post_waldur(&body, &headers).await;
        // Assert
        assert_eq!(response.status().as_u16(), code, "{name}");
        let reply = json(response).await;
        let text = format!(
            "{} {}",
            reply["status"].as_str().unwrap_or_default(),
            reply["message"].as_str().unwrap_or_default()
        );
        assert!(text.contains(message), "{name}: {reply}");
        let expected_calls = usize::from(code == 200);
        assert_eq!(manager.calls().len(), expected_calls, "{name}");
        app.stop().await;
    }
}

#[tokio::test]
async fn the_endpoint_does_not_exist_unless_configured() {
    // Arrange
    let off = spawn_app(RecordingManager::new()).await;
    let on = waldur_app(RecordingManager::new()).await;
    let body = waldur_event("marketplace_order_completed", &[]);

    // Act
    let disabled = off.post_waldur(&body, &[("x-webhook-token", TOKEN)]).await;
    let wrong_method = on.get("/waldur").await;

    // Assert
    assert_eq!(disabled.status(), 404);
    assert_eq!(wrong_method.status(), 405);
    off.stop().await;
    on.stop().await;
}

#[tokio::test]
async fn malformed_waldur_bodies_are_refused_with_400_naming_the_problem() {
    // Arrange
    let manager = RecordingManager::new();
    let app = spawn_app_with(
        &[("WALDUR_TOKEN", TOKEN), ("MAX_BODY_BYTES", "2048")],
        manager.clone(),
    )
    .await;
    let completed = |extra: &[(&str, &str)]| waldur_event("marketplace_order_completed", extra);
    let without = |key: &str| {
        let text = String::from_utf8(completed(&[])).unwrap();
        let start = text.find(&format!("\"{key}\":")).unwrap();
        let end = start + text[start..].find(',').unwrap() + 1;
        format!("{}{}", &text[..start], &text[end..]).into_bytes()
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (vec![], 400, "body is empty"),
        (
            b"not json".to_vec(),
            400,
            "set the Waldur web hook's content type to JSON",
        ),
        (
            b"created=2026-11-23&event_type=marketplace_order_completed".to_vec(),
            400,
            "body is not valid JSON",
        ),
        (
            b"[1]".to_vec(),
            400,
            "body must be a JSON object, got an array",
        ),
        (b"{}".to_vec(), 400, "missing field event_type"),
        (
            br#"{"event_type":5}"#.to_vec(),
            400,
            "field event_type: expected a non-empty string, got a number",
        ),
        (
            br#"{"event_type":"marketplace_order_completed"}"#.to_vec(),
            400,
            "missing field context",
        ),
        (
            br#"{"event_type":"marketplace_order_completed","context":"x"}"#.to_vec(),
            400,
            "field context: expected an object, got a string",
        ),
        (
            without("offering_name"),
            400,
            "missing field context.offering_name (or context.offering_type)",
        ),
        (
            without("order_uuid"),
            400,
            "missing field context.resource_uuid (or context.order_uuid)",
        ),
        (
            completed(&[("user_uuid", "null"), ("user_email", "\"\"")]),
            400,
            "missing field context.user_uuid (or context.user_email)",
        ),
        (
            completed(&[("user_uuid", "77")]),
            400,
            "field context.user_uuid: expected a string, got a number",
        ),
        (
            String::from_utf8(completed(&[]))
                .unwrap()
                .replace("2026-11-23T10:00:00.000000+00:00", "yesterday")
                .into_bytes(),
            400,
            "field created: expected an RFC 3339 date and time",
        ),
        (
            format!(r#"{{"event_type":"x","pad":"{}"}}"#, "x".repeat(4096)).into_bytes(),
            413,
            "body exceeds 2048 bytes",
        ),
    ];
    for (body, code, message) in cases {
        // Act
        let response = app.post_waldur(&body, &[("x-webhook-token", TOKEN)]).await;
        // Assert
        assert_eq!(
            response.status().as_u16(),
            code,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let reply = json(response).await;
        let text = reply["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{text:?} does not contain {message:?}"
        );
    }
    assert!(manager.calls().is_empty(), "{:?}", manager.calls());
    app.stop().await;
}
