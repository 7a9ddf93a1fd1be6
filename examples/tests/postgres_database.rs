//! `examples/postgres_database.rs` against a real PostgreSQL server, checked from outside:
//! by logging in as the booking's role, and as the superuser.

use std::sync::Arc;

use serde_json::json;
use webhook::contract::reservation::{Parameters, Reservation, Resource, User};
use webhook::engine::seal::{self, Key, Seal};
use webhook::manager::ResourceManager;

use crate::backends::postgres::Postgres;
use crate::helpers::{self, Shown as _, secret};

#[allow(dead_code)]
#[path = "../postgres_database.rs"]
mod example;

use example::{PostgresDatabase, Settings};

/// Attacks by the people who book, who hold their booking's login.
mod attacks;
mod pause;

/// A booking of `username` with id `event_id` and the given custom parameters.
fn booking(event_id: &str, username: Option<&str>, parameters: &[(&str, &str)]) -> Reservation {
    Reservation {
        event_id: event_id.into(),
        user: User {
            id: "5f0c1e2a-8b7d-4c3e-9a61-2d4f6b8e0a13".into(),
            username: username.map(Into::into),
            email: None,
            ssh_public_key: None,
        },
        resource: Resource {
            id: 42,
            name: "pg-1".into(),
            kind: "PostgreSQL Database".into(),
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

fn settings(pg: &Postgres) -> Settings {
    Settings {
        pg_admin_url: pg.admin_url().into(),
        pg_public_host: "127.0.0.1".into(),
        pg_public_port: pg.port,
        pg_connection_limit: 3,
        statement_timeout_ms: Some(600_000),
        temp_file_limit_kb: Some(1 << 20),
        release_grace: std::time::Duration::from_secs(600),
    }
}

async fn manager(pg: &Postgres) -> PostgresDatabase {
    PostgresDatabase::new(settings(pg))
        .await
        .expect("the manager connects")
}

/// The value of `key` in a libpq connection string (`key='va\'lue'` or `key=value`).
fn conninfo(message: &str, key: &str) -> String {
    let start = message
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key} in {message:?}"))
        + key.len()
        + 1;
    let mut chars = message[start..].chars();
    let mut value = String::new();
    if message[start..].starts_with('\'') {
        chars.next();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap()),
                '\'' => break,
                c => value.push(c),
            }
        }
    } else {
        value.extend(chars.take_while(|c| !c.is_whitespace()));
    }
    value
}

/// What the server said when it refused something.
fn server_message(error: tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |e| e.message().to_owned())
}

/// The roles and databases whose names start with `booking_`.
async fn booking_objects(pg: &Postgres) -> Vec<String> {
    pg.admin()
        .await
        .query(
            "SELECT 'role ' || rolname FROM pg_roles WHERE starts_with(rolname, 'booking_') \
             UNION ALL \
             SELECT 'database ' || datname FROM pg_database WHERE starts_with(datname, 'booking_')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn configure_gives_a_login_that_owns_its_database_and_can_create_tables() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;

    // Act
    let outcome = manager.configure(&booking("103", Some("alice"), &[])).await;

    // Assert
    let message = outcome.expect("configure succeeds").shown();
    assert!(message.chars().count() <= 500, "{message}");
    assert_eq!(conninfo(&message, "host"), "127.0.0.1");
    assert_eq!(conninfo(&message, "port"), pg.port.to_string());
    let (user, dbname) = (conninfo(&message, "user"), conninfo(&message, "dbname"));
    assert_eq!(
        (user.as_str(), dbname.as_str()),
        ("booking_103", "booking_103")
    );
    let password = secret(&message);
    assert!(password.len() >= 24, "{password}");
    let session = pg.login(&user, &password, &dbname).await.expect("login");
    session
        .batch_execute("CREATE TABLE results (x int); INSERT INTO results VALUES (1)")
        .await
        .expect("the role can create tables in its database");
    assert!(pg.login(&user, "wrong", &dbname).await.is_err());
}

#[tokio::test]
async fn the_password_sealed_to_the_users_key_logs_in_and_the_connection_string_fits() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let key = helpers::SshKey::generate("ed25519");

    // Act: what SEAL_CREDENTIALS=prefer sends.
    let outcome = manager.configure(&booking("103", Some("alice"), &[])).await;
    let message = seal::message(
        &outcome.expect("configure succeeds"),
        Seal::Prefer,
        Key::parse(Some(&key.public)).as_ref(),
    )
    .expect("prefer never refuses");

    // Assert
    assert!(message.encode_utf16().count() <= 500, "{message}");
    let connection = format!(
        "host=127.0.0.1 port={} dbname='booking_103' user='booking_103'",
        pg.port
    );
    assert!(message.starts_with(&connection), "{message}");
    let password = key.unseal(&message);
    assert!(!message.contains(&password));
    pg.login("booking_103", &password, "booking_103")
        .await
        .expect("the unsealed password logs in");
}

