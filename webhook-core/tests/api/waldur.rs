//! `POST /waldur`: Waldur's marketplace events, as Waldur really sends them
//! (`tests/fixtures/events/waldur_order_completed.json`,
//! `waldur_resource_terminate_succeeded.json` and variants made here), drive the same
//! manager through the same ledger; who may send them.

use serde_json::{Value, json};

use crate::helpers::{Call, RecordingManager, TestApp, fixture, json, spawn_app, spawn_app_with};

const TOKEN: &str = "waldur-token";
/// `waldur-` + the fixtures' `resource_uuid`.
const BOOKING: &str = "waldur-9f8e7d6c5b4a49382716f5e4d3c2b1a0";
const COMPLETED: &str = "waldur_order_completed.json";
const TERMINATED: &str = "waldur_resource_terminate_succeeded.json";

/// A fixture as JSON, to make variants of.
fn event(file: &str) -> Value {
    serde_json::from_slice(&fixture(file)).unwrap()
}

/// The completed order with its type and event type changed.
fn order(event_type: &str, kind: &str) -> Value {
    let mut e = event(COMPLETED);
    e["event_type"] = json!(event_type);
    e["context"]["order_get_type_display"] = json!(kind);
    e["message"] = json!(format!(
        "Marketplace order for resource thesis-vlan has been completed. Type: {kind}"
    ));
    e
}

/// The resource event Waldur sends after a create order completes.
fn resource_created() -> Value {
    let mut e = event(TERMINATED);
    e["event_type"] = json!("marketplace_resource_create_succeeded");
    e["message"] = json!("Resource thesis-vlan has been created.");
    e["context"]["resource_get_state_display"] = json!("OK");
    e
}

fn bytes(e: &Value) -> Vec<u8> {
    serde_json::to_vec(e).unwrap()
}

/// The settings of every test app here, plus `extra`: the result is known when the reply
/// comes, whatever the default budget.
async fn waldur_app_with(
    extra: &[(&str, &str)],
    manager: std::sync::Arc<RecordingManager>,
) -> TestApp {
    let mut vars = vec![("WALDUR_TOKEN", TOKEN), ("PROCESSING_BUDGET", "5s")];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars, manager).await
}

async fn waldur_app(manager: std::sync::Arc<RecordingManager>) -> TestApp {
    waldur_app_with(&[], manager).await
}

/// Posts as Waldur does: JSON, the token in the hook's URL, no other header.
async fn post(app: &TestApp, body: &[u8]) -> (u16, Value) {
    let response = app.post_waldur(body, TOKEN).await;
    let code = response.status().as_u16();
    (code, json(response).await)
}

async fn post_json(app: &TestApp, e: &Value) -> (u16, Value) {
    post(app, &bytes(e)).await
}

