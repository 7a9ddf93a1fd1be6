//! A PostgreSQL database of their own for each booking.
//!
//! `configure` creates a login role with a fresh random password and a connection limit,
//! and a database owned by it that no one else may connect to. `release` blocks the role
//! from logging in (`NOLOGIN`, which also covers databases other than its own), ends its
//! sessions, and drops the database and the role. Needs PostgreSQL 14 or later.
//!
//! The user receives a libpq connection string, which `psql` and most drivers take:
//! `host=db.example.org port=5432 dbname='booking_103_alice' user='booking_103_alice'
//! password='…'`. The server is sent only the password's SCRAM verifier, never the
//! password itself, so it cannot show up in the server's statement log.
//!
//! # Settings
//! - `PG_ADMIN_URL` (required): how this webhook connects as an administrator, as a URL
//!   (`postgresql://webhook:secret@db:5432/postgres`) or key/value text (`host=/run/postgresql
//!   user=postgres`). The role must be a superuser, or have CREATEROLE, CREATEDB and
//!   `pg_signal_backend` and be a member of the roles it creates. No TLS: keep this
//!   connection inside the cluster or on a Unix socket.
//! - `PG_PUBLIC_HOST` (required) and `PG_PUBLIC_PORT` (default 5432): the address users
//!   connect to, which may differ from the admin's.
//! - `PG_CONNECTION_LIMIT` (default 5): the most sessions a booking's role may open; also
//!   the largest value the `connections` custom parameter may ask for.
//!
//! # Custom parameters
//! - `connections` (optional): a smaller connection limit, 1 to `PG_CONNECTION_LIMIT`.
//!
//! # Names
//! The role and the database share one name, `booking_<id>_<username>`: the booking id
//! keeps names of different bookings apart, the username makes them readable. Names are
//! always double-quoted in SQL, so any username works; control characters in it become
//! `_`, as they are unreadable in a connection string. An id that is not a short number
//! is replaced by `h` and a hash of it, and the username is cut to keep the name within
//! PostgreSQL's 63 bytes. `release` finds the names by their `booking_<id>` prefix, because
//! a deleted booking's event carries no username. The `booking_` prefix is this webhook's:
//! do not give other roles or databases names that start with it.
//!
//! # Repeated calls
//! A repeated `configure` keeps the role and the database and their data, but sets a new
//! password and returns it: the first one cannot be shown again, and a `configure` is only
//! repeated when its first answer may not have reached the user. Sessions opened with the
//! old password stay open. `release` of a booking that is already gone succeeds.
//!
//! Run it with `cargo run --example postgres_database --features postgres`.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use webhook::manager::{ManagerError, Outcome, ResourceManager};
use webhook::reservation::Reservation;

/// PostgreSQL's longest identifier, in bytes; longer ones are silently cut by the server.
const MAX_NAME_BYTES: usize = 63;
/// Random alphanumeric characters in a password: 32 of 62 symbols are about 190 bits.
const PASSWORD_CHARS: usize = 32;
/// Longest `PG_PUBLIC_HOST` accepted, so that the connection string stays within the
/// 500 characters the reservation system shows.
const MAX_HOST_CHARS: usize = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    webhook::cli::run(PostgresDatabase::from_env()).await
}

/// This manager's settings, read from the environment by [`Settings::from_vars`].
#[derive(Debug, Deserialize)]
pub struct Settings {
    /// `PG_ADMIN_URL`: the administrator's connection; it holds a password.
    pub pg_admin_url: SecretString,
    /// `PG_PUBLIC_HOST`: the host name users are told to connect to.
    pub pg_public_host: String,
    /// `PG_PUBLIC_PORT`: the port users are told to connect to.
    #[serde(default = "default_port")]
    pub pg_public_port: u16,
    /// `PG_CONNECTION_LIMIT`: sessions a booking's role may have open at once.
    #[serde(default = "default_connection_limit")]
    pub pg_connection_limit: u16,
}

fn default_port() -> u16 {
    5432
}
fn default_connection_limit() -> u16 {
    5
}

impl Settings {
    /// Reads the settings from `(name, value)` pairs; errors name the variable.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let settings: Self = webhook::config::settings_from_vars(vars)?;
        let host = settings.pg_public_host.trim();
        anyhow::ensure!(
            !host.is_empty() && host.chars().count() <= MAX_HOST_CHARS && !host.contains(' '),
            "PG_PUBLIC_HOST must be a host name of {MAX_HOST_CHARS} characters at most"
        );
        anyhow::ensure!(
            settings.pg_connection_limit >= 1,
            "PG_CONNECTION_LIMIT must be at least 1"
        );
        Ok(settings)
    }
}

