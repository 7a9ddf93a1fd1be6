//! Credentials sealed to the user's SSH key (`SEAL_CREDENTIALS`): the user's notification
//! decrypts with the private key, with the `age` command and with the crate, and the plain
//! secret is kept nowhere on the way; without a usable key, `prefer` sends it plain and
//! `require` refuses before configuring; a secret too long to seal is released again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

use crate::helpers::{
    Backend, Event, SshKey, TestApp, sealed_part, spawn_app_with, start_backend, vars,
};

/// What the test manager hands out: 32 characters, as the examples' passwords.
const SECRET: &str = "Zq7Kp2Lr9Xw4Tn6Vb8Hc3Md5Fg1Js0Ya";
/// The text before it.
const TEXT: &str = "host=db.example.org port=5432 dbname=booking user=booking. Password:";

/// A manager that hands out a secret and records its calls.
struct Handing {
    secret: String,
    calls: Mutex<Vec<&'static str>>,
}

impl Handing {
    fn new(secret: &str) -> Arc<Self> {
        Arc::new(Self {
            secret: secret.to_owned(),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl ResourceManager for Handing {
    async fn configure(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        self.calls.lock().unwrap().push("configure");
        Ok(Outcome::new(TEXT).with_secret(self.secret.clone()))
    }

    async fn release(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
        self.calls.lock().unwrap().push("release");
        Ok(Outcome::new("Your database is gone."))
    }
}

/// An app reporting to `backend` with `SEAL_CREDENTIALS` as given (empty: unset), its
/// ledger in `data`, which outlives it.
async fn app_in(
    data: &tempfile::TempDir,
    backend: &Backend,
    seal: &str,
    manager: Arc<Handing>,
) -> TestApp {
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    let dir = data.path().display().to_string();
    settings.push(("DATA_DIR", &dir));
    settings.push(("SEAL_CREDENTIALS", seal));
    settings.push(("RETRY_BACKOFF", "50ms"));
    spawn_app_with(&settings, manager).await
}

/// The same with a ledger of its own.
async fn app(backend: &Backend, seal: &str, manager: Arc<Handing>) -> TestApp {
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.push(("SEAL_CREDENTIALS", seal));
    settings.push(("RETRY_BACKOFF", "50ms"));
    spawn_app_with(&settings, manager).await
}

/// Posts the START of booking `id` for a user with `key` and waits for its notification;
/// the reply's status code, and the notification.
async fn start(app: &TestApp, backend: &Backend, id: &str, key: Option<&str>) -> (u16, Value) {
    let body = Event::start(id).ssh_public_key(key).body();
    let code = app.post_webhook(&body).await.status().as_u16();
    let (notifications, _) = backend.wait_for(1).await;
    (code, notifications[0].clone())
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Every byte kept under a `DATA_DIR` (the SQLite ledger, its journal, its outbox).
fn data_dir_bytes(data: &tempfile::TempDir) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut dirs = vec![data.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                bytes.extend(std::fs::read(path).unwrap());
            }
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn prefer_seals_the_secret_to_an_ed25519_key_and_the_plain_secret_is_kept_nowhere() {
    // Arrange: the back end is down at first, so the notification waits in the outbox.
    let key = SshKey::generate("ed25519");
    let backend = start_backend().await;
    backend.answer_with(503);
    let data = tempfile::tempdir().unwrap();
    let app = app_in(&data, &backend, "prefer", Handing::new(SECRET)).await;

    // Act
    let body = Event::start("301").ssh_public_key(Some(&key.public)).body();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let status = app
        .wait_for_state("301", "active", Duration::from_secs(5))
        .await;
    let waiting = data_dir_bytes(&data);
    backend.answer_with(0);
    let (notifications, _) = backend.wait_for(1).await;

    // Assert: only the key's owner reads the secret, with the age command as the hint says
    // and with the crate, from a message the back end takes.
    let notification = &notifications[0];
    let message = notification["message"].as_str().unwrap();
    assert_eq!(notification["type"], "SUCCESS");
    assert!(utf16_len(message) <= 500, "{}", utf16_len(message));
    assert!(message.starts_with("host=db.example.org"), "{message}");
    assert_eq!(key.unseal(message), SECRET);
    assert_eq!(key.unseal_with_age(message), SECRET);
    // Nowhere in plain: the message, the reports received, the status, the ledger's files
    // while the notification waited in the outbox (which held the sealed text) and after.
    assert!(!message.contains(SECRET));
    {
        let received = backend.received.lock().unwrap();
        for report in received.notifications.iter().chain(&received.logs) {
            assert!(!report.to_string().contains(SECRET), "{report}");
        }
    }
    assert!(!status.to_string().contains(SECRET));
    assert!(
        !contains(&waiting, SECRET),
        "the plain secret is in DATA_DIR"
    );
    assert!(contains(&waiting, sealed_part(message).unwrap().1));
    app.stop().await;
    assert!(!contains(&data_dir_bytes(&data), SECRET));
}

#[tokio::test]
async fn off_by_default_and_prefer_without_a_key_send_the_secret_plain_after_the_text() {
    let key = SshKey::generate("ed25519");
    for (seal, user_key) in [("", Some(key.public.as_str())), ("prefer", None)] {
        let backend = start_backend().await;
        let manager = Handing::new(SECRET);
        let app = app(&backend, seal, manager.clone()).await;

        let (code, notification) = start(&app, &backend, "302", user_key).await;
        assert_eq!(code, 200);

        assert_eq!(
            notification["message"],
            format!("{TEXT}\n{SECRET}"),
            "SEAL_CREDENTIALS={seal:?}"
        );
        assert_eq!(manager.calls(), ["configure"]);
        app.stop().await;
    }
}

#[tokio::test]
async fn require_without_a_key_refuses_the_booking_before_configuring_it() {
    let backend = start_backend().await;
    let manager = Handing::new(SECRET);
    let app = app(&backend, "require", manager.clone()).await;

    let (code, notification) = start(&app, &backend, "303", None).await;
    assert_eq!(code, 200, "refused for the booking's own input: a 2xx");

    let status = app
        .wait_for_state("303", "refused", Duration::from_secs(5))
        .await;
    assert!(manager.calls().is_empty(), "{:?}", manager.calls());
    assert_eq!(notification["type"], "ERROR");
    let message = notification["message"].as_str().unwrap();
    assert!(message.contains("no SSH public key"), "{message}");
    let error = status["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("SSH public key"), "{status}");
    app.stop().await;
}

#[tokio::test]
async fn an_rsa_key_is_too_long_to_seal_to_so_prefer_is_plain_and_require_refuses() {
    let key = SshKey::generate("rsa");

    let backend = start_backend().await;
    let app_preferring = app(&backend, "prefer", Handing::new(SECRET)).await;
    let (_, notification) = start(&app_preferring, &backend, "304", Some(&key.public)).await;
    assert_eq!(notification["message"], format!("{TEXT}\n{SECRET}"));
    app_preferring.stop().await;

    let backend = start_backend().await;
    let manager = Handing::new(SECRET);
    let app_requiring = app(&backend, "require", manager.clone()).await;
    let (_, notification) = start(&app_requiring, &backend, "305", Some(&key.public)).await;
    app_requiring
        .wait_for_state("305", "refused", Duration::from_secs(5))
        .await;
    assert!(manager.calls().is_empty(), "{:?}", manager.calls());
    assert_eq!(notification["type"], "ERROR");
    app_requiring.stop().await;
}

#[tokio::test]
async fn require_releases_a_resource_whose_sealed_secret_cannot_fit_and_says_why() {
    // Arrange: a secret that, sealed, outgrows any message.
    let key = SshKey::generate("ed25519");
    let secret = "k".repeat(400);
    let backend = start_backend().await;
    let manager = Handing::new(&secret);
    let data = tempfile::tempdir().unwrap();
    let app = app_in(&data, &backend, "require", manager.clone()).await;

    // Act
    let (code, notification) = start(&app, &backend, "306", Some(&key.public)).await;

    // Assert: configured, released again at once, the user told why, the secret nowhere;
    // a permanent failure (the manager's secret is at fault, not the booking).
    assert_eq!(code, 500);
    app.wait_for_state("306", "failed", Duration::from_secs(5))
        .await;
    assert_eq!(manager.calls(), ["configure", "release"]);
    assert_eq!(notification["type"], "ERROR");
    let message = notification["message"].as_str().unwrap();
    assert!(message.contains("do not fit"), "{message}");
    assert!(message.contains("released again"), "{message}");
    assert!(!message.contains(&secret));
    app.stop().await;
    assert!(!contains(&data_dir_bytes(&data), &secret));
}