#[tokio::test]
async fn a_resource_is_configured_and_released_once_though_waldur_says_each_twice() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;

    // Act: the order completes, then the resource is created; the termination order
    // completes, then the resource is terminated.
    let completed = post(&app, &fixture(COMPLETED)).await;
    let created = post_json(&app, &resource_created()).await;
    let terminate = post_json(&app, &order("marketplace_order_completed", "Terminate")).await;
    let terminated = post(&app, &fixture(TERMINATED)).await;

    // Assert
    let statuses = [&completed, &created, &terminate, &terminated]
        .map(|(code, reply)| (*code, reply["status"].as_str().unwrap().to_owned()));
    assert_eq!(
        statuses,
        [
            (200, "configured".into()),
            (200, "duplicate".into()),
            (200, "released".into()),
            (200, "duplicate".into()),
        ],
        "{completed:?} {created:?} {terminate:?} {terminated:?}"
    );
    assert_eq!(completed.1["eventId"], BOOKING);
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
async fn a_completed_order_reaches_the_manager_with_the_buyer_and_the_form_values() {
    // Arrange: an approver's request caused the event; the buyer is still the buyer.
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    let mut approved = event(COMPLETED);
    approved["context"]["user_uuid"] = json!("abababababababababababababababab");
    approved["context"]["user_username"] = json!("approver");

    // Act
    let (code, reply) = post_json(&app, &approved).await;

    // Assert
    assert_eq!((code, reply["status"].as_str()), (200, Some("configured")));
    let r = manager.reservations.lock().unwrap()[0].clone();
    assert_eq!(r.event_id, BOOKING);
    assert_eq!(r.user.id, "e5e5e5e5f6f6f6f6a7a7a7a7b8b8b8b8");
    assert_eq!(r.user.username.as_deref(), Some("alice"));
    assert_eq!(r.user.email, None);
    assert_eq!(r.resource.name, "thesis-vlan");
    assert_eq!(r.resource.kind, "Switch Port");
    assert!(r.resource.id > 0);
    assert_eq!(r.title.as_deref(), Some("thesis-vlan"));
    assert_eq!(r.start.to_rfc3339(), "2026-11-23T10:00:03.150227+00:00");
    assert_eq!(r.end, webhook::http::waldur::open_end());
    assert_eq!(r.parameters.get("vlan_id").as_deref(), Some("100"));
    assert_eq!(
        r.parameters.get("description").as_deref(),
        Some("VLAN for the lab testbed")
    );
    assert_eq!(r.parameters.get("project_name").as_deref(), Some("Thesis"));
    assert_eq!(r.parameters.get("project_end_date"), None, "\"None\"");
    assert_eq!(
        r.parameters.get_json("created_by_is_staff"),
        Some(&json!(false))
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_buyer_the_requester_in_user_keys_is_the_user() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    let mut by_agent = event(COMPLETED);
    let context = by_agent["context"].as_object_mut().unwrap();
    context.retain(|k, _| !k.starts_with("created_by_"));
    context.insert(
        "user_uuid".into(),
        json!("cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"),
    );
    context.insert("user_username".into(), json!("agent"));

    // Act
    let (code, reply) = post_json(&app, &by_agent).await;

    // Assert
    assert_eq!((code, reply["status"].as_str()), (200, Some("configured")));
    let r = manager.reservations.lock().unwrap()[0].clone();
    assert_eq!(r.user.id, "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    assert_eq!(r.user.username.as_deref(), Some("agent"));
    app.stop().await;
}

#[tokio::test]
async fn a_termination_from_background_work_releases_without_any_user() {
    // Arrange: the fixture has no user_* keys (no API request caused it).
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    assert!(
        !String::from_utf8(fixture(TERMINATED))
            .unwrap()
            .contains("user_")
    );
    post(&app, &fixture(COMPLETED)).await;

    // Act
    let (code, reply) = post(&app, &fixture(TERMINATED)).await;

    // Assert
    assert_eq!((code, reply["status"].as_str()), (200, Some("released")));
    assert_eq!(manager.calls().last(), Some(&Call::Release(BOOKING.into())));
    app.stop().await;
}

#[tokio::test]
async fn a_termination_of_a_resource_never_configured_is_acknowledged() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;

    // Act
    let (code, reply) = post(&app, &fixture(TERMINATED)).await;

    // Assert
    assert_eq!((code, reply["status"].as_str()), (200, Some("ignored")));
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("never configured: nothing to release"),
        "{reply}"
    );
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_or_an_update_order_leaves_a_live_resource_alone() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    post(&app, &fixture(COMPLETED)).await;

    // Act
    let replies = [
        order("marketplace_order_terminated", "Update"),
        order("marketplace_order_terminated", "Terminate"),
        order("marketplace_order_completed", "Update"),
    ];
    let mut got = vec![];
    for e in &replies {
        got.push(post_json(&app, e).await);
    }

    // Assert
    for (code, reply) in &got {
        assert_eq!((*code, reply["status"].as_str()), (200, Some("ignored")));
    }
    assert!(
        got[0].1["message"].as_str().unwrap().contains("cancelled"),
        "{}",
        got[0].1
    );
    assert!(
        got[2].1["message"]
            .as_str()
            .unwrap()
            .contains("of type \"Update\" needs no action"),
        "{}",
        got[2].1
    );
    assert_eq!(manager.calls(), [Call::Configure(BOOKING.into())]);
    let (_, status) = app.status(BOOKING).await;
    assert_eq!(status["state"], "active");
    app.stop().await;
}

#[tokio::test]
async fn the_order_type_is_also_read_from_the_newer_type_key() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    post(&app, &fixture(COMPLETED)).await;
    let mut terminate = event(COMPLETED);
    let context = terminate["context"].as_object_mut().unwrap();
    context.remove("order_get_type_display");
    context.insert("type".into(), json!("Terminate"));

    // Act
    let (code, reply) = post_json(&app, &terminate).await;

    // Assert
    assert_eq!((code, reply["status"].as_str()), (200, Some("released")));
    app.stop().await;
}

