//! `examples/api_key.rs` against a real Redis server, checked from outside: by logging in
//! with the key the user receives, and as the `default` administrator.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use serde_json::json;
use webhook::manager::ResourceManager;
use webhook::reservation::{Parameters, Reservation, Resource, User};

use crate::backends::redis::Redis;
use crate::helpers;

#[allow(dead_code)]
#[path = "../../examples/api_key.rs"]
mod example;

use example::{ApiKey, Settings};

/// A booking with id `event_id` and the given custom parameters.
fn booking(event_id: &str, parameters: &[(&str, &str)]) -> Reservation {
    Reservation {
        event_id: event_id.into(),
        user: User {
            id: "5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13".into(),
            username: Some("alice".into()),
            email: None,
            ssh_public_key: None,
        },
        resource: Resource {
            id: 42,
            name: "redis-1".into(),
            kind: "API Key".into(),
            specs: None,
            location: None,
        },
        site: None,
        title: None,
        description: None,
        start: chrono::Utc::now(),
        end: chrono::Utc::now() + chrono::Duration::hours(2),
        parameters: Parameters::from_pairs(parameters.iter().copied()),
    }
}

async fn manager(redis: &Redis) -> ApiKey {
    ApiKey::new(Settings {
        redis_admin_url: redis.admin_url().into(),
        redis_public_host: "127.0.0.1".into(),
        redis_public_port: redis.port,
    })
    .await
    .expect("the manager connects")
}

/// The value of `field=` in the outcome's message.
fn field(message: &str, name: &str) -> String {
    message
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {message:?}"))
        .to_owned()
}

/// Runs one command, returning Redis's error code (`NOPERM`, ...) when it is refused.
async fn run(con: &mut MultiplexedConnection, args: &[&str]) -> Result<redis::Value, String> {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(con)
        .await
        .map_err(|e| e.code().unwrap_or("no code").to_owned())
}

async fn acl_users(redis: &Redis) -> Vec<String> {
    let mut users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut redis.admin().await)
        .await
        .unwrap();
    users.sort();
    users
}

#[tokio::test]
async fn the_key_works_inside_its_prefix_and_is_refused_outside_it() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    run(&mut redis.admin().await, &["SET", "someone:else", "secret"])
        .await
        .unwrap();

    // Act
    let outcome = manager.configure(&booking("103", &[])).await;

    // Assert
    let message = outcome.expect("configure succeeds").message;
    assert!(message.chars().count() <= 500, "{message}");
    assert_eq!(field(&message, "host"), "127.0.0.1");
    assert_eq!(field(&message, "port"), redis.port.to_string());
    assert_eq!(field(&message, "user"), "booking-103");
    let key = field(&message, "key");
    assert!(
        key.len() >= 24 && key.chars().all(|c| c.is_ascii_alphanumeric()),
        "{key}"
    );
    assert!(message.contains("starting with booking:103:"), "{message}");
    let mut con = redis
        .login("booking-103", &key)
        .await
        .expect("the key authenticates");
    assert_eq!(
        run(&mut con, &["PING"]).await,
        Ok(redis::Value::SimpleString("PONG".into()))
    );
    run(&mut con, &["SET", "booking:103:x", "1"])
        .await
        .expect("SET inside");
    assert_eq!(
        run(&mut con, &["GET", "booking:103:x"]).await,
        Ok(redis::Value::BulkString(b"1".to_vec()))
    );
    for outside in [
        &["GET", "someone:else"][..],
        &["SET", "booking:1030:x", "1"],
        &["COPY", "booking:103:x", "someone:copy"],
        &["SCAN", "0"],
        &["KEYS", "*"],
        &["FLUSHALL"],
        &["FUNCTION", "FLUSH"],
        &["ACL", "LIST"],
        &["CONFIG", "GET", "*"],
        &["PUBLISH", "booking:103:c", "m"],
    ] {
        assert_eq!(
            run(&mut con, outside).await,
            Err("NOPERM".into()),
            "{outside:?}"
        );
    }
    assert!(redis.login("booking-103", "wrong").await.is_err());
}

#[tokio::test]
async fn the_read_scope_alone_refuses_writes() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    run(&mut redis.admin().await, &["SET", "booking:5:x", "given"])
        .await
        .unwrap();

    // Act
    let message = manager
        .configure(&booking("5", &[("scopes", " READ ")]))
        .await
        .unwrap()
        .message;

    // Assert
    assert!(message.contains("(scopes read)"), "{message}");
    let mut con = redis
        .login("booking-5", &field(&message, "key"))
        .await
        .unwrap();
    assert_eq!(
        run(&mut con, &["GET", "booking:5:x"]).await,
        Ok(redis::Value::BulkString(b"given".to_vec()))
    );
    assert_eq!(
        run(&mut con, &["SET", "booking:5:x", "2"]).await,
        Err("NOPERM".into())
    );
    assert_eq!(
        run(&mut con, &["DEL", "booking:5:x"]).await,
        Err("NOPERM".into())
    );
}