#[tokio::test]
async fn no_other_role_can_connect_to_a_booking_database() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let mine = manager
        .configure(&booking("1", Some("alice"), &[]))
        .await
        .unwrap();
    let theirs = manager
        .configure(&booking("2", Some("bob"), &[]))
        .await
        .unwrap();
    pg.admin()
        .await
        .batch_execute("CREATE ROLE intruder LOGIN PASSWORD 'intruder'")
        .await
        .unwrap();
    let dbname = conninfo(&mine.shown(), "dbname");

    // Act
    let intruder = pg.login("intruder", "intruder", &dbname).await;
    let other_booking = pg
        .login(
            &conninfo(&theirs.shown(), "user"),
            &secret(&theirs.shown()),
            &dbname,
        )
        .await;

    // Assert
    for refused in [intruder, other_booking] {
        let error = server_message(refused.expect_err("the login is refused"));
        assert!(error.contains("permission denied for database"), "{error}");
    }
}

#[tokio::test]
async fn the_connections_parameter_limits_open_sessions() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let message = manager
        .configure(&booking("7", Some("alice"), &[("connections", "1")]))
        .await
        .unwrap()
        .shown();
    let (user, password, dbname) = (
        conninfo(&message, "user"),
        secret(&message),
        conninfo(&message, "dbname"),
    );
    let _first = pg
        .login(&user, &password, &dbname)
        .await
        .expect("first session");

    // Act
    let second = pg.login(&user, &password, &dbname).await;

    // Assert
    let error = server_message(second.expect_err("the second session is refused"));
    assert!(error.contains("too many connections"), "{error}");
    assert!(message.contains("at most 1 connections"), "{message}");
}

#[tokio::test]
async fn a_bad_connections_parameter_is_refused_and_nothing_is_created() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;

    for bad in ["0", "4", "-1", "two", "1; DROP ROLE postgres"] {
        // Act
        let result = manager
            .configure(&booking("8", Some("alice"), &[("connections", bad)]))
            .await;

        // Assert
        let error = result.expect_err(bad);
        assert!(!error.is_transient());
        assert_eq!(
            error.message(),
            "custom parameter connections: must be a whole number from 1 to 3"
        );
    }
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}

#[tokio::test]
async fn configuring_again_keeps_the_data_and_issues_a_new_password() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let reservation = booking("103", Some("alice"), &[]);
    let first = manager.configure(&reservation).await.unwrap().shown();
    let (user, dbname) = (conninfo(&first, "user"), conninfo(&first, "dbname"));
    pg.login(&user, &secret(&first), &dbname)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kept (x int)")
        .await
        .unwrap();

    // Act
    let second = manager
        .configure(&reservation)
        .await
        .expect("a repeat succeeds")
        .shown();

    // Assert
    assert_eq!(conninfo(&second, "user"), user);
    let new_password = secret(&second);
    assert_ne!(new_password, secret(&first));
    assert!(pg.login(&user, &secret(&first), &dbname).await.is_err());
    let session = pg
        .login(&user, &new_password, &dbname)
        .await
        .expect("new password");
    session
        .batch_execute("SELECT * FROM kept")
        .await
        .expect("the data is kept");
}