#[tokio::test]
async fn an_order_without_a_resource_is_acknowledged_and_ignored_saying_why() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    let mut absent = event(COMPLETED);
    absent["context"]
        .as_object_mut()
        .unwrap()
        .remove("resource_uuid");
    let mut none = event(COMPLETED);
    none["context"]["resource_uuid"] = json!("None");

    for e in [absent, none] {
        // Act
        let (code, reply) = post_json(&app, &e).await;
        // Assert
        assert_eq!((code, reply["status"].as_str()), (200, Some("ignored")));
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("names no resource (resource_uuid)"),
            "{reply}"
        );
    }
    assert!(manager.calls().is_empty());
    app.stop().await;
}

/// The body `requests.post(url, data=payload)` sends: a dict value becomes its keys.
fn form_encoded(e: &Value) -> String {
    let mut pairs = vec![];
    for key in ["created", "message", "context", "event_type"] {
        match &e[key] {
            Value::Object(map) => pairs.extend(map.keys().map(|k| format!("{key}={k}"))),
            Value::String(s) => pairs.push(format!("{key}={}", s.replace(' ', "+"))),
            other => pairs.push(format!("{key}={other}")),
        }
    }
    pairs.join("&").replace(':', "%3A")
}

#[tokio::test]
async fn a_form_encoded_event_is_acknowledged_saying_that_it_lost_its_context() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app(manager.clone()).await;
    let body = form_encoded(&event(COMPLETED));

    // Act
    let response = app
        .client
        .post(format!("{}/waldur?token={TOKEN}", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status(), 200);
    let reply = json(response).await;
    assert_eq!(reply["status"], "ignored");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("set the web hook's content type to JSON"),
        "{reply}"
    );
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_failed_call_is_answered_2xx_and_the_next_event_tries_again() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app_with(
        &[("RETRY_BACKOFF", "50ms"), ("MAX_ATTEMPTS", "2")],
        manager.clone(),
    )
    .await;
    manager.fail_next(1, false, "VLAN 100 is taken");

    // Act
    let failed = post(&app, &fixture(COMPLETED)).await;
    let retried = post_json(&app, &resource_created()).await;
    manager.fail_with(true, "the switch did not answer");
    let transient = post(&app, &fixture(TERMINATED)).await;

    // Assert
    assert_eq!(
        (failed.0, failed.1["status"].as_str()),
        (202, Some("failed"))
    );
    assert!(
        failed.1["message"]
            .as_str()
            .unwrap()
            .contains("VLAN 100 is taken")
    );
    assert_eq!(retried.1["status"], "configured", "{:?}", retried.1);
    assert_eq!(transient.0, 202, "{:?}", transient.1);
    assert!(
        ["failed", "accepted", "in_progress"].contains(&transient.1["status"].as_str().unwrap()),
        "{:?}",
        transient.1
    );
    app.stop().await;
}

#[tokio::test]
async fn the_offering_is_matched_by_name_or_uuid_and_the_lists_are_configurable() {
    // Arrange: the owner names the offering by its UUID, written with dashes.
    let manager = RecordingManager::new();
    let app = waldur_app_with(
        &[
            (
                "WALDUR_RESOURCE_TYPE",
                "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9",
            ),
            ("WALDUR_CONFIGURE_EVENTS", "marketplace_order_approved"),
            ("WALDUR_RELEASE_EVENTS", "marketplace_order_failed"),
        ],
        manager.clone(),
    )
    .await;
    let mut renamed = order("marketplace_order_approved", "Create");
    renamed["context"]["offering_name"] = json!("Lab VLAN (new name)");
    let mut other = order("marketplace_order_approved", "Create");
    other["context"]["offering_uuid"] = json!("ffffffffffffffffffffffffffffffff");
    other["context"]["offering_name"] = json!("GPU Node");

    // Act
    let completed = post(&app, &fixture(COMPLETED)).await.1;
    let not_ours = post_json(&app, &other).await.1;
    let approved = post_json(&app, &renamed).await.1;
    let failed = post_json(&app, &order("marketplace_order_failed", "Create"))
        .await
        .1;

    // Assert
    assert_eq!(completed["status"], "ignored", "not listed here");
    let offered = manager.events();
    assert_eq!(
        (offered[0].event_type.as_str(), offered[0].ours),
        ("marketplace_order_completed", Some(true)),
        "the hook knows the offering by its UUID too"
    );
    assert!(
        not_ours["message"]
            .as_str()
            .unwrap()
            .contains("offering \"GPU Node\" is not handled"),
        "{not_ours}"
    );
    assert_eq!(approved["status"], "configured");
    assert_eq!(failed["status"], "released");
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
    let backend = crate::helpers::start_backend().await;
    let mut vars: Vec<(&str, &str)> = vec![];
    let endpoints = backend.endpoints();
    vars.extend(endpoints.iter().map(|(k, v)| (*k, v.as_str())));
    let manager = RecordingManager::new();
    let app = waldur_app_with(&vars, manager.clone()).await;

    // Act
    post(&app, &fixture(COMPLETED)).await;
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
    &'a str,
    Vec<(&'a str, &'a str)>,
    u16,
    &'a str,
);

