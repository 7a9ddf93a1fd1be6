//! A test kit for managers and for the core itself (feature `testing`): the real
//! application on a free port, the senders' fixtures, signed, and events built to order.
//!
//! [`spawn_app`] builds the service exactly as `main` does, but with settings passed in
//! (never the process environment), a ledger in a temporary directory, and the manager
//! under test. The fixtures were signed on 2026-11-23, so the replay check is off and
//! bookings are not swept unless a test asks for it. Replies wait for the manager up to 5 s
//! unless a test sets `PROCESSING_BUDGET`, so a reply says what the manager did.
//!
//! ```no_run
//! # async fn example(manager: std::sync::Arc<dyn webhook::manager::ResourceManager>) {
//! use webhook::testing::{Event, json, spawn_app};
//!
//! let app = spawn_app(manager).await;
//! let reply = json(app.post_webhook(&Event::start("103").body()).await).await;
//! assert_eq!(reply["status"], "configured");
//! app.stop().await;
//! # }
//! ```

use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicU16, Ordering};

use crate::app::startup::Application;
use crate::config::Config;
use crate::contract::signature::{Keys, SIGNATURE_HEADER};
use crate::manager::ResourceManager;
use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Request, Route, handler, post};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

/// The secret the sender's fixtures are signed with (`fixtures/signatures.json` of the core).
pub fn fixture_secret() -> String {
    signatures()["secret"].as_str().unwrap().to_owned()
}

/// Logs go to stdout only when `TEST_LOG` is set.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        crate::app::telemetry::init("debug", crate::config::LogFormat::Pretty);
    }
});

/// The senders' bodies, byte for byte, bundled with the core at build time
/// (`fixtures/events/`).
const FIXTURES: [(&str, &[u8]); 15] = [
    (
        "batch_start.json",
        include_bytes!("../fixtures/events/batch_start.json"),
    ),
    (
        "event_created.json",
        include_bytes!("../fixtures/events/event_created.json"),
    ),
    (
        "event_deleted.json",
        include_bytes!("../fixtures/events/event_deleted.json"),
    ),
    (
        "event_end.json",
        include_bytes!("../fixtures/events/event_end.json"),
    ),
    (
        "event_start.json",
        include_bytes!("../fixtures/events/event_start.json"),
    ),
    (
        "event_start_minimal.json",
        include_bytes!("../fixtures/events/event_start_minimal.json"),
    ),
    (
        "event_start_other_type.json",
        include_bytes!("../fixtures/events/event_start_other_type.json"),
    ),
    (
        "event_updated_extended.json",
        include_bytes!("../fixtures/events/event_updated_extended.json"),
    ),
    (
        "event_updated_moved.json",
        include_bytes!("../fixtures/events/event_updated_moved.json"),
    ),
    (
        "future_event_type.json",
        include_bytes!("../fixtures/events/future_event_type.json"),
    ),
    (
        "resource_deleted.json",
        include_bytes!("../fixtures/events/resource_deleted.json"),
    ),
    (
        "resource_status_changed.json",
        include_bytes!("../fixtures/events/resource_status_changed.json"),
    ),
    (
        "test_event.json",
        include_bytes!("../fixtures/events/test_event.json"),
    ),
    (
        "waldur_order_completed.json",
        include_bytes!("../fixtures/events/waldur_order_completed.json"),
    ),
    (
        "waldur_resource_terminate_succeeded.json",
        include_bytes!("../fixtures/events/waldur_resource_terminate_succeeded.json"),
    ),
];

/// A body from the core's `fixtures/events/`, byte for byte as the sender sent it.
pub fn fixture(name: &str) -> Vec<u8> {
    match FIXTURES.iter().find(|(n, _)| *n == name) {
        Some((_, body)) => body.to_vec(),
        None => panic!(
            "no fixture {name}: the core bundles {:?}",
            FIXTURES.map(|(n, _)| n)
        ),
    }
}

/// The core's `fixtures/signatures.json`: the secret and each fixture's signatures.
pub fn signatures() -> Value {
    serde_json::from_str(include_str!("../fixtures/signatures.json"))
        .expect("signatures.json is JSON")
}