#[tokio::test]
async fn release_ends_open_sessions_and_drops_the_database_and_the_role() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let reservation = booking("103", Some("alice"), &[]);
    let message = manager.configure(&reservation).await.unwrap().shown();
    let (user, password, dbname) = (
        conninfo(&message, "user"),
        secret(&message),
        conninfo(&message, "dbname"),
    );
    let open = pg.login(&user, &password, &dbname).await.unwrap();

    // Act
    manager
        .release(&reservation)
        .await
        .expect("release succeeds");

    // Assert
    assert!(
        open.batch_execute("SELECT 1").await.is_err(),
        "session still open"
    );
    assert!(pg.login(&user, &password, &dbname).await.is_err());
    assert!(pg.login(&user, &password, "postgres").await.is_err());
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
    manager
        .release(&reservation)
        .await
        .expect("releasing again succeeds");
}

#[tokio::test]
async fn a_deleted_booking_is_released_by_its_id_alone() {
    // Arrange: EVENT_DELETED carries no username.
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    manager
        .configure(&booking("103", Some("alice"), &[]))
        .await
        .unwrap();
    manager
        .configure(&booking("1030", Some("alice"), &[]))
        .await
        .unwrap();
    // Earlier versions put the username in the names.
    let admin = pg.admin().await;
    admin
        .batch_execute("CREATE ROLE booking_103_alice LOGIN")
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE booking_103_alice OWNER booking_103_alice")
        .await
        .unwrap();

    // Act
    manager
        .release(&booking("103", None, &[]))
        .await
        .expect("release succeeds");

    // Assert: the other booking, whose id starts the same, is untouched.
    assert_eq!(
        booking_objects(&pg).await,
        ["role booking_1030", "database booking_1030"]
    );
}

#[tokio::test]
async fn odd_usernames_and_ids_give_distinct_valid_names_that_work() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let long = "é".repeat(100);
    let bookings = [
        booking(
            "1",
            Some(r#"O'Brien "the" admin; DROP ROLE postgres"#),
            &[("note", "'); DROP ROLE postgres; --")],
        ),
        booking("2", Some("Ünïcødé user 名前"), &[]),
        booking("3", Some(&long), &[]),
        booking("4", Some("tab\tand\nnewline\\"), &[]),
        booking(r#"x'); DROP ROLE postgres; --"#, Some("alice"), &[]),
        booking(&"9".repeat(300), Some("alice"), &[]),
        booking("with space", None, &[]),
    ];
    let mut titled = booking("5", Some("mallory"), &[]);
    titled.title = Some(r#"x"; DROP ROLE postgres; --"#.into());
    titled.description = Some("'; ALTER ROLE mallory SUPERUSER; --".into());
    let bookings: Vec<Reservation> = bookings.into_iter().chain([titled]).collect();

    // Act
    let mut names = Vec::new();
    for reservation in &bookings {
        let message = manager
            .configure(reservation)
            .await
            .expect("configure")
            .shown();
        let (user, dbname) = (conninfo(&message, "user"), conninfo(&message, "dbname"));

        // Assert
        assert!(user.len() <= 63, "{user}");
        assert!(!user.chars().any(char::is_control), "{user:?}");
        let session = pg
            .login(&user, &secret(&message), &dbname)
            .await
            .unwrap_or_else(|e| panic!("{user:?} cannot log in: {e}"));
        session
            .batch_execute("CREATE TABLE t (x int)")
            .await
            .unwrap();
        names.push(user);
    }
    // Every role's name is visible to every role: none says who booked.
    assert_eq!(
        names[..4],
        ["booking_1", "booking_2", "booking_3", "booking_4"]
    );
    assert!(names[4].starts_with("booking_h"), "{}", names[4]);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), bookings.len(), "{names:?}");
    let roles: Vec<String> = pg
        .admin()
        .await
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(roles.contains(&"postgres".to_owned()), "{roles:?}");
    for reservation in &bookings {
        manager.release(reservation).await.expect("release");
    }
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}

