//! `SIGNATURE_PRESET=standard-webhooks`, checked against the Standard Webhooks reference
//! library (Python `standardwebhooks` 1.3.0, which `scripts/install-test-tools.sh` installs):
//! its signatures pass, `webhook-timestamp` is checked, each missing header is named, and a
//! message reaches the manager's hook once, unless its delivery failed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use webhook::contract::signature::{Keys, Preset, standard_webhooks_key};

use crate::helpers::{Call, HookAnswer, RecordingManager, TestApp, fixture, json, spawn_app_with};

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";

/// A `whsec_` secret of 32 bytes, all `byte`.
fn secret(byte: u8) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

/// The Python of the tools' virtual environment, which has the reference library.
fn reference_python() -> PathBuf {
    let dir = match std::env::var_os("TEST_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".local/share/webhook-test-tools"),
    };
    let python = dir.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/install-test-tools.sh, which installs the Standard \
         Webhooks reference library these tests sign with (TEST_TOOLS_DIR chooses where)",
        python.display()
    );
    python
}

/// Runs `script` with the reference library, `args` and `stdin`; its output, trimmed.
fn reference(script: &str, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new(reference_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tools' Python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("the body reaches the reference library");
    let out = child.wait_with_output().expect("the reference library ran");
    assert!(
        out.status.success(),
        "the reference library failed (run scripts/install-test-tools.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `Webhook(secret).sign(id, timestamp, body)`: the reference library's `v1,` entry.
fn reference_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    const SIGN: &str = r#"
import sys, datetime
from standardwebhooks.webhooks import Webhook
secret, msg_id, ts = sys.argv[1:4]
at = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)
print(Webhook(secret).sign(msg_id, at, sys.stdin.buffer.read()))
"#;
    reference(SIGN, &[secret, id, &timestamp.to_string()], body)
}

/// Whether the reference library's `Webhook(secret).verify` accepts `body` with `headers`.
fn reference_verifies(secret: &str, headers: &[(&str, String)], body: &[u8]) -> bool {
    const VERIFY: &str = r#"
import sys, json
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret, headers = sys.argv[1], json.loads(sys.argv[2])
try:
    Webhook(secret).verify(sys.stdin.buffer.read(), headers, json_parse=False)
    print("verified")
except WebhookVerificationError as e:
    print(f"refused: {e}")
"#;
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone().into()))
        .collect();
    let answer = reference(
        VERIFY,
        &[secret, &serde_json::Value::from(headers).to_string()],
        body,
    );
    answer == "verified"
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The three headers of message `id` at `timestamp` with `signature`.
fn headers(id: &str, timestamp: i64, signature: &str) -> Vec<(&'static str, String)> {
    vec![
        (ID, id.to_owned()),
        (TIMESTAMP, timestamp.to_string()),
        (SIGNATURE, signature.to_owned()),
    ]
}

/// The headers the reference library's sender puts on `body` for message `id`, now.
fn signed(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let at = now();
    headers(id, at, &reference_signature(secret, id, at, body))
}

async fn post(app: &TestApp, body: &[u8], headers: &[(&str, String)]) -> reqwest::Response {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.post_with(body, &headers).await
}

/// The app with the preset, `secret` and the default `REPLAY_TOLERANCE` (5 minutes).
async fn spawn(secret: &str, manager: std::sync::Arc<RecordingManager>) -> TestApp {
    spawn_app_with(
        &[
            ("SIGNATURE_PRESET", "standard-webhooks"),
            ("WEBHOOK_SECRET", secret),
            ("REPLAY_TOLERANCE", ""),
        ],
        manager,
    )
    .await
}

#[tokio::test]
async fn a_delivery_signed_by_the_reference_library_with_a_whsec_secret_is_handled() {
    // Arrange: the fixture's own `timestamp` is days old; with this preset the signed
    // `webhook-timestamp` is the replay check.
    let secret = secret(1);
    let manager = RecordingManager::new();
    let app = spawn(&secret, manager.clone()).await;
    let body = fixture("event_start.json");
    let reservation_system_way = Keys::new(vec![secret.clone().into_bytes()]).sign(&body);

    // Act
    let signed = post(&app, &body, &signed(&secret, "msg_start_103", &body)).await;
    let unsigned_the_preset_way = app
        .post_with(&body, &[("x-webhook-signature", &reservation_system_way)])
        .await;

    // Assert
    assert_eq!(signed.status(), 200);
    assert_eq!(json(signed).await["status"], "configured");
    assert_eq!(manager.calls(), [Call::Configure("103".into())]);
    assert_eq!(unsigned_the_preset_way.status(), 401);
    let message = json(unsigned_the_preset_way).await["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("missing webhook-id header"),
        "{message}"
    );
    app.stop().await;
}

