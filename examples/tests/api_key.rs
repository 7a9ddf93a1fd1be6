//! `examples/api_key.rs` against a real Redis server, checked from outside: by logging in
//! with the key the user receives, and as the administrator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::json;
use webhook::contract::reservation::{Parameters, Reservation, Resource, User};
use webhook::engine::seal::{self, Key, Seal};
use webhook::manager::ResourceManager;

use crate::backends::redis::{ADMIN_USER, Redis};
use crate::helpers::{self, Shown as _, secret};

#[allow(dead_code)]
#[path = "../api_key.rs"]
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

fn settings(redis: &Redis, admin_url: String) -> Settings {
    Settings {
        redis_admin_url: admin_url.into(),
        redis_public_host: "127.0.0.1".into(),
        redis_public_port: redis.port,
    }
}

async fn manager(redis: &Redis) -> ApiKey {
    ApiKey::new(settings(redis, redis.admin_url()))
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

/// The server's ACL users but the administrator the tests connect as.
async fn acl_users(redis: &Redis) -> Vec<String> {
    let mut users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut redis.admin().await)
        .await
        .unwrap();
    users.retain(|u| u != ADMIN_USER);
    users.sort();
    users
}

/// Configures `event_id` with the default scopes and logs in with its key.
async fn logged_in(manager: &ApiKey, redis: &Redis, event_id: &str) -> MultiplexedConnection {
    let message = manager
        .configure(&booking(event_id, &[]))
        .await
        .expect(event_id)
        .shown();
    redis
        .login(&field(&message, "user"), &secret(&message))
        .await
        .expect(event_id)
}

#[tokio::test]
async fn the_manager_refuses_to_start_while_the_default_user_is_open() {
    // Arrange: a fresh server, whose default user needs no password and reaches every key
    let redis = Redis::start_open();

    // Act
    let refused = ApiKey::new(settings(&redis, redis.open_url())).await;

    // Assert
    let Err(error) = refused else {
        panic!("the manager started");
    };
    let message = format!("{error:#}");
    assert!(
        message.starts_with("Redis's default user needs no password"),
        "{message}"
    );
    assert!(message.contains("`ACL SETUSER default off`"), "{message}");
    assert!(
        message.contains("`ACL SETUSER default on >PASSWORD`"),
        "{message}"
    );

    // Act: the owner gives it a password
    let mut open = redis::Client::open(redis.open_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    run(
        &mut open,
        &["ACL", "SETUSER", "default", "on", ">owner-secret"],
    )
    .await
    .unwrap();
    let with_password = format!("redis://default:owner-secret@127.0.0.1:{}", redis.port);
    let started = ApiKey::new(settings(&redis, with_password)).await;

    // Assert
    assert!(started.is_ok(), "{:#}", started.err().unwrap());
}

#[tokio::test]
async fn a_booking_cannot_allocate_far_beyond_what_it_sends() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    let mut con = logged_in(&manager, &redis, "103").await;
    run(&mut con, &["SET", "booking:103:k", "v"]).await.unwrap();

    for command in [
        &["SETRANGE", "booking:103:k", "536870000", "x"][..],
        &["SETBIT", "booking:103:k", "4294967295", "1"],
        &["BITFIELD", "booking:103:k", "SET", "u8", "4294967288", "1"],
    ] {
        // Act
        let refused = run(&mut con, command).await;

        // Assert
        assert_eq!(refused, Err("NOPERM".into()), "{command:?}");
    }
    assert_eq!(
        run(
            &mut con,
            &["BITFIELD_RO", "booking:103:k", "GET", "u8", "0"]
        )
        .await,
        Ok(redis::Value::Array(vec![redis::Value::Int(118)]))
    );
    assert_eq!(
        run(&mut con, &["STRLEN", "booking:103:k"]).await,
        Ok(redis::Value::Int(1))
    );
}

