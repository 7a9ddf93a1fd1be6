//! What a client that is not the sender can hold: requests in flight, slow or oversized
//! headers and bodies, idle and excess connections. Each test plays the client over a raw
//! TCP connection, as an attacker would.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{RecordingManager, TestApp, fixture, json, spawn_app_with};

/// Connects and sends `head` (request line and headers, without the blank line) and,
/// with `body`, the blank line and those bytes.
async fn raw(app: &TestApp, head: &str, body: Option<&[u8]>) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    if let Some(body) = body {
        stream.write_all(b"\r\n").await.unwrap();
        stream.write_all(body).await.unwrap();
    }
    stream
}

/// A POST that declares a body of `length` bytes; the caller sends (part of) it.
fn post_head(length: usize) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n"
    )
}

/// What the server sends until it closes the connection or `within` passes; `None` if
/// it kept the connection open that long.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn deliveries_beyond_max_concurrent_requests_get_503_and_health_still_answers() {
    let manager = RecordingManager::new();
    let app = spawn_app_with(
        &[
            ("MAX_CONCURRENT_REQUESTS", "2"),
            ("PROCESSING_BUDGET", "5s"),
        ],
        manager.clone(),
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(raw(&app, &post_head(100), Some(b"{\"event")).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let response = app.post_webhook(&fixture("event_start.json")).await;
    assert_eq!(response.status(), 503);
    let reply = json(response).await;
    assert_eq!(reply["status"], "busy");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("MAX_CONCURRENT_REQUESTS"),
        "{reply}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert!(manager.calls().is_empty());

    // Once the slow uploads are gone, deliveries get through again.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = app.post_webhook(&fixture("event_start.json")).await;
    assert!(response.status().is_success(), "{}", response.status());
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_after_body_timeout() {
    let app = spawn_app_with(&[("BODY_TIMEOUT", "1s")], RecordingManager::new()).await;
    let mut stream = raw(&app, &post_head(100), Some(b"{\"event")).await;

    let seen = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the stalled upload was cut off");

    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    assert!(seen.contains("BODY_TIMEOUT"), "{seen}");
    app.stop().await;
}

#[tokio::test]
async fn headers_that_trickle_in_are_cut_off_after_header_timeout() {
    let app = spawn_app_with(&[("HEADER_TIMEOUT", "1s")], RecordingManager::new()).await;
    let mut stream = raw(&app, "POST /webhook HTTP/1.1\r\nHost: localhost\r\n", None).await;
    // A header line every 200 ms: never idle, never done.
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for i in 0..25 {
            if writer
                .write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let cut = tokio::time::timeout(Duration::from_secs(4), async {
        tokio::join!(trickle, closed);
    })
    .await;
    assert!(cut.is_ok(), "headers still accepted after 4 s");
    app.stop().await;
}

#[tokio::test]
async fn headers_beyond_16_kib_close_the_connection_before_they_are_parsed() {
    let app = spawn_app_with(&[], RecordingManager::new()).await;
    // Few enough lines for hyper's own limit of 100 headers, 20 KiB in all.
    let padding: String = (0..20)
        .map(|i| format!("X-Pad-{i:02}: {}\r\n", "x".repeat(1024)))
        .collect();
    assert!(padding.len() > 16 * 1024);
    let mut stream = raw(&app, &(post_head(2) + &padding), Some(b"{}")).await;

    let seen = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection was closed");

    // Parsed, the request would have been refused for its missing signature (401).
    assert!(!seen.contains("HTTP/1.1 401"), "{seen}");
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let app = spawn_app_with(
        &[("MAX_CONNECTIONS", "3"), ("MAX_CONCURRENT_REQUESTS", "1")],
        RecordingManager::new(),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(("127.0.0.1", app.port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut extra = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let seen = read_until_closed(&mut extra, Duration::from_secs(2)).await;
    assert_eq!(seen.as_deref(), Some(""), "the extra connection was served");

    // A connection closed frees its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stream = raw(
        &app,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
        Some(b""),
    )
    .await;
    let seen = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    assert!(seen.unwrap_or_default().starts_with("HTTP/1.1 200"));
    app.stop().await;
}

#[tokio::test]
async fn a_connection_idle_for_idle_timeout_is_closed() {
    let app = spawn_app_with(&[("IDLE_TIMEOUT", "10s")], RecordingManager::new()).await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();

    let seen = read_until_closed(&mut stream, Duration::from_secs(14)).await;

    assert_eq!(seen.as_deref(), Some(""), "an idle connection was kept");
    app.stop().await;
}