#[tokio::test]
async fn in_a_rotation_one_valid_signature_among_several_is_enough() {
    // Arrange: the receiver has the old key; the sender signs with its new one and the old.
    let (old, new) = (secret(1), secret(2));
    let manager = RecordingManager::new();
    let app = spawn(&old, manager.clone()).await;
    let body = fixture("test_event.json");
    let entries = |id: &str, at: i64| {
        (
            reference_signature(&new, id, at, &body),
            reference_signature(&old, id, at, &body),
        )
    };
    let at = now();
    let (by_new, by_old) = entries("msg_rotate_1", at);
    let (by_new_2, by_old_2) = entries("msg_rotate_2", at);
    let (by_new_3, _) = entries("msg_rotate_3", at);

    // Act
    let both = post(
        &app,
        &body,
        &headers("msg_rotate_1", at, &format!("{by_new} {by_old}")),
    )
    .await;
    let with_other_version = post(
        &app,
        &body,
        &headers(
            "msg_rotate_2",
            at,
            &format!("v1a,{} {by_old_2} {by_new_2}", &by_new_2[3..]),
        ),
    )
    .await;
    let only_new = post(&app, &body, &headers("msg_rotate_3", at, &by_new_3)).await;

    // Assert
    assert_eq!(both.status(), 200);
    assert_eq!(with_other_version.status(), 200);
    assert_eq!(only_new.status(), 401);
    assert_eq!(
        json(only_new).await["message"],
        "webhook-signature does not match: no v1 entry signs this webhook-id, webhook-timestamp and body"
    );
    assert_eq!(manager.events().len(), 2);
    app.stop().await;

    // Arrange: now the receiver has both keys, the new one first, and the sender still
    // signs with the old one only.
    let rotating = spawn_app_with(
        &[
            ("SIGNATURE_PRESET", "standard-webhooks"),
            ("WEBHOOK_SECRET", &new),
            ("WEBHOOK_PREVIOUS_SECRETS", &old),
            ("REPLAY_TOLERANCE", ""),
        ],
        RecordingManager::new(),
    )
    .await;

    // Act
    let by_old_only = post(&rotating, &body, &signed(&old, "msg_rotate_4", &body)).await;

    // Assert
    assert_eq!(by_old_only.status(), 200);
    rotating.stop().await;
}