#[tokio::test]
async fn an_unknown_or_empty_scope_is_refused_and_nothing_is_created() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;

    for (scopes, expected) in [
        (
            "read,admin",
            r#"custom parameter scopes: unknown scope "admin"; allowed: read, write"#,
        ),
        (
            "+@all",
            r#"custom parameter scopes: unknown scope "+@all"; allowed: read, write"#,
        ),
        (
            " , ",
            "custom parameter scopes: name at least one of: read, write",
        ),
    ] {
        // Act
        let result = manager
            .configure(&booking("9", &[("scopes", scopes)]))
            .await;

        // Assert
        let error = result.expect_err(scopes);
        assert!(!error.is_transient());
        assert_eq!(error.message(), expected);
    }
    assert_eq!(acl_users(&redis).await, ["default"]);
}

#[tokio::test]
async fn configuring_again_issues_a_new_key_and_the_old_one_stops_working() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    let reservation = booking("103", &[("scopes", "read,write")]);
    let first = field(
        &manager.configure(&reservation).await.unwrap().message,
        "key",
    );

    // Act
    let second = manager
        .configure(&reservation)
        .await
        .expect("a repeat succeeds");

    // Assert
    let key = field(&second.message, "key");
    assert_ne!(key, first);
    assert!(redis.login("booking-103", &first).await.is_err());
    let mut con = redis.login("booking-103", &key).await.expect("the new key");
    run(&mut con, &["SET", "booking:103:x", "1"]).await.unwrap();
    assert_eq!(acl_users(&redis).await, ["booking-103", "default"]);
}

#[tokio::test]
async fn release_closes_open_connections_and_the_key_stops_working() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    let reservation = booking("103", &[]);
    let key = field(
        &manager.configure(&reservation).await.unwrap().message,
        "key",
    );
    let mut open = redis.login("booking-103", &key).await.unwrap();
    run(&mut open, &["SET", "booking:103:x", "1"])
        .await
        .unwrap();

    // Act
    manager
        .release(&reservation)
        .await
        .expect("release succeeds");

    // Assert
    assert!(
        run(&mut open, &["GET", "booking:103:x"]).await.is_err(),
        "the open connection still works"
    );
    assert!(redis.login("booking-103", &key).await.is_err());
    assert_eq!(acl_users(&redis).await, ["default"]);
    manager
        .release(&reservation)
        .await
        .expect("releasing again succeeds");
    assert_eq!(acl_users(&redis).await, ["default"]);
}

#[tokio::test]
async fn odd_ids_give_distinct_users_whose_keys_work() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    let ids = [
        "103".to_owned(),
        "with space".to_owned(),
        "quote\"and*glob?".to_owned(),
        "Ünïcødé".to_owned(),
        "9".repeat(300),
    ];

    // Act
    let mut users = Vec::new();
    for id in &ids {
        let message = manager
            .configure(&booking(id, &[]))
            .await
            .expect(id)
            .message;

        // Assert
        let user = field(&message, "user");
        let mut con = redis.login(&user, &field(&message, "key")).await.expect(id);
        let prefix = example::key_prefix(id);
        assert!(message.contains(&prefix), "{message}");
        run(&mut con, &["SET", &format!("{prefix}x"), "1"])
            .await
            .expect(id);
        users.push(user);
    }
    users.sort();
    users.dedup();
    assert_eq!(users.len(), ids.len(), "{users:?}");
    for id in &ids {
        manager.release(&booking(id, &[])).await.expect(id);
    }
    assert_eq!(acl_users(&redis).await, ["default"]);
}

#[test]
fn settings_errors_name_the_variable() {
    use crate::vars;

    let missing = Settings::from_vars(vars(&[("REDIS_ADMIN_URL", "redis://r")])).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "invalid configuration: REDIS_PUBLIC_HOST is not set"
    );

    let bad_port = Settings::from_vars(vars(&[
        ("REDIS_ADMIN_URL", "redis://r"),
        ("REDIS_PUBLIC_HOST", "r"),
        ("REDIS_PUBLIC_PORT", "99999"),
    ]))
    .unwrap_err();
    assert!(
        bad_port.to_string().contains("REDIS_PUBLIC_PORT"),
        "{bad_port}"
    );
}

#[tokio::test]
async fn the_webhook_creates_the_key_on_start_and_deletes_it_on_end() {
    // Arrange
    let redis = Redis::start();
    let manager = Arc::new(manager(&redis).await);
    let app = helpers::spawn_app_with(&[("RESOURCE_TYPE", "API Key")], manager).await;
    let event = |name: &str| {
        crate::fixture_with(
            name,
            &[
                ("resourceType", json!("API Key")),
                ("customParameters", json!("{\"scopes\":\"read\"}")),
            ],
        )
    };
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Act
    let started = app.post_webhook(&event("event_start.json")).await;

    // Assert
    assert_eq!(started.status(), 200, "{}", helpers::json(started).await);
    assert_eq!(acl_users(&redis).await, ["booking-103", "default"]);

    // Act
    let ended = app.post_webhook(&event("event_end.json")).await;

    // Assert
    assert_eq!(ended.status(), 200, "{}", helpers::json(ended).await);
    assert_eq!(acl_users(&redis).await, ["default"]);
    app.stop().await;
}