/// Creates and drops a database and its owner role per booking.
pub struct PostgresDatabase {
    settings: Settings,
    admin: tokio_postgres::Config,
    /// The admin session, opened again when it has closed (a server restart, a network cut).
    client: Mutex<Option<Arc<Client>>>,
}

impl PostgresDatabase {
    /// Reads the settings from the process environment and connects.
    pub async fn from_env() -> anyhow::Result<Self> {
        Self::new(Settings::from_vars(std::env::vars())?).await
    }

    /// Connects once, so that a wrong `PG_ADMIN_URL` stops the service at start-up.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let mut admin: tokio_postgres::Config = settings
            .pg_admin_url
            .expose_secret()
            .parse()
            .context("PG_ADMIN_URL is not a PostgreSQL connection URL")?;
        if admin.get_connect_timeout().is_none() {
            admin.connect_timeout(std::time::Duration::from_secs(5));
        }
        let manager = Self {
            settings,
            admin,
            client: Mutex::new(None),
        };
        manager
            .client()
            .await
            .context("cannot connect to PostgreSQL with PG_ADMIN_URL")?;
        Ok(manager)
    }

    /// The admin session, connecting first if there is none.
    async fn client(&self) -> Result<Arc<Client>, ManagerError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, connection) = self.admin.connect(NoTls).await.map_err(|e| {
            ManagerError::transient("the database server cannot be reached").with_source(e)
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL admin connection closed");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The connection limit a booking asked for, or the default.
    fn connection_limit(&self, reservation: &Reservation) -> Result<u16, ManagerError> {
        let max = self.settings.pg_connection_limit;
        let Some(value) = reservation.parameters.get("connections") else {
            return Ok(max);
        };
        match value.trim().parse::<u16>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ManagerError::invalid_parameter(
                "connections",
                format!("must be a whole number from 1 to {max}"),
            )),
        }
    }
}

#[async_trait]
impl ResourceManager for PostgresDatabase {
    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let limit = self.connection_limit(reservation)?;
        let name = name(reservation);
        let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_CHARS);
        // The server stores only this verifier; the password itself never reaches its logs.
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let (role, secret) = (identifier(&name), literal(&verifier));
        let client = self.client().await?;

        let create = format!("CREATE ROLE {role} LOGIN PASSWORD {secret} CONNECTION LIMIT {limit}");
        match client.batch_execute(&create).await {
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
                let alter =
                    format!("ALTER ROLE {role} LOGIN PASSWORD {secret} CONNECTION LIMIT {limit}");
                client
                    .batch_execute(&alter)
                    .await
                    .map_err(|e| sql_error("update the database role", e))?;
            }
            result => result.map_err(|e| sql_error("create the database role", e))?,
        }
        // CREATE DATABASE cannot run in a transaction, so each statement goes on its own.
        match client
            .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
            .await
        {
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
            result => result.map_err(|e| sql_error("create the database", e))?,
        }
        client
            .batch_execute(&format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {role} FROM PUBLIC; \
                 GRANT CONNECT, TEMPORARY ON DATABASE {role} TO {role}"
            ))
            .await
            .map_err(|e| sql_error("restrict access to the database", e))?;

        tracing::info!(limit, "database configured");
        let text = message(&self.settings, &name, &password, limit, reservation.end);
        Ok(Outcome::new(text))
    }

    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let client = self.client().await?;
        let prefix = name_prefix(&reservation.event_id);
        let under = format!("{prefix}_");
        let roles = client
            .query(
                "SELECT rolname::text FROM pg_roles \
                 WHERE rolname = $1 OR starts_with(rolname, $2)",
                &[&prefix, &under],
            )
            .await
            .map_err(|e| sql_error("look up the booking's role", e))?;
        let databases = client
            .query(
                "SELECT datname::text FROM pg_database \
                 WHERE datname = $1 OR starts_with(datname, $2)",
                &[&prefix, &under],
            )
            .await
            .map_err(|e| sql_error("look up the booking's database", e))?;

        // First no new sessions, then no old ones, then nothing left.
        for row in &roles {
            let role = identifier(row.get(0));
            client
                .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
                .await
                .map_err(|e| sql_error("lock the database role", e))?;
        }
        for row in &databases {
            let database = identifier(row.get(0));
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await
                .map_err(|e| sql_error("drop the database", e))?;
        }
        for row in &roles {
            let name: &str = row.get(0);
            client
                .execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
                     WHERE usename = $1",
                    &[&name],
                )
                .await
                .map_err(|e| sql_error("end the role's sessions", e))?;
            let role = identifier(name);
            client
                .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"))
                .await
                .map_err(|e| sql_error("drop the database role", e))?;
        }

        tracing::info!(
            roles = roles.len(),
            databases = databases.len(),
            "database released"
        );
        Ok(Outcome::new(
            "Your PostgreSQL database and its login have been deleted.",
        ))
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(|e| sql_error("answer", e))?;
        Ok(())
    }
}