/// What the kit's applications run as: a webhook generated for the fixtures' resource type.
pub const SERVICE: crate::config::Service = crate::config::Service {
    resource_type: "Switch Port",
    ..crate::config::Service::CORE
};

/// Settings from `(name, value)` pairs as [`SERVICE`] reads them, for the `send` and
/// `outbox` commands and for start-up errors.
pub fn config<K: Into<String>, V: Into<String>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<Config, crate::config::ConfigError> {
    Config::from_vars_for(SERVICE, vars)
}

/// The `ADMIN_TOKEN` of test apps, for `GET /bookings/{id}`.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running application.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The port it listens on.
    pub port: u16,
    /// A client for requests of a test's own.
    pub client: reqwest::Client,
    /// Where its embedded ledger lives.
    pub data_dir: PathBuf,
    /// Deleted when the app is dropped, unless the test chose `DATA_DIR` itself.
    _data_dir: Option<tempfile::TempDir>,
    keys: Keys,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the app with the fixture secret, the fixtures' resource type and `manager`.
pub async fn spawn_app(manager: Arc<dyn ResourceManager>) -> TestApp {
    spawn_app_with(&[], manager).await
}

/// Starts the app with extra settings on top of the defaults of [`spawn_app`].
pub async fn spawn_app_with(vars: &[(&str, &str)], manager: Arc<dyn ResourceManager>) -> TestApp {
    LazyLock::force(&TRACING);
    let secret = fixture_secret();
    let mut all: Vec<(String, String)> = vec![
        ("HOST".into(), "127.0.0.1".into()),
        ("PORT".into(), "0".into()),
        ("RESOURCE_TYPE".into(), "Switch Port".into()),
        ("WEBHOOK_SECRET".into(), secret.clone()),
        ("SHUTDOWN_TIMEOUT".into(), "10s".into()),
        ("REPLAY_TOLERANCE".into(), "off".into()),
        ("LEDGER_RETENTION".into(), "off".into()),
        ("RELEASE_GRACE".into(), "3650days".into()),
        ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        // The reply then carries the result, which most tests look at; the default (answer
        // at once) has tests of its own.
        ("PROCESSING_BUDGET".into(), "5s".into()),
    ];
    for (k, v) in vars {
        all.retain(|(name, _)| name != k);
        // An empty value leaves the setting at the service's default.
        if !v.is_empty() {
            all.push(((*k).into(), (*v).into()));
        }
    }
    let temp = match all.iter().find(|(k, _)| k == "DATA_DIR") {
        Some(_) => None,
        None => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            all.push(("DATA_DIR".into(), dir.path().display().to_string()));
            Some(dir)
        }
    };
    let data_dir = PathBuf::from(&all.iter().find(|(k, _)| k == "DATA_DIR").unwrap().1);
    let config = config(all).expect("test configuration is valid");
    let app = Application::build(config, manager)
        .await
        .expect("the app opens its ledger and binds a free port");
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::new(),
        data_dir,
        _data_dir: temp,
        keys: Keys::new(vec![secret.into_bytes()]),
        shutdown: Some(tx),
        server,
    }
}

impl TestApp {
    /// Posts `body` signed with the fixture secret, as the sender does.
    pub async fn post_webhook(&self, body: &[u8]) -> reqwest::Response {
        let signature = self.keys.sign(body);
        self.post_with(body, &[(SIGNATURE_HEADER, &signature)])
            .await
    }

    /// Posts `body` with exactly the given headers (plus the JSON content type).
    pub async fn post_with(&self, body: &[u8], headers: &[(&str, &str)]) -> reqwest::Response {
        self.post_to("/webhook", body, headers).await
    }

    /// Posts `body` to `POST /waldur` as Waldur does: JSON, `token` in the hook's URL, no
    /// other header.
    pub async fn post_waldur(&self, body: &[u8], token: &str) -> reqwest::Response {
        self.post_to(&format!("/waldur?token={token}"), body, &[])
            .await
    }