#[tokio::test]
async fn release_deletes_the_bookings_keys_and_no_other_bookings() {
    // Arrange: booking 1's prefix is a string prefix of booking 10's, and "1*" has a glob
    // character in its id; booking 1 has more keys than one SCAN round returns
    let redis = Redis::start();
    let manager = manager(&redis).await;
    let mut one = logged_in(&manager, &redis, "1").await;
    let mut ten = logged_in(&manager, &redis, "10").await;
    let mut glob = logged_in(&manager, &redis, "1*").await;
    let glob_prefix = example::key_prefix("1*");
    let mut bulk = redis::pipe();
    for i in 0..2500 {
        bulk.cmd("SET")
            .arg(format!("booking:1:bulk:{i}"))
            .arg(i)
            .ignore();
    }
    bulk.query_async::<()>(&mut one).await.unwrap();
    run(&mut ten, &["SET", "booking:10:x", "ten"])
        .await
        .unwrap();
    run(&mut glob, &["SET", &format!("{glob_prefix}x"), "glob"])
        .await
        .unwrap();
    run(
        &mut redis.admin().await,
        &["SET", "booking:1", "not a booking's"],
    )
    .await
    .unwrap();

    // Assert: neither booking reaches the other's keys
    for key in ["booking:10:x", "booking:1:bulk:0"] {
        assert_eq!(run(&mut glob, &["GET", key]).await, Err("NOPERM".into()));
    }
    assert_eq!(
        run(&mut one, &["GET", "booking:10:x"]).await,
        Err("NOPERM".into())
    );
    assert_eq!(
        run(&mut one, &["SET", "booking:10:y", "1"]).await,
        Err("NOPERM".into())
    );

    // Act
    manager.release(&booking("1*", &[])).await.unwrap();
    manager.release(&booking("1", &[])).await.unwrap();

    // Assert
    let mut admin = redis.admin().await;
    let mut left: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    let released = |k: &String| k.starts_with("booking:1:") || k.starts_with(&glob_prefix);
    let stale = left.iter().filter(|k| released(k)).count();
    assert_eq!(stale, 0, "keys of the released bookings are left");
    left.sort();
    assert_eq!(left, ["booking:1", "booking:10:x"]);
    assert_eq!(
        run(&mut ten, &["GET", "booking:10:x"]).await,
        Ok(redis::Value::BulkString(b"ten".to_vec()))
    );
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
    let message = outcome.expect("configure succeeds").shown();
    assert!(message.chars().count() <= 500, "{message}");
    assert_eq!(field(&message, "host"), "127.0.0.1");
    assert_eq!(field(&message, "port"), redis.port.to_string());
    assert_eq!(field(&message, "user"), "booking-103");
    let key = secret(&message);
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
        .shown();

    // Assert
    assert!(message.contains("(scopes read)"), "{message}");
    let mut con = redis.login("booking-5", &secret(&message)).await.unwrap();
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
async fn the_key_sealed_to_the_users_ssh_key_authenticates_and_the_address_fits() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    let ssh = helpers::SshKey::generate("ed25519");

    // Act: what SEAL_CREDENTIALS=prefer sends.
    let outcome = manager.configure(&booking("103", &[])).await;
    let message = seal::message(
        &outcome.expect("configure succeeds"),
        Seal::Prefer,
        Key::parse(Some(&ssh.public)).as_ref(),
    )
    .expect("prefer never refuses");

    // Assert
    assert!(message.encode_utf16().count() <= 500, "{message}");
    let address = format!("host=127.0.0.1 port={} user=booking-103", redis.port);
    assert!(message.starts_with(&address), "{message}");
    let key = ssh.unseal(&message);
    assert!(!message.contains(&key));
    let mut con = redis
        .login("booking-103", &key)
        .await
        .expect("the unsealed key authenticates");
    run(&mut con, &["SET", "booking:103:x", "1"]).await.unwrap();
}

