//! `kill -9` of a real service process while a call blocks: after a restart on the same
//! ledger the call is resumed and finished, nothing is configured twice, nothing leaks.

use std::path::Path;

use serde_json::Value;
use webhook::contract::signature::Keys;

use crate::child::{Child, effects, settings, wait_for_effect};
use crate::helpers::{ADMIN_TOKEN, fixture, fixture_secret};

async fn post(child: &Child, name: &str) -> (u16, Value) {
    let body = fixture(name);
    let signature = Keys::new(vec![fixture_secret().into_bytes()]).sign(&body);
    let response = reqwest::Client::new()
        .post(format!("{}/webhook", child.address))
        .header("x-webhook-signature", signature)
        .body(body)
        .send()
        .await
        .expect("the child answers");
    let code = response.status().as_u16();
    (
        code,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

async fn status(child: &Child, id: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}/bookings/{id}", child.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

async fn settled(child: &Child, id: &str) -> Value {
    for _ in 0..400 {
        let s = status(child, id).await;
        if s["settled"] == true {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("booking {id} did not settle: {}", status(child, id).await);
}

fn count(dir: &Path, line: &str) -> usize {
    effects(dir).iter().filter(|l| *l == line).count()
}

#[tokio::test]
async fn a_service_killed_during_configure_finishes_it_after_a_restart_and_configures_once() {
    // Arrange: configure blocks.
    let dir = tempfile::tempdir().unwrap();
    let (d, vars) = (dir.path(), settings(&dir.path().join("data")));
    std::fs::write(d.join("block-configure"), "").unwrap();
    let child = Child::start(d, &vars);

    // Act: START is accepted (202 past the budget), then the process is killed mid-call.
    let (code, reply) = post(&child, "event_start.json").await;
    assert_eq!((code, reply["status"].as_str()), (202, Some("accepted")));
    wait_for_effect(d, "configure-start 103").await;
    child.kill();
    std::fs::remove_file(d.join("block-configure")).unwrap();
    let child = Child::start(d, &vars);

    // Assert: the configure is resumed and finished once; later deliveries behave.
    wait_for_effect(d, "configure-done 103").await;
    assert_eq!(settled(&child, "103").await["state"], "active");
    assert_eq!(
        post(&child, "event_start.json").await.1["status"],
        "duplicate"
    );
    assert_eq!(post(&child, "event_end.json").await.1["status"], "released");
    assert_eq!(count(d, "configure-start 103"), 2, "{:?}", effects(d));
    assert_eq!(count(d, "configure-done 103"), 1, "{:?}", effects(d));
    assert_eq!(count(d, "release-done 103"), 1, "{:?}", effects(d));
    let history = status(&child, "103").await["history"].to_string();
    assert!(history.contains("configure attempt 2 started"), "{history}");
    child.kill();
}

#[tokio::test]
async fn a_service_killed_during_release_finishes_it_after_a_restart_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, vars) = (dir.path(), settings(&dir.path().join("data")));
    let child = Child::start(d, &vars);
    assert_eq!(
        post(&child, "event_start.json").await.1["status"],
        "configured"
    );
    std::fs::write(d.join("block-release"), "").unwrap();

    let (code, _) = post(&child, "event_end.json").await;
    assert_eq!(code, 202);
    wait_for_effect(d, "release-start 103").await;
    child.kill();
    std::fs::remove_file(d.join("block-release")).unwrap();
    let child = Child::start(d, &vars);

    wait_for_effect(d, "release-done 103").await;
    assert_eq!(settled(&child, "103").await["state"], "released");
    assert_eq!(
        post(&child, "event_end.json").await.1["status"],
        "duplicate"
    );
    assert_eq!(
        post(&child, "event_start.json").await.1["status"],
        "ignored"
    );
    assert_eq!(count(d, "configure-done 103"), 1, "{:?}", effects(d));
    assert_eq!(count(d, "release-done 103"), 1, "{:?}", effects(d));
    child.kill();
}
