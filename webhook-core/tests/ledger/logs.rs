//! What the service process writes to its log, read from a real process at the most verbose
//! level (every crate's events, the HTTP server's included).

use std::time::Duration;

use crate::child::{Child, settings};
use crate::helpers::fixture;

/// Waldur's token travels in the hook's URL; no line of the log may carry it, whether the
/// delivery was refused or admitted.
#[tokio::test]
async fn a_waldur_token_in_the_url_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let token = "waldur-token-that-must-stay-out-of-logs";
    let wrong = "wrong-token-that-must-stay-out-of-logs";
    let mut vars = settings(&dir.path().join("data"));
    vars.retain(|(k, _)| k != "LOG_LEVEL");
    vars.extend(
        [("LOG_LEVEL", "trace"), ("WALDUR_TOKEN", token)]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let child = Child::start(dir.path(), &vars);
    let client = reqwest::Client::new();
    let body = fixture("waldur_order_completed.json");
    for (given, admitted) in [(wrong, false), (token, true)] {
        let response = client
            .post(format!("{}/waldur?token={given}&other=1", child.address))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(status.is_success(), admitted, "token {given}: {status}");
    }
    // Until the admitted delivery's work is done, and logged.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !effects_done(dir.path()) {
        assert!(std::time::Instant::now() < deadline, "{}", child.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = child.log();
    child.kill();
    assert!(log.contains("Waldur delivery refused"), "{log}");
    assert!(log.contains("token=[redacted]&other=1"), "{log}");
    for secret in [token, wrong] {
        assert!(!log.contains(secret), "the log carries {secret}:\n{log}");
    }
}

fn effects_done(dir: &std::path::Path) -> bool {
    crate::child::effects(dir)
        .iter()
        .any(|e| e.starts_with("configure-done"))
}