#[test]
fn settings_errors_name_the_variable() {
    use crate::vars;

    let missing = Settings::from_vars(vars(&[("PG_PUBLIC_HOST", "db")])).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "invalid configuration: PG_ADMIN_URL is not set"
    );

    let bad_port = Settings::from_vars(vars(&[
        ("PG_ADMIN_URL", "host=/tmp"),
        ("PG_PUBLIC_HOST", "db"),
        ("PG_PUBLIC_PORT", "five"),
    ]))
    .unwrap_err();
    assert!(
        bad_port.to_string().contains("PG_PUBLIC_PORT"),
        "{bad_port}"
    );

    let zero = Settings::from_vars(vars(&[
        ("PG_ADMIN_URL", "host=/tmp"),
        ("PG_PUBLIC_HOST", "db"),
        ("PG_CONNECTION_LIMIT", "0"),
    ]))
    .unwrap_err();
    assert!(zero.to_string().contains("PG_CONNECTION_LIMIT"), "{zero}");

    for (name, bad) in [
        ("PG_STATEMENT_TIMEOUT", "soon"),
        ("PG_STATEMENT_TIMEOUT", "30d"),
        ("PG_TEMP_FILE_LIMIT", "1GB; RESET ALL"),
        ("PG_TEMP_FILE_LIMIT", "0"),
        ("RELEASE_GRACE", "later"),
        ("RELEASE_GRACE", "0s"),
    ] {
        let error = Settings::from_vars(vars(&[
            ("PG_ADMIN_URL", "host=/tmp"),
            ("PG_PUBLIC_HOST", "db"),
            (name, bad),
        ]))
        .unwrap_err();
        assert!(error.to_string().starts_with(name), "{name}={bad}: {error}");
    }

    let defaults = Settings::from_vars(vars(&[
        ("PG_ADMIN_URL", "host=/tmp"),
        ("PG_PUBLIC_HOST", "db"),
    ]))
    .unwrap();
    assert_eq!(
        (defaults.pg_public_port, defaults.pg_connection_limit),
        (5432, 5)
    );
    assert_eq!(
        (
            defaults.statement_timeout_ms,
            defaults.temp_file_limit_kb,
            defaults.release_grace
        ),
        (
            Some(600_000),
            Some(1 << 20),
            std::time::Duration::from_secs(600)
        )
    );

    let set = Settings::from_vars(vars(&[
        ("PG_ADMIN_URL", "host=/tmp"),
        ("PG_PUBLIC_HOST", "db"),
        ("PG_STATEMENT_TIMEOUT", "0"),
        ("PG_TEMP_FILE_LIMIT", "-1"),
        ("RELEASE_GRACE", "1h 30m"),
    ]))
    .unwrap();
    assert_eq!(
        (
            set.statement_timeout_ms,
            set.temp_file_limit_kb,
            set.release_grace
        ),
        (None, None, std::time::Duration::from_secs(5400))
    );
}

#[tokio::test]
async fn a_wrong_admin_url_stops_the_manager_from_starting() {
    // Arrange
    let pg = Postgres::start();
    let mut settings = settings(&pg);
    settings.pg_admin_url = format!("host=127.0.0.1 port={} user=postgres", pg.port).into();

    // Act
    let result = PostgresDatabase::new(settings).await;

    // Assert: TCP logins need a password, which this URL lacks.
    let error = result.err().expect("no manager").to_string();
    assert_eq!(error, "cannot connect to PostgreSQL with PG_ADMIN_URL");
}

#[tokio::test]
async fn the_webhook_creates_the_database_on_start_and_drops_it_on_end() {
    // Arrange
    let pg = Postgres::start();
    let manager = Arc::new(manager(&pg).await);
    let app = helpers::spawn_app_with(
        &[
            ("RESOURCE_TYPE", "PostgreSQL Database"),
            ("PROCESSING_BUDGET", "5s"),
        ],
        manager,
    )
    .await;
    let event = |name: &str| {
        crate::fixture_with(
            name,
            &[
                ("resourceType", json!("PostgreSQL Database")),
                ("customParameters", json!("{\"connections\":\"2\"}")),
            ],
        )
    };
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Act
    let started = app.post_webhook(&event("event_start.json")).await;

    // Assert
    assert_eq!(started.status(), 200, "{}", helpers::json(started).await);
    assert_eq!(
        booking_objects(&pg).await,
        ["role booking_103", "database booking_103"]
    );

    // Act
    let ended = app.post_webhook(&event("event_end.json")).await;

    // Assert
    assert_eq!(ended.status(), 200, "{}", helpers::json(ended).await);
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
    app.stop().await;
}
