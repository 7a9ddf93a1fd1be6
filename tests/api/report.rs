//! Reporting back, against a local server that validates like the reservation system's
//! back end: required fields, enum values, length limits (in UTF-16 units, as Java counts),
//! no unknown fields, and the signature.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Request, Route, handler, post};
use serde_json::{Map, Value};
use webhook::signature::Keys;

use crate::helpers::{RecordingManager, fixture, fixture_secret, spawn_app_with};

/// What the fake back end accepted, per endpoint.
#[derive(Default)]
pub struct Received {
    pub notifications: Vec<Value>,
    pub logs: Vec<Value>,
    /// Requests not accepted: every 4xx it answers (the back end's checks), and every
    /// request answered with `failing`'s status instead.
    pub refused: usize,
    /// When non-zero, every request is answered with this status (a back end that is down).
    pub failing: Arc<AtomicU16>,
}

pub struct Backend {
    pub url: String,
    pub received: Arc<Mutex<Received>>,
    failing: Arc<AtomicU16>,
}

/// What was received, and the key of each webhook id, as the back end knows them: one key per
/// `webhookId`.
type Shared = (Arc<Mutex<Received>>, Vec<(String, Keys)>);

/// What the back end's `/api/webhooks/log` answers: the stored row, with the webhook's
/// configuration and its secret.
pub const LOG_REPLY_SECRET: &str = "the-webhooks-secret-in-the-log-reply";

fn utf16_len(v: &Value) -> usize {
    v.as_str().map(|s| s.encode_utf16().count()).unwrap_or(0)
}

/// The back end's checks for one endpoint; `Err` is its 400 message.
fn validate(body: &Map<String, Value>, fields: &[(&str, bool, &str, usize)]) -> Result<(), String> {
    for key in body.keys() {
        if !fields.iter().any(|(name, ..)| name == key) {
            return Err(format!("unknown field {key}"));
        }
    }
    for (name, required, kind, max) in fields {
        match body.get(*name) {
            None | Some(Value::Null) if *required => return Err(format!("{name} is required")),
            None | Some(Value::Null) => {}
            Some(v) => {
                let ok = match *kind {
                    "string" => v.is_string() && utf16_len(v) <= *max,
                    "text" => {
                        v.as_str().is_some_and(|t| !t.trim().is_empty()) && utf16_len(v) <= *max
                    }
                    "integer" => v.is_i64(),
                    "boolean" => v.is_boolean(),
                    "type" => matches!(v.as_str(), Some("INFO" | "SUCCESS" | "WARNING" | "ERROR")),
                    _ => true,
                };
                if !ok {
                    return Err(format!("{name} is invalid: {v}"));
                }
            }
        }
    }
    Ok(())
}

async fn accept(req: &Request, body: Vec<u8>, shared: &Shared, log: bool) -> (StatusCode, String) {
    let failing = shared.0.lock().unwrap().failing.load(Ordering::SeqCst);
    if failing != 0 {
        shared.0.lock().unwrap().refused += 1;
        return (StatusCode::from_u16(failing).unwrap(), "down".into());
    }
    let (status, reply) = check(req, body, shared, log);
    // Counted, so that `refused == 0` means the back end accepted every report.
    if status.is_client_error() {
        shared.0.lock().unwrap().refused += 1;
    }
    (status, reply)
}

