//! Starts the real application on a free port and talks to it over HTTP.
//!
//! `spawn_app` builds the service exactly as `main` does, but with settings passed in
//! (never the process environment), a ledger in a temporary directory, and a manager
//! chosen by the test. The fixtures were signed on 2026-11-23, so the replay check is off
//! and bookings are not swept unless a test asks for it. Replies wait for the manager up to
//! 5 s unless a test sets `PROCESSING_BUDGET`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::oneshot;
use webhook::config::Config;
use webhook::hook::{OtherEvent, Source};
use webhook::manager::{ManagerError, Outcome, ResourceManager};
use webhook::reservation::Reservation;
use webhook::signature::{Keys, SIGNATURE_HEADER};
use webhook::startup::Application;

/// The secret the sender's fixtures are signed with (`tests/fixtures/signatures.json`).
pub fn fixture_secret() -> String {
    signatures()["secret"].as_str().unwrap().to_owned()
}

/// Logs go to stdout only when `TEST_LOG` is set.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        webhook::telemetry::init("debug", webhook::config::LogFormat::Pretty);
    }
});

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A body from `tests/fixtures/events/`, byte for byte as the sender sent it.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join("events").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `tests/fixtures/signatures.json`.
pub fn signatures() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("signatures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The `ADMIN_TOKEN` of test apps, for `GET /bookings/{id}`.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running application.
pub struct TestApp {
    pub address: String,
    pub port: u16,
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
    let config = Config::from_vars(all).expect("test configuration is valid");
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
        let deadline = std::time::Instant::now() + within;
        loop {
            let (code, body) = self.status(id).await;
            if code == 200 && body["settled"] == true {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "booking {id} not settled within {within:?}: {body}"
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

/// One call a [`RecordingManager`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Configure(String),
    Release(String),
    EndChanged(String),
}

/// An event the manager's hook received, as it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    pub source: Source,
    pub event_type: String,
    pub body: Vec<u8>,
    /// What [`OtherEvent::is_ours`] said.
    pub ours: Option<bool>,
}

/// How a [`RecordingManager`]'s hook answers.
#[derive(Debug, Clone)]
pub enum HookAnswer {
    /// Does not handle the event (the default method's answer).
    Pass,
    Handled(String),
    /// Fails with (transient?, message).
    Fail(bool, String),
    /// Takes this long, then handles it.
    Slow(Duration),
}

/// A manager that records its calls and behaves as told: the test double for the trait.
#[derive(Default)]
pub struct RecordingManager {
    /// Events the hook received, in order.
    pub events: Mutex<Vec<SeenEvent>>,
    /// Hook calls that have returned.
    pub events_done: Mutex<usize>,
    hook_answer: Mutex<Option<HookAnswer>>,
    calls: Mutex<Vec<Call>>,
    /// When set, every call fails with this (transient?, message).
    failure: Mutex<Option<(bool, String)>>,
    /// The next calls that fail: (how many, transient?, message).
    failing: Mutex<Option<(usize, bool, String)>>,
    /// How long each call takes.
    delay: Mutex<Duration>,
    /// Reservations received, in order.
    pub reservations: Mutex<Vec<Reservation>>,
}

impl RecordingManager {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn fail_with(&self, transient: bool, message: &str) {
        *self.failure.lock().unwrap() = Some((transient, message.to_owned()));
    }

    /// The next `n` calls fail, then calls succeed again.
    pub fn fail_next(&self, n: usize, transient: bool, message: &str) {
        *self.failing.lock().unwrap() = Some((n, transient, message.to_owned()));
    }

    pub fn delay_each_call(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// How the hook answers from now on.
    pub fn answer_events(&self, answer: HookAnswer) {
        *self.hook_answer.lock().unwrap() = Some(answer);
    }

    pub fn events(&self) -> Vec<SeenEvent> {
        self.events.lock().unwrap().clone()
    }

    async fn call(&self, call: Call, r: &Reservation) -> Result<Outcome, ManagerError> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.calls.lock().unwrap().push(call.clone());
        self.reservations.lock().unwrap().push(r.clone());
        let next = {
            let mut failing = self.failing.lock().unwrap();
            match failing.as_mut() {
                Some((n, transient, m)) if *n > 0 => {
                    *n -= 1;
                    Some((*transient, m.clone()))
                }
                _ => None,
            }
        };
        match next.or_else(|| self.failure.lock().unwrap().clone()) {
            Some((true, m)) => Err(ManagerError::transient(m)),
            Some((false, m)) => Err(ManagerError::permanent(m)),
            None => Ok(Outcome::new(format!("{call:?} done for {}", r.user.id))),
        }
    }
}

#[async_trait]
impl ResourceManager for RecordingManager {
    async fn configure(&self, r: &Reservation) -> Result<Outcome, ManagerError> {
        self.call(Call::Configure(r.event_id.clone()), r).await
    }

    async fn release(&self, r: &Reservation) -> Result<Outcome, ManagerError> {
        self.call(Call::Release(r.event_id.clone()), r).await
    }

    async fn end_changed(&self, r: &Reservation) -> Result<(), ManagerError> {
        self.call(Call::EndChanged(r.event_id.clone()), r)
            .await
            .map(drop)
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        match self.failure.lock().unwrap().clone() {
            Some((_, m)) => Err(ManagerError::transient(m)),
            None => Ok(()),
        }
    }

    async fn on_event(&self, event: &OtherEvent<'_>) -> Result<Option<Outcome>, ManagerError> {
        self.events.lock().unwrap().push(SeenEvent {
            source: event.source,
            event_type: event.event_type.to_owned(),
            body: event.body.to_vec(),
            ours: event.is_ours(),
        });
        let answer = self.hook_answer.lock().unwrap().clone();
        let result = match answer.unwrap_or(HookAnswer::Pass) {
            HookAnswer::Pass => Ok(None),
            HookAnswer::Handled(m) => Ok(Some(Outcome::new(m))),
            HookAnswer::Fail(true, m) => Err(ManagerError::transient(m)),
            HookAnswer::Fail(false, m) => Err(ManagerError::permanent(m)),
            HookAnswer::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(Some(Outcome::new("done slowly")))
            }
        };
        *self.events_done.lock().unwrap() += 1;
        result
    }
}
