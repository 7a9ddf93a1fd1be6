//! `SIGNATURE_PRESET`: the reservation system's signatures, GitHub's, and agent registries'
//! (secret Base64-decoded first), checked with the vectors of `tests/fixtures/signatures.json`.

use webhook::contract::signature::Preset;

use crate::helpers::{RecordingManager, fixture, fixture_secret, json, signatures, spawn_app_with};

const HUB: &str = "x-hub-signature-256";

#[tokio::test]
async fn the_github_preset_verifies_x_hub_signature_256_only() {
    // Arrange: signed as GitHub signs (its documented vector's secret is too short for the
    // service; the vector itself is checked in `signature` and `contract`). Not a
    // reservation event, so a body that passes the signature stops at parsing (400).
    let secret = fixture_secret();
    let app = spawn_app_with(
        &[("SIGNATURE_PRESET", "github"), ("WEBHOOK_SECRET", &secret)],
        RecordingManager::new(),
    )
    .await;
    let body = b"Hello, World!";
    let headers = webhook::contract::signature::Keys::new(vec![secret.clone().into_bytes()])
        .with_preset(Preset::Github)
        .sender_headers(body);
    let [(name, header)] = &headers[..] else {
        panic!("one header: {headers:?}")
    };
    assert_eq!(*name, HUB);

    // Act
    let right = app.post_with(body, &[(HUB, header)]).await;
    let other_header = app
        .post_with(body, &[("x-webhook-signature", header)])
        .await;
    let other_body = app.post_with(b"Hello, World?", &[(HUB, header)]).await;

    // Assert
    assert_eq!(right.status(), 400, "the signature was accepted");
    assert_eq!(other_header.status(), 401);
    assert_eq!(
        json(other_header).await["message"],
        "missing signature: send X-Hub-Signature-256: sha256=<hex>"
    );
    assert_eq!(other_body.status(), 401);
    assert_eq!(
        json(other_body).await["message"],
        "signature does not match the body"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_agent_registry_preset_decodes_the_secret_and_verifies_the_decoded_secret_case() {
    let case = &signatures()["decoded_secret_case"];
    let header = case["x_hub_signature_256"].as_str().unwrap();
    let body = fixture("event_start.json");
    for (preset, expected) in [
        ("agent-registry", 200),
        ("github", 401),
        ("reservation-system", 401),
    ] {
        // Arrange: the fixture secret, which is Base64 text.
        let manager = RecordingManager::new();
        let app = spawn_app_with(&[("SIGNATURE_PRESET", preset)], manager.clone()).await;

        // Act
        let response = app.post_with(&body, &[(HUB, header)]).await;

        // Assert
        assert_eq!(response.status(), expected, "SIGNATURE_PRESET={preset}");
        assert_eq!(
            manager.calls().len(),
            usize::from(expected == 200),
            "{preset}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn the_reservation_system_preset_is_the_default_behaviour() {
    // Arrange
    let manager = RecordingManager::new();
    let app = spawn_app_with(
        &[("SIGNATURE_PRESET", "Reservation-System")],
        manager.clone(),
    )
    .await;
    let case = &signatures()["cases"][0];
    let hex = format!("sha256={}", case["hex"].as_str().unwrap());

    // Act
    let base64 = app
        .post_with(
            &fixture("event_start.json"),
            &[(
                "x-webhook-signature",
                case["x_webhook_signature_base64"].as_str().unwrap(),
            )],
        )
        .await;
    let hub = app
        .post_with(&fixture("event_start.json"), &[(HUB, &hex)])
        .await;

    // Assert
    assert_eq!(json(base64).await["status"], "configured");
    assert_eq!(json(hub).await["status"], "duplicate");
    app.stop().await;
}

#[test]
fn a_preset_decides_the_secret_encoding_and_a_contradiction_stops_start_up_naming_both() {
    // Arrange
    let config = |preset: &str, encoding: Option<&str>, secret: &str| {
        let mut vars = vec![("WEBHOOK_SECRET", secret), ("SIGNATURE_PRESET", preset)];
        vars.extend(encoding.map(|e| ("WEBHOOK_SECRET_ENCODING", e)));
        webhook::testing::config(vars)
    };
    let secret = fixture_secret();

    // Act
    let agreeing = config("agent-registry", Some("base64"), &secret);
    let contradicting = config("github", Some("base64"), &secret);
    let not_base64 = config("agent-registry", None, "not base64!");

    // Assert
    assert_eq!(
        agreeing.unwrap().keys.unwrap().preset(),
        Preset::AgentRegistry
    );
    let err = contradicting.unwrap_err().to_string();
    assert!(
        err.contains("WEBHOOK_SECRET_ENCODING=base64 contradicts SIGNATURE_PRESET=github"),
        "{err}"
    );
    let err = not_base64.unwrap_err().to_string();
    assert!(
        err.contains("WEBHOOK_SECRET is not Base64, but SIGNATURE_PRESET=agent-registry"),
        "{err}"
    );
}

#[tokio::test]
async fn send_signs_the_way_the_preset_expects() {
    // Arrange
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("SIGNATURE_PRESET", "agent-registry")], manager.clone()).await;
    let config = webhook::testing::config([
        ("WEBHOOK_SECRET", fixture_secret()),
        ("SIGNATURE_PRESET", "agent-registry".to_owned()),
        ("RESOURCE_TYPE", "Switch Port".to_owned()),
        ("PORT", app.port.to_string()),
    ])
    .unwrap();
    let args = webhook::app::cli::SendArgs {
        file: None,
        event: webhook::app::cli::Example::Start,
        event_id: "2001".into(),
        resource_name: "sw1-port-9".into(),
        parameters: "{}".into(),
        url: None,
        wait: false,
        wait_timeout: std::time::Duration::from_secs(1),
    };

    // Act
    let sent = webhook::app::cli::send(&config, args).await;

    // Assert
    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(
        manager.calls(),
        [crate::helpers::Call::Configure("2001".into())]
    );
    app.stop().await;
}