/// The back end's answer to one report: its checks, then the stored row.
fn check(req: &Request, body: Vec<u8>, shared: &Shared, log: bool) -> (StatusCode, String) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a JSON object".into());
    };
    let webhook = map
        .get("webhookId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some((_, keys)) = shared.1.iter().find(|(id, _)| *id == webhook) else {
        return (StatusCode::UNAUTHORIZED, "unknown webhookId".into());
    };
    if keys.verify(req.headers(), &body).is_err() {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let checked = if log {
        validate(
            &map,
            &[
                ("webhookId", true, "string", usize::MAX),
                ("eventType", true, "string", 64),
                ("payload", true, "string", 4000),
                ("statusCode", false, "integer", 0),
                ("response", false, "string", 4000),
                ("success", true, "boolean", 0),
                ("retryCount", false, "integer", 0),
                ("resourceId", false, "integer", 0),
                ("metadata", false, "any", 0),
            ],
        )
    } else {
        validate(
            &map,
            &[
                ("webhookId", true, "string", usize::MAX),
                ("userId", true, "string", usize::MAX),
                // Blank is refused (400), as the back end's @NotBlank does.
                ("message", true, "text", 500),
                ("type", false, "type", 0),
                ("eventId", false, "string", usize::MAX),
                ("resourceId", false, "string", usize::MAX),
                ("eventType", false, "string", usize::MAX),
                ("metadata", false, "any", 0),
            ],
        )
    };
    if let Err(message) = checked {
        return (StatusCode::BAD_REQUEST, message);
    }
    let mut received = shared.0.lock().unwrap();
    if log {
        &mut received.logs
    } else {
        &mut received.notifications
    }
    .push(Value::Object(map));
    if log {
        let row =
            serde_json::json!({"id": 1, "webhook": {"id": webhook, "secret": LOG_REPLY_SECRET}});
        (StatusCode::CREATED, row.to_string())
    } else {
        (StatusCode::OK, "{}".into())
    }
}

#[handler]
async fn notification_endpoint(
    req: &Request,
    body: Vec<u8>,
    Data(shared): Data<&Shared>,
) -> (StatusCode, String) {
    accept(req, body, shared, false).await
}

#[handler]
async fn log_endpoint(
    req: &Request,
    body: Vec<u8>,
    Data(shared): Data<&Shared>,
) -> (StatusCode, String) {
    accept(req, body, shared, true).await
}

pub async fn start_backend() -> Backend {
    start_backend_for(&[("7", &fixture_secret())]).await
}

/// A back end that knows these webhooks: `(webhookId, secret)`.
pub async fn start_backend_for(webhooks: &[(&str, &str)]) -> Backend {
    let received = Arc::new(Mutex::new(Received::default()));
    let failing = received.lock().unwrap().failing.clone();
    let keys: Vec<(String, Keys)> = webhooks
        .iter()
        .map(|(id, secret)| {
            (
                (*id).to_owned(),
                Keys::new(vec![secret.as_bytes().to_vec()]),
            )
        })
        .collect();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let app = Route::new()
        .at("/api/notifications/webhook", post(notification_endpoint))
        .at("/api/webhooks/log", post(log_endpoint))
        .data((received.clone(), keys));
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    Backend {
        url: format!("http://127.0.0.1:{port}"),
        received,
        failing,
    }
}

impl Backend {
    /// Answers every request with `status` (0: back to normal).
    pub fn answer_with(&self, status: u16) {
        self.failing.store(status, Ordering::SeqCst);
    }

    pub fn endpoints(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "NOTIFICATION_ENDPOINT",
                format!("{}/api/notifications/webhook", self.url),
            ),
            (
                "WEBHOOK_LOG_ENDPOINT",
                format!("{}/api/webhooks/log", self.url),
            ),
        ]
    }

    /// Waits until `n` notifications and `n` log entries have arrived.
    pub async fn wait_for(&self, n: usize) -> (Vec<Value>, Vec<Value>) {
        for _ in 0..200 {
            {
                let r = self.received.lock().unwrap();
                if r.notifications.len() >= n && r.logs.len() >= n {
                    return (r.notifications.clone(), r.logs.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = self.received.lock().unwrap();
        panic!(
            "expected {n} of each, got {:?} / {:?}",
            r.notifications, r.logs
        );
    }
}

pub fn vars<'a>(endpoints: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    endpoints.iter().map(|(k, v)| (*k, v.as_str())).collect()
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