    /// Posts `body` to `path` with the given headers (plus the JSON content type).
    pub async fn post_to(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .body(body.to_vec())
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET /bookings/{id}` with the admin token: the status code and the body.
    pub async fn status(&self, id: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}/bookings/{id}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent");
        let code = response.status().as_u16();
        let text = response.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Waits until booking `id` is settled and returns its status.
    pub async fn settled(&self, id: &str, within: Duration) -> Value {
        self.wait_until(id, "settled", within, |_| true).await
    }

    /// Waits until booking `id` is settled in `state` (`active`, `released`, `failed`,
    /// `refused`) and returns its status; panics after `within`.
    pub async fn wait_for_state(&self, id: &str, state: &str, within: Duration) -> Value {
        self.wait_until(id, state, within, |body| body["state"] == state)
            .await
    }

    /// Polls booking `id`'s status until it is settled and `wanted` holds for it.
    async fn wait_until(
        &self,
        id: &str,
        what: &str,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (code, body) = self.status(id).await;
            if code == 200 && body["settled"] == true && wanted(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "booking {id} not {what} within {within:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the app as SIGTERM would, and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server)
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

/// Reads a reply's JSON body.
pub async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {text}"))
}

/// The shape of an [`Event`]'s body, which decides where its fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// START and END: the booking's fields at the top.
    Flat,
    /// DELETED and UPDATED: the booking in `data`.
    Nested,
    /// RESOURCE_DELETED: the resource in `data`.
    Resource,
    /// A batch: the user at the top, a booking per element of `events`.
    Batch,
}

/// An event body built from the senders' fixtures, with the fields a test cares about
/// changed: booking id, resource, resource type, user, times, custom parameters. The rest
/// is what the sender sends.
///
/// ```
/// use webhook::testing::Event;
///
/// let start = Event::start("103")
///     .resource(7, "db-7")
///     .resource_type("Database")
///     .parameters(serde_json::json!({"size": "small"}))
///     .body();
/// let reply: serde_json::Value = serde_json::from_slice(&start).unwrap();
/// assert_eq!(reply["resourceName"], "db-7");
/// ```
#[derive(Debug, Clone)]
pub struct Event {
    shape: Shape,
    body: Value,
}

impl Event {
    fn from_fixture(name: &str, shape: Shape) -> Self {
        let body = serde_json::from_slice(&fixture(name)).expect("the fixtures are JSON");
        Self { shape, body }
    }

    /// `EVENT_START` of booking `id` (flat).
    pub fn start(id: &str) -> Self {
        Self::from_fixture("event_start.json", Shape::Flat).id(id)
    }

    /// `EVENT_END` of booking `id` (flat).
    pub fn end(id: &str) -> Self {
        Self::from_fixture("event_end.json", Shape::Flat).id(id)
    }

    /// `EVENT_DELETED` of booking `id` (nested).
    pub fn deleted(id: &str) -> Self {
        Self::from_fixture("event_deleted.json", Shape::Nested).id(id)
    }

    /// `EVENT_UPDATED` of booking `id` (nested), the booking as it is now: change its end,
    /// resource or user with the other methods.
    pub fn updated(id: &str) -> Self {
        Self::from_fixture("event_updated_extended.json", Shape::Nested).id(id)
    }

    /// `RESOURCE_DELETED` of resource `resource_id`: every booking of it ends.
    pub fn resource_deleted(resource_id: i64) -> Self {
        let mut e = Self::from_fixture("resource_deleted.json", Shape::Resource);
        e.body["data"]["id"] = resource_id.into();
        e
    }

    /// A batched `EVENT_START` (event processor 0.1.12–0.1.17) of bookings `ids`, each of
    /// a resource of its own.
    pub fn batch(ids: &[&str]) -> Self {
        let mut e = Self::from_fixture("batch_start.json", Shape::Batch);
        let first = e.body["events"][0].clone();
        let events: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let mut booking = first.clone();
                booking["eventId"] = (*id).into();
                booking["resourceId"] = (100 + n as i64).into();
                booking["resourceName"] = format!("resource-{}", 100 + n).into();
                booking
            })
            .collect();
        e.body["eventCount"] = events.len().into();
        e.body["events"] = events.into();
        e
    }

    /// The bookings this event is about: one, or each of a batch's.
    fn bookings(&mut self) -> Vec<&mut Value> {
        match self.shape {
            Shape::Flat => vec![&mut self.body],
            Shape::Nested => vec![&mut self.body["data"]],
            Shape::Resource => Vec::new(),
            Shape::Batch => match &mut self.body["events"] {
                Value::Array(events) => events.iter_mut().collect(),
                _ => Vec::new(),
            },
        }
    }