/// The role's and the database's name: `booking_<id>_<username>`, at most 63 bytes.
pub fn name(reservation: &Reservation) -> String {
    let mut name = name_prefix(&reservation.event_id);
    let username: String = reservation
        .user
        .username
        .as_deref()
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if !username.is_empty() {
        name.push('_');
        for c in username.chars() {
            if name.len() + c.len_utf8() > MAX_NAME_BYTES {
                break;
            }
            name.push(c);
        }
    }
    name
}

/// `booking_<id>` for an id of up to 20 digits (what the reservation system sends), else
/// `booking_h<hash>`: unique per booking, and never a prefix of another booking's name.
fn name_prefix(event_id: &str) -> String {
    if (1..=20).contains(&event_id.len()) && event_id.bytes().all(|b| b.is_ascii_digit()) {
        format!("booking_{event_id}")
    } else {
        let hash = hex::encode(Sha256::digest(event_id.as_bytes()));
        format!("booking_h{}", &hash[..16])
    }
}

/// What the user is told: a libpq connection string first, so that nothing they need is
/// lost if the reservation system cuts the text at 500 characters.
fn message(
    settings: &Settings,
    name: &str,
    password: &str,
    limit: u16,
    end: DateTime<Utc>,
) -> String {
    format!(
        "host={} port={} dbname={name} user={name} password={} is your PostgreSQL database \
         until {}, for at most {limit} connections at a time.",
        settings.pg_public_host.trim(),
        settings.pg_public_port,
        conninfo_value(password),
        end.format("%Y-%m-%d %H:%M UTC"),
        name = conninfo_value(name),
    )
}

/// A double-quoted SQL identifier: taken exactly as written, whatever it contains.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single-quoted SQL string literal, as PostgreSQL's `quote_literal` writes it: the
/// `E''` form when there is a backslash, so it reads the same whatever
/// `standard_conforming_strings` is.
fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A value in a libpq connection string: single-quoted, `\` and `'` escaped with `\`.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A failed statement: transient when the server is unreachable, overloaded or shutting
/// down, or the statement lost a race; permanent otherwise. The server's text is logged only.
fn sql_error(what: &str, e: tokio_postgres::Error) -> ManagerError {
    let transient = match e.code() {
        None => true,
        Some(code) => ["08", "40", "53", "55", "57"]
            .iter()
            .any(|class| code.code().starts_with(class)),
    };
    let message = format!("the database server could not {what}");
    let error = if transient {
        ManagerError::transient(message)
    } else {
        ManagerError::permanent(message)
    };
    error.with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted_as_postgresql_reads_them() {
        assert_eq!(identifier(r#"a"b"#), r#""a""b""#);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
        assert_eq!(conninfo_value(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn the_longest_message_fits_in_500_characters() {
        let settings = Settings {
            pg_admin_url: String::new().into(),
            pg_public_host: "h".repeat(MAX_HOST_CHARS),
            pg_public_port: u16::MAX,
            pg_connection_limit: u16::MAX,
        };
        // Every quote in a name takes two characters once escaped.
        let name = format!("booking_{}_{}", "9".repeat(20), "'".repeat(34));
        assert_eq!(name.len(), MAX_NAME_BYTES);
        let password = "p".repeat(PASSWORD_CHARS);

        let text = message(&settings, &name, &password, u16::MAX, chrono::Utc::now());

        assert!(
            text.chars().count() <= 500,
            "{} characters",
            text.chars().count()
        );
    }
}
