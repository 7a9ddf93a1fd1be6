//! The `conformance` command: this service passes every case, with its default of answering
//! at once and with a processing budget; a webhook that gets the contract wrong has each
//! wrong answer reported as a failure, with what was expected.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser as _;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Route, handler, post};
use serde_json::{Value, json};
use webhook::app::cli::{Cli, Command};
use webhook::app::conformance::{self, CaseResult, Report, Target, Verdict};
use webhook::contract::signature::Preset;

use crate::helpers::{Call, RecordingManager, fixture_secret, spawn_app_with};

fn failures(report: &Report) -> Vec<&CaseResult> {
    report.failures().collect()
}

fn case<'a>(report: &'a Report, name: &str) -> &'a CaseResult {
    report
        .case(name)
        .unwrap_or_else(|| panic!("no case {name:?} in\n{}", report.table()))
}

#[tokio::test]
async fn this_service_passes_every_conformance_case_and_every_booking_it_starts_is_ended() {
    // The service's own default (answer at once, work in the background), then with the
    // reply waiting for the manager; the replay check on, so every timestamp must be fresh.
    for budget in ["", "5s"] {
        let manager = RecordingManager::new();
        let app = spawn_app_with(
            &[("PROCESSING_BUDGET", budget), ("REPLAY_TOLERANCE", "5m")],
            manager.clone(),
        )
        .await;
        let target = Target::new(
            format!("{}/webhook", app.address),
            fixture_secret().into(),
            "Switch Port",
        );

        let report = conformance::run(&target).await.unwrap();

        assert!(
            report.passed(),
            "PROCESSING_BUDGET={budget:?}: {:?}\n{}",
            failures(&report),
            report.table()
        );
        assert!(report.ensure_passed().is_ok());
        assert!(report.results.len() >= 40, "{}", report.table());
        assert!(
            report
                .results
                .iter()
                .all(|r| !r.case.starts_with("cleanup")),
            "nothing was left to end: {}",
            report.table()
        );
        // Every booking configured was released, and each was a test booking.
        let configured: Vec<String> = manager
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Configure(id) => Some(id),
                _ => None,
            })
            .collect();
        assert!(configured.len() >= 8, "{configured:?}");
        for id in &configured {
            assert!(id.starts_with(&format!("conformance-{}-", report.run_id)));
            app.wait_for_state(id, "released", Duration::from_secs(10))
                .await;
        }
        for r in manager.reservations.lock().unwrap().iter() {
            assert!(r.resource.name.starts_with("conformance-test-"), "{r:?}");
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn a_standard_webhooks_receiver_passes_when_checked_with_that_preset_and_its_own_cases_run() {
    // Arrange: this service verifying Standard Webhooks signatures with a whsec_ secret.
    use base64::Engine as _;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let app = spawn_app_with(
        &[
            ("SIGNATURE_PRESET", "standard-webhooks"),
            ("WEBHOOK_SECRET", &secret),
            ("REPLAY_TOLERANCE", "5m"),
        ],
        RecordingManager::new(),
    )
    .await;
    let target = Target::new(
        format!("{}/webhook", app.address),
        secret.clone().into(),
        "Switch Port",
    );

    // Act
    let signed_so = conformance::run(&target.clone().with_preset(Preset::StandardWebhooks))
        .await
        .unwrap();
    let signed_otherwise = conformance::run(&target).await.unwrap();

    // Assert: every case passes, the preset's own among them; signed the reservation
    // system's way, every delivery a sender would sign well is refused.
    assert!(signed_so.passed(), "{}", signed_so.table());
    for name in [
        "signature two v1 entries, one valid (a key rotation): START",
        "START without webhook-id",
        "START with a webhook-timestamp a day old",
    ] {
        assert_eq!(case(&signed_so, name).verdict, Verdict::Pass, "{name}");
    }
    let refused = case(&signed_otherwise, "flat EVENT_START");
    assert_eq!(
        refused.verdict,
        Verdict::Fail,
        "{}",
        signed_otherwise.table()
    );
    assert!(refused.got.contains("401"), "{refused:?}");
    app.stop().await;
}

/// A webhook that gets three things wrong: it refuses the admin's ping, it takes 2 s to
/// answer each START, and it never checks a signature.
#[handler]
async fn careless(body: Vec<u8>, Data(starts): Data<&Arc<AtomicUsize>>) -> (StatusCode, String) {
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    match event["eventType"].as_str() {
        Some("ALL") => (
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "message": "unknown event"}).to_string(),
        ),
        Some("EVENT_START") => {
            starts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
            (StatusCode::OK, json!({"status": "configured"}).to_string())
        }
        _ => (StatusCode::OK, json!({"status": "ok"}).to_string()),
    }
}