    fn id(mut self, id: &str) -> Self {
        match self.shape {
            Shape::Flat => self.body["eventId"] = id.into(),
            // The back end sends its numeric id as a number.
            _ => {
                self.body["data"]["id"] = match id.parse::<i64>() {
                    Ok(n) => n.into(),
                    Err(_) => id.into(),
                }
            }
        }
        self
    }

    /// The booking's resource (or the deleted resource): its id and name.
    pub fn resource(mut self, id: i64, name: &str) -> Self {
        match self.shape {
            Shape::Flat | Shape::Batch => {
                for b in self.bookings() {
                    b["resourceId"] = id.into();
                    b["resourceName"] = name.into();
                }
            }
            Shape::Nested => {
                self.body["data"]["resource"]["id"] = id.into();
                self.body["data"]["resource"]["name"] = name.into();
            }
            Shape::Resource => {
                self.body["data"]["id"] = id.into();
                self.body["data"]["name"] = name.into();
            }
        }
        self
    }

    /// The resource type's name, as the reservation system shows it.
    pub fn resource_type(mut self, name: &str) -> Self {
        match self.shape {
            Shape::Flat | Shape::Batch => {
                for b in self.bookings() {
                    b["resourceType"] = name.into();
                }
            }
            Shape::Nested => self.body["data"]["resource"]["type"]["name"] = name.into(),
            Shape::Resource => self.body["data"]["type"]["name"] = name.into(),
        }
        self
    }

    /// Who booked: the user's id (Keycloak) and name.
    pub fn user(mut self, id: &str, username: &str) -> Self {
        match self.shape {
            Shape::Flat | Shape::Batch => {
                self.body["userId"] = id.into();
                self.body["username"] = username.into();
            }
            Shape::Nested => self.body["data"]["keycloakId"] = id.into(),
            Shape::Resource => {}
        }
        self
    }

    /// The SSH public key the user registered (`sshPublicKey`), or none; only the flat and
    /// batched shapes carry one.
    pub fn ssh_public_key(mut self, key: Option<&str>) -> Self {
        if matches!(self.shape, Shape::Flat | Shape::Batch) {
            self.body["sshPublicKey"] = key.map_or(Value::Null, Value::from);
        }
        self
    }

    /// The booking's time slot.
    pub fn window(mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        let (start, end) = (start.to_rfc3339(), end.to_rfc3339());
        let (from, to) = match self.shape {
            Shape::Nested => ("start", "end"),
            _ => ("eventStart", "eventEnd"),
        };
        for b in self.bookings() {
            b[from] = start.clone().into();
            b[to] = end.clone().into();
        }
        self
    }

    /// The custom parameters the user chose, as the sender encodes them (JSON in a string).
    pub fn parameters(self, parameters: Value) -> Self {
        self.raw_parameters(&parameters.to_string())
    }

    /// The custom parameters' text as it is, valid JSON or not.
    pub fn raw_parameters(mut self, text: &str) -> Self {
        for b in self.bookings() {
            b["customParameters"] = text.into();
        }
        self
    }

    /// When the sender says it sent the event (the signed `timestamp`).
    pub fn sent_at(mut self, at: DateTime<Utc>) -> Self {
        self.body["timestamp"] = at.to_rfc3339().into();
        self
    }

    /// The body, ready to sign and post ([`TestApp::post_webhook`]).
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).expect("a JSON value serializes")
    }
}

/// What a [`Backend`] accepted, per endpoint.
#[derive(Default)]
pub struct Received {
    /// `POST /api/notifications/webhook` bodies.
    pub notifications: Vec<Value>,
    /// `POST /api/webhooks/log` bodies.
    pub logs: Vec<Value>,
    /// Requests not accepted: every 4xx it answers (the back end's checks), and every
    /// request answered with `failing`'s status instead.
    pub refused: usize,
    /// When non-zero, every request is answered with this status (a back end that is down).
    pub failing: Arc<AtomicU16>,
}