#[tokio::test]
async fn who_may_post_is_decided_by_address_and_token_before_the_body_is_read() {
    let body = fixture(COMPLETED);
    let with_token = "/waldur?token=waldur-token";
    let proxied = vec![
        ("WALDUR_TOKEN", TOKEN),
        ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
        ("WALDUR_TRUSTED_PROXIES", "127.0.0.1"),
    ];
    let cases: Vec<Case> = vec![
        (
            "the token in the hook's URL",
            vec![("WALDUR_TOKEN", TOKEN)],
            with_token,
            vec![],
            200,
            "configured",
        ),
        (
            "a percent-encoded token among other parameters",
            vec![("WALDUR_TOKEN", "a/b c")],
            "/waldur?hook=1&token=a%2Fb%20c",
            vec![],
            200,
            "configured",
        ),
        (
            "a Base64 token pasted into the URL as it is",
            vec![("WALDUR_TOKEN", "q+Zx/9w==")],
            "/waldur?token=q+Zx/9w==",
            vec![],
            200,
            "configured",
        ),
        (
            "a proxy that adds the token as a header",
            vec![("WALDUR_TOKEN", TOKEN)],
            "/waldur",
            vec![("x-webhook-token", TOKEN)],
            200,
            "configured",
        ),
        (
            "missing token",
            vec![("WALDUR_TOKEN", TOKEN)],
            "/waldur",
            vec![],
            401,
            "missing token: add ?token=<WALDUR_TOKEN> to the web hook's URL",
        ),
        (
            "wrong token",
            vec![("WALDUR_TOKEN", TOKEN)],
            "/waldur?token=guess",
            vec![],
            401,
            "the token does not match WALDUR_TOKEN",
        ),
        (
            "address outside the allow-list",
            vec![("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8")],
            "/waldur",
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
            with_token,
            vec![],
            403,
            "client address 127.0.0.1",
        ),
        (
            "spoofed X-Forwarded-For from an untrusted peer",
            vec![("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8")],
            "/waldur",
            vec![("x-forwarded-for", "10.1.2.3")],
            403,
            "client address 127.0.0.1",
        ),
        (
            "an allowed address forwarded by a trusted proxy, without the token",
            proxied.clone(),
            "/waldur",
            vec![("x-forwarded-for", "10.1.2.3")],
            401,
            "missing token",
        ),
        (
            "a spoofed entry left of what the trusted proxy saw",
            proxied.clone(),
            with_token,
            vec![("x-forwarded-for", "10.1.2.3, 192.0.2.7")],
            403,
            "client address 192.0.2.7",
        ),
        (
            "an unreadable X-Forwarded-For from a trusted proxy",
            proxied.clone(),
            with_token,
            vec![("x-forwarded-for", "somewhere")],
            403,
            "X-Forwarded-For: \"somewhere\" is not an IP address",
        ),
        (
            "the trusted proxy and the token",
            proxied.clone(),
            with_token,
            vec![("x-forwarded-for", "10.1.2.3")],
            200,
            "configured",
        ),
        (
            "through a chain of trusted proxies",
            vec![
                ("WALDUR_TOKEN", TOKEN),
                ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
                ("WALDUR_TRUSTED_PROXIES", "127.0.0.1, 10.200.0.0/24"),
            ],
            with_token,
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
            with_token,
            vec![],
            200,
            "configured",
        ),
    ];
    for (name, vars, path, headers, code, message) in cases {
        // Arrange
        let manager = RecordingManager::new();
        let mut vars = vars;
        vars.push(("PROCESSING_BUDGET", "5s"));
        let app = spawn_app_with(&vars, manager.clone()).await;
        // Act
        let response = app.post_to(path, &body, &headers).await;
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

#[test]
fn start_up_refuses_a_guard_waldur_cannot_pass_or_lists_that_lose_resources() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("WALDUR_ALLOWED_CIDRS", "192.0.2.0/24"),
                ("WALDUR_TRUSTED_PROXIES", "10.0.0.1"),
            ],
            "WALDUR_TRUSTED_PROXIES needs WALDUR_TOKEN",
        ),
        (
            vec![
                ("WALDUR_TOKEN", TOKEN),
                ("WALDUR_ALLOWED_CIDRS", "192.0.2.0/24"),
                ("WALDUR_TRUSTED_PROXIES", "10.0.0.0/8"),
            ],
            "WALDUR_TRUSTED_PROXIES: 10.0.0.0/8 is too wide",
        ),
        (
            vec![
                ("WALDUR_TOKEN", TOKEN),
                ("WALDUR_ALLOWED_CIDRS", "192.0.2.0/24"),
                ("WALDUR_TRUSTED_PROXIES", "2001:db8::/48"),
            ],
            "no IPv6 block wider than /64",
        ),
        (
            vec![
                ("WALDUR_TOKEN", TOKEN),
                (
                    "WALDUR_RELEASE_EVENTS",
                    "marketplace_resource_terminate_succeeded,marketplace_order_terminated",
                ),
            ],
            "WALDUR_RELEASE_EVENTS: remove marketplace_order_terminated: it means the order was \
             cancelled",
        ),
        (
            vec![
                ("WALDUR_TOKEN", TOKEN),
                ("WALDUR_CONFIGURE_EVENTS", "marketplace_order_created"),
            ],
            "Waldur has not sent it since December 2023",
        ),
    ];
    for (vars, expected) in cases {
        let secret = crate::helpers::fixture_secret();
        let mut all = vec![("WEBHOOK_SECRET", secret.as_str())];
        all.extend(vars.iter().copied());
        let err = webhook::testing::config(all).unwrap_err().to_string();
        assert!(err.contains(expected), "{vars:?}: {err}");
    }
}

