//! The report outbox: reports outlive a back end that is down, are delivered once, and a
//! refused one can be retried by hand.

use std::time::Duration;

use webhook::app::cli::OutboxCommand;
use webhook::config::Config;
use webhook::engine::ledger::{EntryState, Kind};

use crate::helpers::{Backend, start_backend, vars};
use crate::helpers::{RecordingManager, TestApp, fixture, spawn_app_with};

fn start_of(id: &str) -> Vec<u8> {
    String::from_utf8(fixture("event_start.json"))
        .unwrap()
        .replace("\"eventId\":\"103\"", &format!("\"eventId\":\"{id}\""))
        .into_bytes()
}

/// The outbox's entries (`all`, or only those not delivered) once `done` holds of them, or
/// as they are after two seconds.
pub async fn outbox_when(
    store: &dyn webhook::engine::ledger::Store,
    all: bool,
    done: impl Fn(&[webhook::engine::ledger::Entry]) -> bool,
) -> Vec<webhook::engine::ledger::Entry> {
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = store.outbox_list(all, 10).await.unwrap();
        if done(&entries) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    entries
}

/// The settings the `outbox` command would read next to `app`.
pub fn cli_config(app: &TestApp) -> Config {
    webhook::testing::config([
        (
            "WEBHOOK_SECRET",
            "test-secret-of-at-least-32-bytes-long".to_owned(),
        ),
        ("DATA_DIR", app.data_dir.display().to_string()),
    ])
    .unwrap()
}

async fn app_reporting_to(backend: &Backend) -> TestApp {
    let endpoints = backend.endpoints();
    let mut settings = vars(&endpoints);
    settings.push(("RETRY_BACKOFF", "100ms"));
    spawn_app_with(&settings, RecordingManager::new()).await
}

