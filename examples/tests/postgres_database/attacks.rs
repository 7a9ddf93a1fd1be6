//! What a booking's user, holding the SQL login the webhook gave them, tries against the
//! admin and against other bookings, run against a real server and shown to fail.

use std::sync::Arc;

use webhook::manager::ResourceManager;

use super::example::PostgresDatabase;
use super::pause::Pause;
use super::{booking, booking_objects, conninfo, manager, server_message, settings};
use crate::backends::postgres::Postgres;
use crate::helpers::{Shown as _, secret};

/// The `(user, password, dbname)` a configure's message gives.
fn login_of(message: &str) -> (String, String, String) {
    (
        conninfo(message, "user"),
        secret(message),
        conninfo(message, "dbname"),
    )
}

/// Configures booking `id` and logs in as its role to `dbname`, its own when `None`.
async fn booked(
    pg: &Postgres,
    manager: &PostgresDatabase,
    id: &str,
    dbname: Option<&str>,
) -> tokio_postgres::Client {
    let message = manager
        .configure(&booking(id, Some("mallory"), &[]))
        .await
        .expect("configure")
        .shown();
    let (user, password, own) = login_of(&message);
    pg.login(&user, &password, dbname.unwrap_or(&own))
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in: {e}"))
}

#[tokio::test]
async fn functions_planted_in_a_public_schema_do_not_run_as_the_admin() {
    // Arrange: PostgreSQL 14's default, and every cluster upgraded from it. Start-up closes
    // the admin's database to bookings; open it to the attacker again, so that only the
    // admin session's own guard stands in the way.
    let pg = Postgres::start();
    pg.admin()
        .await
        .batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .await
        .unwrap();
    let manager = manager(&pg).await;
    manager
        .configure(&booking("2", Some("victim"), &[]))
        .await
        .unwrap();
    let _ = booked(&pg, &manager, "1", None).await;
    pg.admin()
        .await
        .batch_execute("GRANT CONNECT ON DATABASE postgres TO booking_1")
        .await
        .unwrap();
    let attacker = booked(&pg, &manager, "1", Some("postgres")).await;
    let mut plant = String::from(
        "CREATE TABLE public.pwned (who text); GRANT INSERT ON public.pwned TO PUBLIC; ",
    );
    // Overloads that would win over the catalog's for the arguments the admin passes, or
    // whatever the admin's search_path; each answers as the real one, so nothing shows.
    for (signature, returns, answer) in [
        (
            "starts_with(name, text)",
            "boolean",
            "pg_catalog.starts_with($1::text, $2)",
        ),
        (
            "starts_with(text, text)",
            "boolean",
            "pg_catalog.starts_with($1, $2)",
        ),
        (
            "pg_terminate_backend(integer, integer)",
            "boolean",
            "pg_catalog.pg_terminate_backend($1, $2)",
        ),
        (
            "pg_terminate_backend(integer, bigint)",
            "boolean",
            "pg_catalog.pg_terminate_backend($1, $2)",
        ),
        (
            "current_database()",
            "name",
            "pg_catalog.current_database()",
        ),
        (
            "has_database_privilege(name, oid, text)",
            "boolean",
            "pg_catalog.has_database_privilege($1, $2, $3)",
        ),
        (
            "pg_has_role(name, oid, text)",
            "boolean",
            "pg_catalog.pg_has_role($1, $2, $3)",
        ),
    ] {
        plant.push_str(&format!(
            "CREATE FUNCTION public.{signature} RETURNS {returns} LANGUAGE plpgsql AS $$ \
             BEGIN \
               INSERT INTO public.pwned VALUES (current_user); \
               EXECUTE 'ALTER ROLE booking_1 SUPERUSER'; \
               RETURN {answer}; \
             END $$; "
        ));
    }
    attacker.batch_execute(&plant).await.expect("planted");
    pg.admin()
        .await
        .batch_execute("ALTER ROLE postgres SET search_path = public, pg_catalog")
        .await
        .unwrap();

    // Act: the next release of any booking, by a manager started again.
    let manager = super::manager(&pg).await;
    manager
        .configure(&booking("3", Some("victim"), &[]))
        .await
        .expect("configure");
    manager
        .release(&booking("2", None, &[]))
        .await
        .expect("release");
    manager
        .end_changed(&booking("3", None, &[]))
        .await
        .expect("end_changed");

    // Assert
    let admin = pg.admin().await;
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'booking_1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser, "the booking's role became a superuser");
    let ran: i64 = admin
        .query_one("SELECT count(*) FROM public.pwned", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ran, 0, "a planted function ran as the admin");
    for id in ["1", "3"] {
        manager.release(&booking(id, None, &[])).await.unwrap();
    }
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_session_on_template1_neither_blocks_nor_seeds_the_next_database() {
    // Arrange: a role that can reach template1 (all of them, as initdb leaves it, until
    // start-up closes it) and create there (PostgreSQL 14's public schema).
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let _ = booked(&pg, &manager, "1", None).await;
    pg.admin()
        .await
        .batch_execute("GRANT CONNECT ON DATABASE template1 TO booking_1")
        .await
        .unwrap();
    pg.admin_on("template1")
        .await
        .batch_execute("GRANT CREATE ON SCHEMA public TO booking_1")
        .await
        .unwrap();
    let on_template1 = booked(&pg, &manager, "1", Some("template1")).await;
    on_template1
        .batch_execute(
            "CREATE TABLE public.planted (x int); \
             CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS 'SELECT $1'",
        )
        .await
        .expect("planted");

    // Act: the session stays open.
    let next = manager.configure(&booking("2", Some("victim"), &[])).await;

    // Assert
    let (user, password, dbname) = login_of(&next.expect("the next database is created").shown());
    let victim = pg.login(&user, &password, &dbname).await.unwrap();
    let copied: bool = victim
        .query_one(
            "SELECT pg_catalog.to_regclass('public.planted') IS NOT NULL \
                 OR pg_catalog.to_regprocedure('public.lower(text)') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!copied, "what was put in template1 is in the new database");
    on_template1.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_booking_role_can_connect_to_its_own_database_only() {
    // Arrange: a cluster as initdb leaves it, with one application database.
    let pg = Postgres::start();
    pg.admin()
        .await
        .batch_execute("CREATE DATABASE shop")
        .await
        .unwrap();
    let manager = manager(&pg).await;
    let mine = manager
        .configure(&booking("1", Some("mallory"), &[]))
        .await
        .unwrap()
        .shown();
    manager
        .configure(&booking("2", Some("victim"), &[]))
        .await
        .unwrap();
    let (user, password, own) = login_of(&mine);

    for dbname in ["postgres", "template1", "shop", "booking_2"] {
        // Act
        let result = pg.login(&user, &password, dbname).await;

        // Assert
        let error = server_message(result.err().unwrap_or_else(|| panic!("{dbname} let in")));
        assert!(
            error.contains("permission denied for database"),
            "{dbname}: {error}"
        );
    }
    pg.login(&user, &password, &own)
        .await
        .expect("its own database");
    let granted: bool = pg
        .admin()
        .await
        .query_one(
            "SELECT has_database_privilege('booking_1', 'shop', 'TEMPORARY')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!granted, "TEMPORARY on shop is still granted to PUBLIC");
}

#[tokio::test]
async fn no_one_gets_into_a_new_database_before_it_is_closed_to_public() {
    // Arrange: the manager's session through a relay that stops it right after CREATE
    // DATABASE, with another booking's user ready to connect.
    let pg = Postgres::start();
    pg.admin()
        .await
        .batch_execute("ALTER ROLE postgres PASSWORD 'admin'")
        .await
        .unwrap();
    let pause = Pause::start(pg.port, r#"CREATE DATABASE "booking_2""#).await;
    let mut settings = settings(&pg);
    settings.pg_admin_url = format!(
        "host=127.0.0.1 port={} user=postgres password=admin dbname=postgres",
        pause.port
    )
    .into();
    let manager = Arc::new(PostgresDatabase::new(settings).await.unwrap());
    let (user, password, _) = login_of(
        &manager
            .configure(&booking("1", Some("mallory"), &[]))
            .await
            .unwrap()
            .shown(),
    );
    let configuring = tokio::spawn({
        let manager = manager.clone();
        async move { manager.configure(&booking("2", Some("victim"), &[])).await }
    });
    pause.held().await;

    // Act: the database exists; its grants are not yet changed.
    let sneaked = pg.login(&user, &password, "booking_2").await;

    // Assert
    pause.go();
    configuring.await.unwrap().expect("configure finishes");
    let error = server_message(sneaked.expect_err("no one gets in"));
    assert!(
        error.contains("not currently accepting connections"),
        "{error}"
    );
    let later = pg.login(&user, &password, "booking_2").await;
    let error = server_message(later.expect_err("nor later"));
    assert!(error.contains("permission denied for database"), "{error}");
}

#[tokio::test]
async fn an_admin_that_may_not_close_other_databases_stops_start_up_with_the_statements() {
    // Arrange: an admin role that owns no database.
    let pg = Postgres::start();
    pg.admin()
        .await
        .batch_execute("CREATE ROLE webhook LOGIN CREATEROLE CREATEDB")
        .await
        .unwrap();
    let mut as_webhook = settings(&pg);
    as_webhook.pg_admin_url = pg.socket_url("webhook", "postgres").into();

    // Act
    let refused = PostgresDatabase::new(as_webhook).await;

    // Assert
    let error = refused.err().expect("start-up stops").to_string();
    let statements = error
        .split_once("then start again: ")
        .unwrap_or_else(|| panic!("{error}"))
        .1;
    assert_eq!(
        statements,
        r#"GRANT CONNECT ON DATABASE "postgres" TO "webhook"; "#.to_owned()
            + r#"REVOKE CONNECT, TEMPORARY ON DATABASE "postgres" FROM PUBLIC; "#
            + r#"REVOKE CONNECT, TEMPORARY ON DATABASE "template1" FROM PUBLIC;"#
    );
    pg.admin().await.batch_execute(statements).await.unwrap();
    let mut as_webhook = settings(&pg);
    as_webhook.pg_admin_url = pg.socket_url("webhook", "postgres").into();
    PostgresDatabase::new(as_webhook)
        .await
        .expect("starts once they ran");
}

#[tokio::test]
async fn the_role_expires_at_the_end_plus_the_grace_and_follows_a_moved_end() {
    // Arrange
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let grace = chrono::Duration::minutes(10);
    let mut reservation = booking("5", Some("alice"), &[]);
    let valid_until = || async {
        pg.admin()
            .await
            .query_one(
                "SELECT (extract(epoch FROM rolvaliduntil) * 1000000)::int8 \
                 FROM pg_roles WHERE rolname = 'booking_5'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<i64>>(0)
    };

    // Act
    let message = manager.configure(&reservation).await.unwrap().shown();

    // Assert
    assert_eq!(
        valid_until().await,
        Some((reservation.end + grace).timestamp_micros())
    );

    // Act: the user extends the booking by a day.
    reservation.end += chrono::Duration::days(1);
    manager
        .end_changed(&reservation)
        .await
        .expect("end_changed");

    // Assert
    assert_eq!(
        valid_until().await,
        Some((reservation.end + grace).timestamp_micros())
    );

    // Act: a booking shortened to have ended more than the grace ago.
    reservation.end = chrono::Utc::now() - grace - chrono::Duration::minutes(1);
    manager
        .end_changed(&reservation)
        .await
        .expect("end_changed");

    // Assert
    let (user, password, dbname) = login_of(&message);
    let expired = pg.login(&user, &password, &dbname).await;
    let error = server_message(expired.expect_err("the expired password is refused"));
    assert!(error.contains("password authentication failed"), "{error}");
}

#[tokio::test]
async fn the_role_runs_under_its_statement_timeout_and_temp_file_limit() {
    // Arrange
    let pg = Postgres::start();
    let mut settings = settings(&pg);
    settings.statement_timeout_ms = Some(1500);
    settings.temp_file_limit_kb = Some(1024);
    let manager = PostgresDatabase::new(settings).await.unwrap();
    let session = booked(&pg, &manager, "6", None).await;
    let show = |name: &'static str| {
        let session = &session;
        async move {
            let row = session.query_one(&format!("SHOW {name}"), &[]).await;
            row.unwrap().get::<_, String>(0)
        }
    };

    // Act, Assert
    assert_eq!(show("statement_timeout").await, "1500ms");
    assert_eq!(show("temp_file_limit").await, "1MB");
    let slow = session.batch_execute("SELECT pg_sleep(5)").await;
    let error = server_message(slow.expect_err("the statement is cancelled"));
    assert!(error.contains("statement timeout"), "{error}");
    let lift = session.batch_execute("SET temp_file_limit = -1").await;
    let error = server_message(lift.expect_err("the user may not lift the limit"));
    assert!(error.contains("permission denied"), "{error}");
    let big = session
        .batch_execute(
            "SET statement_timeout = 0; SET work_mem = '64kB'; \
             SELECT count(*) FROM (SELECT g FROM generate_series(1, 300000) g \
                                   ORDER BY g DESC) s",
        )
        .await;
    let error = server_message(big.expect_err("the sort spills past the limit"));
    assert!(error.contains("temp_file_limit"), "{error}");
}

#[tokio::test]
async fn release_drops_a_role_that_owns_objects_and_was_granted_some_elsewhere() {
    // Arrange: each user fills their database; one grants the other's role a table in its
    // own database, where the other cannot even connect.
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let second = booked(&pg, &manager, "2", None).await;
    second
        .batch_execute(
            "CREATE TABLE t (x int); CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
             SELECT lo_create(0); CREATE TEMP TABLE scratch (x int)",
        )
        .await
        .unwrap();
    let first = booked(&pg, &manager, "1", None).await;
    first
        .batch_execute(
            "CREATE TABLE shared (x int); GRANT SELECT ON shared TO booking_2; \
             CREATE SCHEMA mine; CREATE TYPE mine.mood AS ENUM ('ok'); \
             SELECT lo_create(0); CREATE TEMP TABLE scratch (x int)",
        )
        .await
        .unwrap();

    // Act
    let released = manager.release(&booking("2", None, &[])).await;

    // Assert
    released.expect("release succeeds");
    assert_eq!(
        booking_objects(&pg).await,
        ["role booking_1", "database booking_1"]
    );
    first
        .batch_execute("SELECT * FROM shared")
        .await
        .expect("the other booking is untouched");
    manager
        .release(&booking("1", None, &[]))
        .await
        .expect("release");
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}

/// Configures booking `id` for someone else; the attacker (booking 1) grants its role a table
/// in booking 1's database, so that the release must clean there.
async fn granted_a_table(manager: &PostgresDatabase, attacker: &tokio_postgres::Client, id: &str) {
    manager
        .configure(&booking(id, Some("victim"), &[]))
        .await
        .expect("configure");
    attacker
        .batch_execute(&format!("GRANT SELECT ON shared TO booking_{id}"))
        .await
        .expect("granted");
}

/// Whether the role `name` exists.
async fn role_exists(pg: &Postgres, name: &str) -> bool {
    pg.admin()
        .await
        .query_one(
            "SELECT count(*) > 0 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn settings_an_owner_puts_on_their_database_do_not_reach_the_admin() {
    // Arrange: every role that connects to a database, the admin too, starts with what its
    // owner put there with ALTER DATABASE … SET, unless the session itself says otherwise.
    // The release of a role that the owner granted something connects there to DROP OWNED.
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let attacker = booked(&pg, &manager, "1", None).await;
    attacker
        .batch_execute("CREATE TABLE shared (x int)")
        .await
        .unwrap();
    let mut failed = Vec::new();
    // With `true`, the owner also holds, for a second, the catalog row of the table it
    // granted, which DROP OWNED must change: the admin must wait rather than give up.
    for (n, (setting, hold)) in [
        ("default_transaction_read_only = on", false),
        // A role the admin may become: any role, for a superuser.
        ("role = booking_1", false),
        // Not in plugins/: no session of any role starts.
        ("local_preload_libraries = 'missing'", false),
        ("statement_timeout = 1", true),
        ("lock_timeout = 1", true),
        ("idle_session_timeout = 1", false),
        ("idle_in_transaction_session_timeout = 1", false),
        ("search_path = public", false),
        ("client_min_messages = error", false),
        ("default_transaction_isolation = serializable", false),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("{}", 10 + n);
        granted_a_table(&manager, &attacker, &id).await;
        attacker
            .batch_execute(&format!("ALTER DATABASE booking_1 SET {setting}"))
            .await
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
        if hold {
            attacker
                .batch_execute("BEGIN; ALTER TABLE shared ADD COLUMN held int")
                .await
                .unwrap();
        }

        // Act
        let victim = booking(&id, None, &[]);
        let (released, ()) = tokio::join!(manager.release(&victim), async {
            if hold {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                attacker.batch_execute("ROLLBACK").await.unwrap();
            }
        });

        // Assert: later, all at once, so that every setting that gets through shows.
        attacker
            .batch_execute("ALTER DATABASE booking_1 RESET ALL")
            .await
            .unwrap();
        if let Err(e) = released {
            failed.push(format!("{setting}: {e:?}"));
        } else if role_exists(&pg, &format!("booking_{id}")).await {
            failed.push(format!("{setting}: the role is left"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    manager.release(&booking("1", None, &[])).await.unwrap();
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}

#[tokio::test]
async fn settings_a_booking_puts_on_its_own_role_do_not_reach_the_admin() {
    // Arrange: a role's settings apply to sessions that log in as it, which the admin never
    // does, in any database; setting them on another role is refused.
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let attacker = booked(&pg, &manager, "1", None).await;
    attacker
        .batch_execute("CREATE TABLE shared (x int)")
        .await
        .unwrap();
    granted_a_table(&manager, &attacker, "2").await;
    let victim = booked(&pg, &manager, "3", None).await;
    granted_a_table(&manager, &attacker, "3").await;
    let refused = attacker
        .batch_execute("ALTER ROLE postgres SET default_transaction_read_only = on")
        .await;
    assert!(refused.is_err(), "a booking set the admin's own settings");
    let refused = attacker
        .batch_execute("ALTER ROLE booking_2 SET default_transaction_read_only = on")
        .await;
    assert!(refused.is_err(), "a booking set another booking's settings");
    for (session, role) in [(&attacker, "booking_1"), (&victim, "booking_3")] {
        session
            .batch_execute(&format!(
                "ALTER ROLE {role} SET default_transaction_read_only = on; \
                 ALTER ROLE {role} IN DATABASE booking_1 SET statement_timeout = 1; \
                 ALTER ROLE {role} SET local_preload_libraries = 'missing'"
            ))
            .await
            .expect("a role may set its own");
    }

    // Act
    let second = manager.release(&booking("2", None, &[])).await;
    let third = manager.release(&booking("3", None, &[])).await;
    let first = manager.release(&booking("1", None, &[])).await;

    // Assert
    second.expect("release 2");
    third.expect("release 3");
    first.expect("release 1");
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}

/// A manager whose admin, `webhook`, is no superuser but has what the example's header asks,
/// and is a member of the roles of `bookings`, made beforehand (PostgreSQL 15 and earlier do
/// not make a role's creator a member of it).
async fn unprivileged_manager(pg: &Postgres, bookings: &[&str]) -> PostgresDatabase {
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "CREATE ROLE webhook LOGIN CREATEROLE CREATEDB; \
             GRANT pg_signal_backend TO webhook; \
             GRANT SET ON PARAMETER temp_file_limit TO webhook; \
             GRANT CONNECT ON DATABASE postgres TO webhook; \
             REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC",
        )
        .await
        .unwrap();
    for id in bookings {
        admin
            .batch_execute(&format!(
                "CREATE ROLE booking_{id} NOLOGIN; \
                 GRANT booking_{id} TO webhook WITH ADMIN OPTION"
            ))
            .await
            .unwrap();
    }
    let mut settings = settings(pg);
    settings.pg_admin_url = pg.socket_url("webhook", "postgres").into();
    PostgresDatabase::new(settings)
        .await
        .expect("the manager connects")
}

#[tokio::test]
async fn an_owner_who_closes_their_database_does_not_stop_another_release() {
    // Arrange: an owner may set their database's connection limit, which binds every role
    // but superusers, and, from a session on another database (here one whose owner granted
    // them CONNECT), refuse all connections, superusers' too.
    let pg = Postgres::start();
    let manager = unprivileged_manager(&pg, &["1", "2", "10", "11"]).await;
    let attacker = booked(&pg, &manager, "1", None).await;
    attacker
        .batch_execute("CREATE TABLE shared (x int)")
        .await
        .unwrap();
    booked(&pg, &manager, "2", None)
        .await
        .batch_execute("GRANT CONNECT ON DATABASE booking_2 TO booking_1")
        .await
        .unwrap();
    let elsewhere = booked(&pg, &manager, "1", Some("booking_2")).await;
    let mut failed = Vec::new();
    for (id, session, closing, kept) in [
        ("10", &attacker, "CONNECTION LIMIT 0", (true, 0)),
        ("11", &elsewhere, "ALLOW_CONNECTIONS false", (false, -1)),
    ] {
        granted_a_table(&manager, &attacker, id).await;
        session
            .batch_execute(&format!("ALTER DATABASE booking_1 {closing}"))
            .await
            .unwrap_or_else(|e| panic!("{closing}: {e}"));

        // Act
        let released = manager.release(&booking(id, None, &[])).await;

        // Assert: later, all at once, so that every way that gets through shows.
        let database: (bool, i32) = {
            let row = pg
                .admin()
                .await
                .query_one(
                    "SELECT datallowconn, datconnlimit FROM pg_catalog.pg_database \
                     WHERE datname = 'booking_1'",
                    &[],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        elsewhere
            .batch_execute("ALTER DATABASE booking_1 ALLOW_CONNECTIONS true CONNECTION LIMIT -1")
            .await
            .unwrap();
        if let Err(e) = released {
            failed.push(format!("{closing}: {e:?}"));
        } else if role_exists(&pg, &format!("booking_{id}")).await {
            failed.push(format!("{closing}: the role is left"));
        } else if database != kept {
            failed.push(format!("{closing}: the database is left {database:?}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    for id in ["1", "2"] {
        manager.release(&booking(id, None, &[])).await.unwrap();
    }
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_database_its_owner_made_a_template_and_closed_is_still_dropped() {
    // Arrange: PostgreSQL refuses to drop a template database; an owner may make theirs one.
    let pg = Postgres::start();
    let manager = manager(&pg).await;
    let owner = booked(&pg, &manager, "1", None).await;
    owner
        .batch_execute("ALTER DATABASE booking_1 IS_TEMPLATE true CONNECTION LIMIT 0")
        .await
        .unwrap();

    // Act
    let released = manager.release(&booking("1", None, &[])).await;

    // Assert
    released.expect("release succeeds");
    assert_eq!(booking_objects(&pg).await, Vec::<String>::new());
}