#[tokio::test]
async fn configuring_again_issues_a_new_key_and_the_old_one_stops_working() {
    // Arrange
    let redis = Redis::start();
    let manager = manager(&redis).await;
    let reservation = booking("103", &[("scopes", "read,write")]);
    let first = secret(&manager.configure(&reservation).await.unwrap().shown());

    // Act
    let second = manager
        .configure(&reservation)
        .await
        .expect("a repeat succeeds");

    // Assert
    let key = secret(&second.shown());
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
    let key = secret(&manager.configure(&reservation).await.unwrap().shown());
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
            .shown();

        // Assert
        let user = field(&message, "user");
        let mut con = redis.login(&user, &secret(&message)).await.expect(id);
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
    let settings = [("RESOURCE_TYPE", "API Key"), ("PROCESSING_BUDGET", "5s")];
    let app = helpers::spawn_app_with(&settings, manager).await;
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

/// The value of gauge `name` in a `/metrics` scrape.
async fn gauge(app: &helpers::TestApp, name: &str) -> Option<f64> {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_release_that_fails_while_redis_is_down_deletes_the_key_once_redis_is_back() {
    // Arrange: a booking's user and keys on a real server; two attempts, 100 ms apart. Past
    // MAX_ATTEMPTS a release is retried on the same backoff, doubled per attempt (capped at
    // 10 minutes): attempt 3 starts 200-300 ms after attempt 2. While Redis is down, an
    // attempt takes about 10 s (the manager's connection retries before it gives up); one
    // running when Redis returns goes through once that connection gets in.
    let mut redis = Redis::start();
    let manager = Arc::new(manager(&redis).await);
    let settings = [
        ("RESOURCE_TYPE", "API Key"),
        ("MAX_ATTEMPTS", "2"),
        ("RETRY_BACKOFF", "100ms"),
        ("PROCESSING_BUDGET", "1s"),
    ];
    let app = helpers::spawn_app_with(&settings, manager).await;
    let event = |name: &str| crate::fixture_with(name, &[("resourceType", json!("API Key"))]);
    let started = app.post_webhook(&event("event_start.json")).await;
    assert_eq!(started.status(), 200, "{}", helpers::json(started).await);
    assert_eq!(acl_users(&redis).await, ["booking-103", "default"]);
    for key in ["booking:103:a", "booking:103:b"] {
        run(&mut redis.admin().await, &["SET", key, "1"])
            .await
            .unwrap();
    }

    // Act: Redis goes down, keeping its users and keys, and END comes
    redis.stop_keeping_data().await;
    // What the server loads when it starts again: the user, and its keys (short key names
    // are stored as they are).
    let acl = std::fs::read_to_string(redis.dir().join(crate::backends::redis::ACL_FILE)).unwrap();
    assert!(acl.contains("user booking-103 "), "{acl}");
    let dump = std::fs::read(redis.dir().join("dump.rdb")).unwrap();
    assert!(dump.windows(13).any(|w| w == b"booking:103:a"));
    let ended = app.post_webhook(&event("event_end.json")).await;

    // Assert: the release fails past MAX_ATTEMPTS, is counted as failing, and goes on
    let status = helpers::json(ended).await;
    assert_ne!(status["status"], "released", "{status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut failed, mut counted) = (None, false);
    while failed.is_none() || !counted {
        assert!(
            Instant::now() < deadline,
            "the release was not failing past all attempts within 30 s: {failed:?}, counted {counted}"
        );
        let (_, status) = app.status("103").await;
        if status["state"] == "failed" && status["attempts"].as_u64() >= Some(2) {
            failed = Some(status);
        }
        counted |= gauge(&app, "webhook_failing_releases").await == Some(1.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = failed.unwrap();
    assert_eq!(failed["settled"], false, "{failed}");
    let history = failed["history"].to_string();
    assert!(history.contains("release attempt 2 failed"), "{history}");
    assert!(history.contains("tried again"), "{history}");

    // Act: Redis comes back with the booking's user and keys
    redis.restart();

    // Assert: the booking is released, its user and keys are gone, nothing is failing
    let status = app.settled("103", Duration::from_secs(30)).await;
    assert_eq!(status["state"], "released", "{status}");
    assert!(status["attempts"].as_u64() > Some(2), "{status}");
    assert_eq!(acl_users(&redis).await, ["default"]);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("booking:103:*")
        .query_async(&mut redis.admin().await)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(gauge(&app, "webhook_failing_releases").await, Some(0.0));
    app.stop().await;
}