#[tokio::test]
async fn the_endpoint_does_not_exist_unless_configured() {
    // Arrange
    let off = spawn_app(RecordingManager::new()).await;
    let on = waldur_app(RecordingManager::new()).await;

    // Act
    let disabled = off.post_waldur(&fixture(COMPLETED), TOKEN).await;
    let wrong_method = on.get("/waldur").await;

    // Assert
    assert_eq!(disabled.status(), 404);
    assert_eq!(wrong_method.status(), 405);
    off.stop().await;
    on.stop().await;
}

#[tokio::test]
async fn bodies_that_are_no_waldur_event_get_400_and_unusable_events_are_acknowledged() {
    // Arrange
    let manager = RecordingManager::new();
    let app = waldur_app_with(&[("MAX_BODY_BYTES", "4096")], manager.clone()).await;
    let completed = event(COMPLETED);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut e = completed.clone();
        change(&mut e);
        bytes(&e)
    };
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (vec![], 400, "body is empty"),
        (
            b"not json".to_vec(),
            400,
            "set the Waldur web hook's content type to JSON",
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
            200,
            "missing field context",
        ),
        (
            with(&|e| {
                let c = e["context"].as_object_mut().unwrap();
                c.remove("offering_name");
                c.remove("offering_uuid");
            }),
            200,
            "names no offering (offering_uuid or offering_name)",
        ),
        (
            with(&|e| e["context"]["created_by_uuid"] = json!(77)),
            200,
            "field context.created_by_uuid: expected a string, got a number",
        ),
        (
            with(&|e| e["created"] = json!("yesterday")),
            200,
            "field created: expected an RFC 3339 date and time",
        ),
        (
            format!(r#"{{"event_type":"x","pad":"{}"}}"#, "x".repeat(5000)).into_bytes(),
            413,
            "body exceeds 4096 bytes",
        ),
    ];
    for (body, code, message) in cases {
        // Act
        let (got, reply) = post(&app, &body).await;
        // Assert
        assert_eq!(got, code, "{}", String::from_utf8_lossy(&body));
        let text = reply["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{text:?} does not contain {message:?}"
        );
    }
    assert!(manager.calls().is_empty(), "{:?}", manager.calls());
    app.stop().await;
}