#[tokio::test]
async fn a_webhook_that_gets_the_contract_wrong_has_each_wrong_answer_reported_as_a_failure() {
    let starts = Arc::new(AtomicUsize::new(0));
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let app = Route::new()
        .at("/webhook", post(careless))
        .data(starts.clone());
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    let target = Target::new(
        format!("http://127.0.0.1:{port}/webhook"),
        fixture_secret().into(),
        "Switch Port",
    );

    let report = conformance::run(&target).await.unwrap();

    assert!(!report.passed(), "{}", report.table());
    let err = report.ensure_passed().unwrap_err().to_string();
    assert!(err.contains("cases failed"), "{err}");

    let ping = case(&report, "ALL");
    assert!(!ping.passed());
    assert_eq!(ping.expected, "2xx \"ignored\"");
    assert_eq!(ping.got, "400 \"error\"");
    assert_eq!(ping.reason.as_deref(), Some("expected 2xx \"ignored\""));

    for name in [
        "START signed with another secret",
        "START signature missing",
        "START body changed after signing",
        "START signature garbage",
    ] {
        let r = case(&report, name);
        assert!(!r.passed(), "{name}: {r:?}");
        assert!(r.expected.starts_with("401"), "{name}: {r:?}");
        assert!(r.got.starts_with("200"), "{name}: {r:?}");
    }

    let slow = case(&report, "flat EVENT_START");
    assert!(!slow.passed(), "{slow:?}");
    assert_eq!(slow.expected, "2xx within 250ms");
    assert!(slow.latency >= Duration::from_secs(2), "{slow:?}");
    assert_eq!(slow.reason.as_deref(), Some("slower than the 250ms budget"));
    // Its END was fast, and right.
    assert!(case(&report, "flat EVENT_END").passed());

    // The bookings it accepted with a bad signature were ended all the same.
    let cleanups = report
        .results
        .iter()
        .filter(|r| r.case.starts_with("cleanup: EVENT_END"))
        .count();
    assert!(cleanups >= 4, "{}", report.table());

    // The JSON for CI: an array with one object per case.
    let rows: Value = serde_json::from_str(&report.json()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), report.results.len());
    let ping = rows.iter().find(|r| r["case"] == ping.case).unwrap();
    assert_eq!(ping["verdict"], "fail");
    assert_eq!(ping["expected"], "2xx \"ignored\"");
    assert_eq!(ping["got"], "400 \"error\"");
    assert!(ping["latencyMs"].is_u64(), "{ping}");
    assert!(starts.load(Ordering::SeqCst) > 0);
}

#[test]
fn the_conformance_command_takes_a_url_and_flags_and_needs_no_other_settings() {
    let cli = Cli::try_parse_from([
        "webhook",
        "conformance",
        "http://127.0.0.1:9/webhook",
        "--secret",
        "a-secret-for-the-command-line-test",
        "--resource-type",
        "Switch Port",
        "--latency-budget",
        "100ms",
        "--json",
    ])
    .unwrap();
    let Some(Command::Conformance(args)) = cli.command else {
        panic!("not conformance: {cli:?}");
    };
    assert_eq!(args.latency_budget, Duration::from_millis(100));
    assert!(args.json);
    let target = Target::from_args(&args, "").unwrap();
    assert_eq!(target.resource_type, "Switch Port");
    assert_eq!(target.url, "http://127.0.0.1:9/webhook");
    // The secret is never printed.
    assert!(!format!("{args:?}").contains("a-secret-for"));
}

#[tokio::test]
async fn a_target_that_is_not_an_http_url_is_refused_before_anything_is_sent() {
    for url in ["127.0.0.1:8080/webhook", "ftp://127.0.0.1/webhook"] {
        let target = Target::new(url, "a-secret".to_owned().into(), "Switch Port");
        let err = conformance::run(&target).await.unwrap_err().to_string();
        assert!(err.contains("URL"), "{url}: {err}");
    }
}
