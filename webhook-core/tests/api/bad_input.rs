//! Bad input: each gets its documented status and a message naming the problem, and none
//! reaches the manager.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{RecordingManager, fixture, json, spawn_app, spawn_app_with};

async fn assert_refused(response: reqwest::Response, code: u16, message: &str) {
    assert_eq!(
        response.status().as_u16(),
        code,
        "expected {code} for {message:?}"
    );
    let body = json(response).await;
    let text = body["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(message),
        "{text:?} does not contain {message:?}"
    );
}

#[tokio::test]
async fn bad_signatures_are_refused_with_401_before_anything_is_parsed() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    let body = fixture("event_start.json");
    let good = crate::helpers::signatures()["cases"][0]["x_webhook_signature_base64"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_body = crate::helpers::signatures()["cases"][1]["x_webhook_signature_base64"]
        .as_str()
        .unwrap()
        .to_owned();

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("missing", vec![], "missing signature"),
        (
            "wrong body",
            vec![("x-webhook-signature", other_body.as_str())],
            "does not match",
        ),
        (
            "truncated",
            vec![("x-webhook-signature", &good[..20])],
            "malformed",
        ),
        (
            "not base64",
            vec![("x-webhook-signature", "!!not*base64!!")],
            "malformed",
        ),
        ("empty", vec![("x-webhook-signature", "")], "malformed"),
        (
            "wrong secret",
            vec![(
                "x-webhook-signature",
                "AOrnqMPCXysvJkm1JkpehS+xeoUIHraV+99Qriq42Dc=",
            )],
            "does not match",
        ),
    ];
    for (name, headers, message) in cases {
        let response = app.post_with(&body, &headers).await;
        assert_eq!(response.status(), 401, "{name}");
        let reply = json(response).await;
        assert_eq!(reply["status"], "unauthorized", "{name}");
        assert!(
            reply["message"].as_str().unwrap().contains(message),
            "{name}: {reply}"
        );
    }
    // A signature over bytes that are not even JSON is still a 401, not a 400.
    let response = app.post_with(b"not json", &[]).await;
    assert_eq!(response.status(), 401);
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_400_and_a_message_naming_the_problem() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    let start = String::from_utf8(fixture("event_start.json")).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "body is empty"),
        ("not json".into(), "body is not valid JSON"),
        ("[1,2,3]".into(), "body must be a JSON object, got an array"),
        (
            "\"EVENT_START\"".into(),
            "body must be a JSON object, got a string",
        ),
        ("{}".into(), "missing field `eventType`"),
        (
            start.replace(
                "\"eventStart\":\"2026-11-23T10:00:00Z\"",
                "\"eventStart\":12",
            ),
            "field eventStart: invalid type",
        ),
        (
            start.replace(
                "\"eventStart\":\"2026-11-23T10:00:00Z\"",
                "\"eventStart\":\"tomorrow\"",
            ),
            "field eventStart",
        ),
        (
            start.replace("\"resourceId\":42", "\"resourceId\":\"forty-two\""),
            "field resourceId",
        ),
        (
            start.replace("\"eventId\":\"103\"", "\"eventId\":[103]"),
            "field eventId",
        ),
        (
            start.replace(",\"resourceType\":\"Switch Port\"", ""),
            "missing field resourceType",
        ),
        (
            start.replace(",\"userId\":\"5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13\"", ""),
            "missing field userId",
        ),
        (format!("{start} trailing"), "body is not valid JSON"),
    ];
    for (body, message) in cases {
        let response = app.post_webhook(body.as_bytes()).await;
        assert_refused(response, 400, message).await;
    }
    assert!(manager.calls().is_empty(), "{:?}", manager.calls());
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_event_type_is_acknowledged_as_ignored() {
    let manager = RecordingManager::new();
    let app = spawn_app(manager.clone()).await;
    let response = app
        .post_webhook(br#"{"eventType":"EVENT_TELEPORTED","eventId":{"weird":true}}"#)
        .await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["status"], "ignored");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("EVENT_TELEPORTED")
    );
    assert!(manager.calls().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_with_or_without_content_length() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "1024")], manager.clone()).await;
    let big = format!(
        r#"{{"eventType":"EVENT_START","pad":"{}"}}"#,
        "x".repeat(2048)
    );

    // With Content-Length.
    let response = app.post_webhook(big.as_bytes()).await;
    assert_refused(response, 413, "body exceeds 1024 bytes").await;

    // Chunked, so the size is only known while reading.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let mut request = String::from(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for chunk in big.as_bytes().chunks(500) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("body exceeds 1024 bytes"), "{reply}");

    // A body just within the limit still goes through.
    let response = app.post_webhook(&fixture("event_start_minimal.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(manager.calls().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn other_methods_and_paths_are_refused() {
    let app = spawn_app(RecordingManager::new()).await;
    assert_eq!(app.get("/webhook").await.status(), 405);
    assert_eq!(app.get("/nope").await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn unsigned_mode_accepts_events_without_a_signature() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(
        &[("WEBHOOK_SECRET", ""), ("ALLOW_UNSIGNED", "true")],
        manager.clone(),
    )
    .await;
    let response = app.post_with(&fixture("event_start.json"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(manager.calls().len(), 1);
    app.stop().await;
}