#[tokio::test]
async fn a_stale_or_future_webhook_timestamp_is_refused_with_401_saying_by_how_much() {
    // Arrange
    let secret = secret(1);
    let manager = RecordingManager::new();
    let app = spawn(&secret, manager.clone()).await;
    let body = fixture("event_start.json");
    // 10m 30s either way: the seconds the reference library takes to sign and the post take
    // move the difference the service sees by a second or two, never below 10m nor to 11m.
    let at = |offset: i64| {
        let t = now() + offset;
        headers(
            "msg_late",
            t,
            &reference_signature(&secret, "msg_late", t, &body),
        )
    };

    // Act
    let stale = post(&app, &body, &at(-630)).await;
    let future = post(&app, &body, &at(630)).await;

    // Assert
    for (response, how) in [(stale, "old"), (future, "in the future")] {
        assert_eq!(response.status(), 401);
        let reply = json(response).await;
        assert_eq!(reply["status"], "unauthorized");
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.starts_with("webhook-timestamp is 10m ")
                && message.contains(how)
                && message.ends_with("more than REPLAY_TOLERANCE (5m) allows"),
            "{message}"
        );
    }
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn each_missing_or_wrong_header_is_named_in_the_401() {
    // Arrange
    let secret = secret(1);
    let manager = RecordingManager::new();
    let app = spawn(&secret, manager.clone()).await;
    let body = fixture("event_start.json");
    let valid = signed(&secret, "msg_headers", &body);
    let without = |name: &str| -> Vec<(&'static str, String)> {
        valid.iter().filter(|(n, _)| *n != name).cloned().collect()
    };
    let replaced = |name: &str, value: &str| -> Vec<(&'static str, String)> {
        valid
            .iter()
            .map(|(n, v)| {
                (
                    *n,
                    if *n == name {
                        value.to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    };
    let cases = [
        (without(ID), "missing webhook-id header"),
        (without(TIMESTAMP), "missing webhook-timestamp header"),
        (without(SIGNATURE), "missing webhook-signature header"),
        (
            replaced(TIMESTAMP, "yesterday"),
            "webhook-timestamp is not a whole number of seconds",
        ),
        (
            replaced(SIGNATURE, "v1a,c2lnbmVk"),
            "webhook-signature has no v1,<Base64> entry",
        ),
        (
            replaced(SIGNATURE, "v1,not*base64"),
            "malformed webhook-signature",
        ),
    ];

    for (headers, expected) in cases {
        // Act
        let response = post(&app, &body, &headers).await;

        // Assert
        assert_eq!(response.status(), 401, "{expected}");
        let message = json(response).await["message"].clone();
        assert!(
            message.as_str().unwrap().starts_with(expected),
            "{expected}: {message}"
        );
    }
    assert!(manager.calls().is_empty());
    assert_eq!(post(&app, &body, &valid).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_webhook_id_reaches_the_hook_once_and_is_answered_as_a_duplicate() {
    // Arrange
    let secret = secret(1);
    let manager = RecordingManager::new();
    manager.answer_events(HookAnswer::Handled("noted".into()));
    let app = spawn(&secret, manager.clone()).await;
    let body = fixture("event_created.json");
    let first = signed(&secret, "msg_created_106", &body);

    // Act: the message, the sender's retry of it (signed anew), the very same request
    // again, and another message with the same body.
    let handled = post(&app, &body, &first).await;
    let retried = post(&app, &body, &signed(&secret, "msg_created_106", &body)).await;
    let replayed = post(&app, &body, &first).await;
    let other = post(&app, &body, &signed(&secret, "msg_created_107", &body)).await;

    // Assert
    assert_eq!(json(handled).await["status"], "handled");
    for duplicate in [retried, replayed] {
        assert_eq!(duplicate.status(), 200);
        let reply = json(duplicate).await;
        assert_eq!(reply["status"], "duplicate");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("msg_created_106"),
            "{reply}"
        );
    }
    assert_eq!(json(other).await["status"], "handled");
    assert_eq!(manager.events().len(), 2, "{:?}", manager.events());
    app.stop().await;
}

#[tokio::test]
async fn a_retry_after_the_hook_failed_is_offered_again() {
    // Arrange
    let secret = secret(1);
    let manager = RecordingManager::new();
    manager.answer_events(HookAnswer::Fail(true, "the inventory is down".into()));
    let app = spawn(&secret, manager.clone()).await;
    let body = fixture("event_created.json");

    // Act
    let failed = post(&app, &body, &signed(&secret, "msg_flaky", &body)).await;
    manager.answer_events(HookAnswer::Handled("noted".into()));
    let retried = post(&app, &body, &signed(&secret, "msg_flaky", &body)).await;
    let again = post(&app, &body, &signed(&secret, "msg_flaky", &body)).await;

    // Assert
    assert_eq!(failed.status(), 503);
    assert_eq!(json(retried).await["status"], "handled");
    assert_eq!(json(again).await["status"], "duplicate");
    assert_eq!(manager.events().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_message_still_being_handled_is_refused_for_now_not_dropped() {
    // Arrange
    let secret = secret(1);
    let manager = RecordingManager::new();
    manager.answer_events(HookAnswer::Slow(std::time::Duration::from_millis(1500)));
    let app = spawn(&secret, manager.clone()).await;
    let body = fixture("event_created.json");
    let first = signed(&secret, "msg_slow", &body);
    let retry = signed(&secret, "msg_slow", &body);

    // Act: the sender's retry arrives while the first delivery is still being handled.
    let (handled, during) = tokio::join!(post(&app, &body, &first), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        post(&app, &body, &retry).await
    });
    let after = post(&app, &body, &signed(&secret, "msg_slow", &body)).await;

    // Assert
    assert_eq!(during.status(), 409);
    let reply = json(during).await;
    assert_eq!(reply["status"], "in_progress");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("try again later"),
        "{reply}"
    );
    assert_eq!(json(handled).await["status"], "handled");
    assert_eq!(json(after).await["status"], "duplicate");
    assert_eq!(manager.events().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_booking_event_is_answered_by_the_ledger_whatever_its_webhook_id() {
    // Arrange
    let secret = secret(1);
    let manager = RecordingManager::new();
    let app = spawn(&secret, manager.clone()).await;
    let body = fixture("event_start.json");

    // Act
    let first = post(&app, &body, &signed(&secret, "msg_start", &body)).await;
    let same_id = post(&app, &body, &signed(&secret, "msg_start", &body)).await;
    let new_id = post(&app, &body, &signed(&secret, "msg_start_resent", &body)).await;

    // Assert
    assert_eq!(json(first).await["status"], "configured");
    assert_eq!(json(same_id).await["status"], "duplicate");
    assert_eq!(json(new_id).await["status"], "duplicate");
    assert_eq!(manager.calls(), [Call::Configure("103".into())]);
    app.stop().await;
}

#[tokio::test]
async fn send_signs_as_the_reference_library_verifies() {
    // Arrange
    let secret = secret(3);
    let manager = RecordingManager::new();
    let app = spawn(&secret, manager.clone()).await;
    let config = webhook::testing::config([
        ("WEBHOOK_SECRET", secret.clone()),
        ("SIGNATURE_PRESET", "standard-webhooks".to_owned()),
        ("RESOURCE_TYPE", "Switch Port".to_owned()),
        ("PORT", app.port.to_string()),
    ])
    .unwrap();
    let args = webhook::app::cli::SendArgs {
        file: None,
        event: webhook::app::cli::Example::Start,
        event_id: "2002".into(),
        resource_name: "sw1-port-9".into(),
        parameters: "{}".into(),
        url: None,
        wait: false,
        wait_timeout: std::time::Duration::from_secs(1),
    };
    let keys = Keys::new(vec![standard_webhooks_key(&secret).unwrap()])
        .with_preset(Preset::StandardWebhooks);
    let body = fixture("event_start.json");

    // Act
    let sent = webhook::app::cli::send(&config, args).await;
    let headers = keys.sender_headers(&body);

    // Assert
    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(manager.calls(), [Call::Configure("2002".into())]);
    assert!(reference_verifies(&secret, &headers, &body), "{headers:?}");
    assert!(!reference_verifies(&secret, &headers, b"{}"));
    app.stop().await;
}