/// A stand-in for the reservation system's report endpoints, validating as its back end
/// does: required fields, enum values, length limits (in UTF-16 units, as Java counts), no
/// unknown fields, and the signature of each `webhookId`'s key.
pub struct Backend {
    /// Its base URL.
    pub url: String,
    /// What it accepted so far.
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

/// A back end that knows webhook `7` with the fixtures' secret.
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

    /// The settings that point a service at it.
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

/// [`Backend::endpoints`] as the pairs [`spawn_app_with`] takes.
pub fn vars<'a>(endpoints: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    endpoints.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The first line of the hint before a sealed secret (`SEAL_CREDENTIALS`), up to the
/// command that decrypts it.
pub const SEALED_HINT: &str = crate::engine::seal::HINT;

/// An SSH key pair made for a test by `ssh-keygen` (OpenSSH's client), in a temporary
/// directory kept while it lives: for users whose credentials are sealed.
pub struct SshKey {
    /// The public key, `ssh-ed25519 AAAA… test`, as a user registers it (`sshPublicKey`).
    pub public: String,
    /// The private key's file, without a passphrase.
    pub private: PathBuf,
    _dir: tempfile::TempDir,
}

impl SshKey {
    /// A new key pair of `kind` (`ed25519`, `rsa`): `ssh-keygen -t KIND -N '' -f DIR/id`.
    pub fn generate(kind: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let private = dir.path().join("id");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "test", "-f"])
            .arg(&private)
            .output()
            .unwrap_or_else(|e| {
                panic!("ssh-keygen cannot run ({e}): run scripts/install-test-tools.sh")
            });
        assert!(made.status.success(), "ssh-keygen -t {kind}: {made:?}");
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .expect("ssh-keygen wrote the public key")
            .trim()
            .to_owned();
        Self {
            public,
            private,
            _dir: dir,
        }
    }

    /// The secret sealed in a notification's `message`, decrypted with this key by the
    /// `age` crate; panics if there is none or it does not decrypt.
    pub fn unseal(&self, message: &str) -> String {
        use base64::Engine as _;
        let (_, sealed) = sealed_part(message).expect("the message has a sealed secret");
        let file = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .expect("one line of Base64");
        let key = std::fs::read(&self.private).expect("the private key");
        let identity = age::ssh::Identity::from_buffer(key.as_slice(), None).expect("an identity");
        let secret = age::decrypt(&identity, &file).expect("the sealed secret decrypts");
        String::from_utf8(secret).expect("the secret is text")
    }

    /// The same with the `age` command, as the user would: the hint's command, this key's
    /// file in place of `~/.ssh/…`, given the sealed part on its standard input. Panics,
    /// naming the script that installs it, when `age` is missing.
    pub fn unseal_with_age(&self, message: &str) -> String {
        let present = std::process::Command::new("age").arg("--version").output();
        assert!(
            present.is_ok_and(|o| o.status.success()),
            "the age command is missing: run scripts/install-test-tools.sh"
        );
        let (command, sealed) = sealed_part(message).expect("the message has a sealed secret");
        let at = command.find("~/.ssh/").expect("the hint names a key file");
        let command = format!("{}'{}'", &command[..at], self.private.display());
        let mut child = std::process::Command::new("sh")
            .args(["-c", &command])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(sealed.as_bytes()).expect("written");
            stdin.write_all(b"\n").expect("written");
        }
        let out = child.wait_with_output().expect("the command ends");
        assert!(out.status.success(), "{command}: {out:?}");
        String::from_utf8(out.stdout).expect("the secret is text")
    }
}

/// The decrypting command a sealed message names and the sealed part after it (one line of
/// Base64); `None` for a message with no sealed secret.
pub fn sealed_part(message: &str) -> Option<(&str, &str)> {
    let at = message.find(SEALED_HINT)?;
    let rest = &message[at + SEALED_HINT.len()..];
    let (command, sealed) = rest.split_once('\n')?;
    Some((command, sealed.trim()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_fixture_in_the_folder_is_bundled() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/events");
        let mut present: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        present.sort();
        let bundled: Vec<&str> = super::FIXTURES.iter().map(|(n, _)| *n).collect();
        assert_eq!(present, bundled);
    }
}