#[tokio::test]
async fn reports_made_while_the_back_end_is_down_arrive_once_it_is_back_none_lost_none_twice() {
    // Arrange: the back end answers 503 to everything.
    let backend = start_backend().await;
    backend.answer_with(503);
    let app = app_reporting_to(&backend).await;

    // Act: three bookings start while it is down; it comes back a while later.
    for id in ["201", "202", "203"] {
        assert_eq!(app.post_webhook(&start_of(id)).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let refused = backend.received.lock().unwrap().refused;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    backend.answer_with(0);

    // Assert: each was tried more than once, all six arrive, and no more after.
    assert!(refused >= 12, "only {refused} attempts while down");
    assert!(metrics.contains("webhook_outbox_backlog 6"), "{metrics}");
    let (notifications, logs) = backend.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let counts = {
        let r = backend.received.lock().unwrap();
        (r.notifications.len(), r.logs.len())
    };
    assert_eq!(counts, (3, 3));
    let mut ids: Vec<_> = notifications
        .iter()
        .map(|n| n["eventId"].to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["\"201\"", "\"202\"", "\"203\""]);
    assert_eq!(logs.len(), 3);
    let store = webhook::engine::ledger::open(&cli_config(&app), false)
        .await
        .unwrap();
    let entries = store.outbox_list(true, 100).await.unwrap();
    assert_eq!(entries.len(), 6);
    for e in entries {
        assert_eq!(e.state, EntryState::Delivered, "{e:?}");
        assert!(e.attempts >= 2, "{e:?}");
        let expected = match e.kind {
            Kind::Notification => "200 OK",
            Kind::WebhookLog => "201 Created",
        };
        assert_eq!(e.last_status.as_deref(), Some(expected));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_report_the_back_end_refuses_is_marked_failed_and_can_be_retried_by_hand() {
    // Arrange: the back end refuses with 400, which retrying does not change.
    let backend = start_backend().await;
    backend.answer_with(400);
    let app = app_reporting_to(&backend).await;
    app.post_webhook(&fixture("event_start.json")).await;
    let config = cli_config(&app);
    let store = webhook::engine::ledger::open(&config, false).await.unwrap();
    let failed = outbox_when(&*store, false, |entries| {
        entries.len() == 2 && entries.iter().all(|e| e.state == EntryState::Failed)
    })
    .await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    for e in &failed {
        assert_eq!(e.state, EntryState::Failed);
        assert_eq!(e.attempts, 1);
        // The audit log's answers are never kept: its 201 holds the webhook's secret.
        let expected = match e.kind {
            Kind::Notification => "400 Bad Request: down",
            Kind::WebhookLog => "400 Bad Request",
        };
        assert_eq!(e.last_status.as_deref(), Some(expected));
    }

    // Act: the back end is fixed and an operator retries both.
    backend.answer_with(0);
    for e in &failed {
        webhook::app::cli::outbox(&config, OutboxCommand::Retry { id: e.id })
            .await
            .unwrap();
    }

    // Assert
    backend.wait_for(1).await;
    let err = webhook::app::cli::outbox(&config, OutboxCommand::Retry { id: 999 })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no report 999"), "{err}");
    webhook::app::cli::outbox(
        &config,
        OutboxCommand::List {
            all: true,
            limit: 10,
        },
    )
    .await
    .unwrap();
    app.stop().await;
}

/// A server that answers every POST with 307 to the same path on `target`.
async fn redirector(target: &str) -> String {
    use poem::listener::{Acceptor, Listener, TcpListener};
    let target = target.to_owned();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let app = poem::endpoint::make_sync(move |req: poem::Request| {
        poem::Response::builder()
            .status(poem::http::StatusCode::TEMPORARY_REDIRECT)
            .header("location", format!("{target}{}", req.uri().path()))
            .finish()
    });
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_redirected_report_is_not_re_posted_and_fails_saying_why() {
    // Arrange: the configured endpoints redirect to a back end that would accept the report.
    let backend = start_backend().await;
    let elsewhere = redirector(&backend.url).await;
    let endpoints: Vec<(&'static str, String)> = backend
        .endpoints()
        .into_iter()
        .map(|(k, v)| (k, v.replace(&backend.url, &elsewhere)))
        .collect();
    let mut settings = vars(&endpoints);
    settings.push(("RETRY_BACKOFF", "100ms"));
    let app = spawn_app_with(&settings, RecordingManager::new()).await;

    // Act
    app.post_webhook(&fixture("event_start.json")).await;

    // Assert: both reports fail at once on the 307; the signed body went nowhere else.
    let store = webhook::engine::ledger::open(&cli_config(&app), false)
        .await
        .unwrap();
    let failed = outbox_when(&*store, false, |entries| {
        entries.len() == 2 && entries.iter().all(|e| e.state == EntryState::Failed)
    })
    .await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    for e in &failed {
        assert_eq!(e.state, EntryState::Failed, "{e:?}");
        let status = e.last_status.as_deref().unwrap_or_default();
        assert!(
            status.starts_with(
                "307 Temporary Redirect: redirects are not followed (to http://127.0.0.1:"
            ),
            "{status}"
        );
    }
    let received = {
        let r = backend.received.lock().unwrap();
        (r.notifications.len(), r.logs.len())
    };
    assert_eq!(
        received,
        (0, 0),
        "a redirect carried the signed report to another server"
    );
    app.stop().await;
}

#[tokio::test]
async fn what_a_user_was_given_is_not_kept_on_disk_once_delivered() {
    use webhook::contract::reservation::Reservation;
    use webhook::manager::{ManagerError, Outcome, ResourceManager};
    const PASSWORD: &str = "pw-7Hq2Zr91-only-for-the-user";
    struct GivesAPassword;
    #[async_trait::async_trait]
    impl ResourceManager for GivesAPassword {
        async fn configure(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
            Ok(Outcome::new(format!("log in with password {PASSWORD}")))
        }
        async fn release(&self, _: &Reservation) -> Result<Outcome, ManagerError> {
            Ok(Outcome::new("gone"))
        }
    }
    let backend = start_backend().await;
    let endpoints = backend.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let mut settings = vars(&endpoints);
    settings.push(("DATA_DIR", &data_dir));
    let app = crate::helpers::spawn_app_with(&settings, std::sync::Arc::new(GivesAPassword)).await;
    app.post_webhook(&fixture("event_start.json")).await;
    let (notifications, _) = backend.wait_for(1).await;
    assert!(
        notifications[0]["message"]
            .as_str()
            .unwrap()
            .contains(PASSWORD)
    );
    let store = webhook::engine::ledger::open(&cli_config(&app), false)
        .await
        .unwrap();
    outbox_when(&*store, true, |entries| {
        entries.iter().all(|e| e.state == EntryState::Delivered)
    })
    .await;
    drop(store);
    let data_dir = app.data_dir.clone();
    app.stop().await;
    assert!(data_dir.starts_with(dir.path()));

    // The ledger's thread closes the file once the service is gone; its write-ahead log,
    // which keeps earlier versions of pages, is folded into the file and removed then.
    let wal = data_dir.join("ledger.db-wal");
    for _ in 0..100 {
        if !wal.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing in the ledger's files holds the password: not the booking, not the outbox.
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "{} holds the user's password",
            path.display()
        );
    }
}
