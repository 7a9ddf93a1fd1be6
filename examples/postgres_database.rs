//! A PostgreSQL database of their own for each booking.
//!
//! `configure` creates a login role with a fresh random password, a connection limit, an
//! expiry and resource limits, and a database owned by it that no one else may connect to.
//! `end_changed` moves the expiry. `release` blocks the role from logging in (`NOLOGIN`,
//! which also covers databases other than its own), ends its sessions, drops the database,
//! then what the role owns or was granted in any other database, then the role. Needs
//! PostgreSQL 14 or later.
//!
//! The user receives a libpq connection string, which `psql` and most drivers take:
//! `host=db.example.org port=5432 dbname='booking_103' user='booking_103'`, and the password
//! on a line of its own (`PGPASSWORD=… psql "host=…"`). The password is the outcome's secret
//! ([`Outcome::with_secret`]): with `SEAL_CREDENTIALS=prefer` or `require` the service
//! seals it to the user's SSH key, so that the reservation system, which keeps the message,
//! cannot read it; sealed, the message has room for the connection string's start only.
//! The server is sent only the password's SCRAM verifier, never the password itself, so it
//! cannot show up in the server's statement log.
//!
//! # Settings
//! - `PG_ADMIN_URL` (required): how this webhook connects as an administrator, as a URL
//!   (`postgresql://webhook:secret@db:5432/postgres`) or key/value text (`host=/run/postgresql
//!   user=postgres`). The role must be a superuser, or have CREATEROLE, CREATEDB and
//!   `pg_signal_backend`, be a member of the roles it creates, own every database other
//!   than the bookings' (see *Isolation*) and, on PostgreSQL 15 or later, hold
//!   `GRANT SET ON PARAMETER temp_file_limit` (on 14, set `PG_TEMP_FILE_LIMIT=-1`). No TLS:
//!   keep this connection inside the cluster or on a Unix socket.
//! - `PG_PUBLIC_HOST` (required) and `PG_PUBLIC_PORT` (default 5432): the address users
//!   connect to, which may differ from the admin's.
//! - `PG_CONNECTION_LIMIT` (default 5): the most sessions a booking's role may open; also
//!   the largest value the `connections` custom parameter may ask for.
//! - `PG_STATEMENT_TIMEOUT` (default `10m`): the role's `statement_timeout`, a duration such
//!   as `30s` or `10m`; `0` leaves the server's. It is a default: the user may change it in
//!   their own sessions.
//! - `PG_TEMP_FILE_LIMIT` (default `1GB`): the role's `temp_file_limit`, the temporary file
//!   space one session may use, in `kB`, `MB`, `GB` or `TB`; `-1` leaves the server's. Only
//!   an administrator can change it, so it binds the user.
//! - `RELEASE_GRACE` (default `10m`), read as the service reads it: the role's password
//!   expires (`VALID UNTIL`) at the booking's end plus this grace, by when the service has
//!   released the booking even without an END.
//!
//! # Custom parameters
//! - `connections` (optional): a smaller connection limit, 1 to `PG_CONNECTION_LIMIT`.
//!
//! # Isolation
//! At start-up the example revokes CONNECT and TEMPORARY from PUBLIC on every database that
//! allows connections and is not a booking's (`postgres`, `template1`, the admin's and any
//! application's), so that a booking's role can connect to its own database only. Roles
//! that relied on PUBLIC to reach those databases need their own `GRANT CONNECT`. When the
//! admin role may not revoke (it neither owns a database nor is a superuser), start-up
//! stops and prints the statements for a superuser to run. A database created after
//! start-up is open to PUBLIC again until the next start, so also end `pg_hba.conf` with a
//! `sameuser` rule, after the lines of the admin and every other role you know, which lets
//! any remaining role (every booking's) reach only the database of its own name whatever
//! the grants:
//!
//! ```text
//! host  all       webhook,app  10.0.0.0/8  scram-sha-256
//! host  sameuser  all          0.0.0.0/0   scram-sha-256
//! ```
//!
//! (On PostgreSQL 16 or later the second line may name `/^booking_` instead of `all`.)
//!
//! Each database is created from `template0`, not `template1`: no session on `template1`
//! can block it and nothing put in `template1` is copied into it. It is created closed to
//! connections and opened only once PUBLIC has lost CONNECT, so no other role slips in
//! between. The admin session pins its `search_path` to `pg_catalog, pg_temp` and names
//! every function and operator with its schema, so that nothing a user creates in a schema
//! open to them (`public` on PostgreSQL 14) can run with the admin's rights. Every admin
//! session also starts with its own `role`, read-write default, timeouts (none, but a
//! minute for a lock) and no `local_preload_libraries`, whatever the owner of the database
//! it connects to set there; these outrank the same settings in `PG_ADMIN_URL`'s `options`
//! or on the admin role. To clean up in another booking's database, `release` lifts for
//! that moment a connection limit or `ALLOW_CONNECTIONS false` that its owner set there,
//! then puts them back; a database that its owner made a template is dropped all the same.
//!
//! PostgreSQL shows every role's name to every role (`pg_roles`), and this cannot be
//! hidden. The names therefore carry only the booking id, never who booked.
//!
//! # Names
//! The role and the database share one name, `booking_<id>`, for an id of up to 20 digits;
//! any other id becomes `booking_h` and a hash of it. `release` and `end_changed` also find
//! the names earlier versions gave (`booking_<id>_<username>`) by their `booking_<id>_`
//! prefix. The `booking_` prefix is this webhook's: do not give other roles or databases
//! names that start with it.
//!
//! # Repeated calls
//! A repeated `configure` keeps the role and the database and their data, but sets a new
//! password and returns it: the first one cannot be shown again, and a `configure` is only
//! repeated when its first answer may not have reached the user. Sessions opened with the
//! old password stay open. `release` of a booking that is already gone succeeds.
//!
//! Start a project with it: `cargo generate ... -d manager=postgres_database` makes this file its
//! `src/resource.rs`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

/// Random alphanumeric characters in a password: 32 of 62 symbols are about 190 bits.
const PASSWORD_CHARS: usize = 32;
/// Longest `PG_PUBLIC_HOST` accepted, so that the connection string stays within the
/// 500 characters the reservation system shows.
const MAX_HOST_CHARS: usize = 100;
/// Every role and database this webhook creates starts with it.
const PREFIX: &str = "booking_";
/// Run first in every admin session: nothing outside the system catalog is looked up.
const PIN_SEARCH_PATH: &str = "SET search_path = pg_catalog, pg_temp";
/// What every admin session starts with, whatever is set on the database it connects to.
///
/// The owner of a database, and so every booking's user, may `ALTER DATABASE … SET` any
/// parameter an ordinary role may change, and every session on that database starts with
/// it, the admin's too when it connects there to `DROP OWNED`: a read-only default or a
/// timeout of a millisecond would fail that step on every retry, `role` would run it as
/// another role (a superuser may become any). These go in the startup packet (`options`),
/// which outranks the database's settings and acts before the session starts: a `SET`
/// afterwards would come too late for a `local_preload_libraries` naming a missing library,
/// which refuses the session, for a timeout that ends the first statement, and for `role`,
/// to which `RESET ROLE` returns. They also outrank `PG_ADMIN_URL`'s `options` and the admin
/// role's own settings. The other parameters a role may set change nothing the admin runs.
/// A role's settings (`ALTER ROLE … SET`) apply to sessions logged in as that role only,
/// and a booking's role may set no role's but its own, so they never reach the admin.
///
/// A booking's open transaction can hold a lock the admin needs (on a catalog row of a
/// table the released role was granted, say) as long as it likes; `lock_timeout` then
/// fails the step, to be retried, rather than leave it waiting for ever.
/// `transaction_timeout` exists from PostgreSQL 17 on: each name goes only to a server that
/// knows it, since an unknown one refuses the session.
const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("search_path", "pg_catalog,pg_temp"),
    ("role", "none"),
    ("default_transaction_read_only", "off"),
    ("statement_timeout", "0"),
    ("lock_timeout", "1min"),
    ("transaction_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    ("tcp_user_timeout", "0"),
    ("local_preload_libraries", ""),
];

/// The manager `src/main.rs` runs when this example is the project's `src/resource.rs`.
pub type Manager = PostgresDatabase;

/// This manager's settings, read from the environment by [`Settings::from_vars`].
#[derive(Debug)]
pub struct Settings {
    /// `PG_ADMIN_URL`: the administrator's connection; it holds a password.
    pub pg_admin_url: SecretString,
    /// `PG_PUBLIC_HOST`: the host name users are told to connect to.
    pub pg_public_host: String,
    /// `PG_PUBLIC_PORT`: the port users are told to connect to.
    pub pg_public_port: u16,
    /// `PG_CONNECTION_LIMIT`: sessions a booking's role may have open at once.
    pub pg_connection_limit: u16,
    /// `PG_STATEMENT_TIMEOUT` in milliseconds; `None` leaves the server's.
    pub statement_timeout_ms: Option<u32>,
    /// `PG_TEMP_FILE_LIMIT` in kB; `None` leaves the server's.
    pub temp_file_limit_kb: Option<u32>,
    /// `RELEASE_GRACE`: how long past its end a booking's password stays valid.
    pub release_grace: Duration,
}

/// The variables as text, before [`Settings::from_vars`] checks them.
#[derive(Deserialize)]
struct Vars {
    pg_admin_url: SecretString,
    pg_public_host: String,
    #[serde(default = "default_port")]
    pg_public_port: u16,
    #[serde(default = "default_connection_limit")]
    pg_connection_limit: u16,
    pg_statement_timeout: Option<String>,
    pg_temp_file_limit: Option<String>,
    release_grace: Option<String>,
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
        let vars: Vars = webhook::config::settings_from_vars(vars)?;
        let host = vars.pg_public_host.trim();
        anyhow::ensure!(
            !host.is_empty() && host.chars().count() <= MAX_HOST_CHARS && !host.contains(' '),
            "PG_PUBLIC_HOST must be a host name of {MAX_HOST_CHARS} characters at most"
        );
        anyhow::ensure!(
            vars.pg_connection_limit >= 1,
            "PG_CONNECTION_LIMIT must be at least 1"
        );
        let timeout = vars.pg_statement_timeout.as_deref().unwrap_or("10m");
        let statement_timeout_ms = match duration(timeout) {
            Some(d) if d.is_zero() => None,
            Some(d) if d.as_millis() >= 1 && d.as_millis() <= i32::MAX as u128 => {
                Some(d.as_millis() as u32)
            }
            _ => anyhow::bail!(
                "PG_STATEMENT_TIMEOUT: {timeout:?} is not a duration such as 30s or 10m, \
                 from 1ms to 24 days, or 0 for the server's"
            ),
        };
        let limit = vars.pg_temp_file_limit.as_deref().unwrap_or("1GB");
        let temp_file_limit_kb = match limit.trim() {
            "-1" => None,
            text => Some(kilobytes(text).with_context(|| {
                format!(
                    "PG_TEMP_FILE_LIMIT: {limit:?} is not a size such as 512MB or 1GB, \
                     up to 2047GB, or -1 for the server's"
                )
            })?),
        };
        let grace = vars.release_grace.as_deref().unwrap_or("10m");
        let release_grace = duration(grace).filter(|d| !d.is_zero()).with_context(|| {
            format!("RELEASE_GRACE: {grace:?} is not a positive duration such as 5s, 500ms or 2m")
        })?;
        Ok(Self {
            pg_admin_url: vars.pg_admin_url,
            pg_public_host: vars.pg_public_host,
            pg_public_port: vars.pg_public_port,
            pg_connection_limit: vars.pg_connection_limit,
            statement_timeout_ms,
            temp_file_limit_kb,
            release_grace,
        })
    }
}

/// A duration as the service reads one: whole seconds, or humantime (`90s`, `10m`).
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).ok(),
    }
}

/// A size in PostgreSQL's units (`kB` when none is given), in kB, from 1 kB to `i32::MAX`.
fn kilobytes(text: &str) -> anyhow::Result<u32> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let factor: u64 = match unit.trim() {
        "" | "kB" => 1,
        "MB" => 1 << 10,
        "GB" => 1 << 20,
        "TB" => 1 << 30,
        _ => anyhow::bail!("unknown unit"),
    };
    let kb = number.parse::<u64>()?.saturating_mul(factor);
    anyhow::ensure!((1..=i32::MAX as u64).contains(&kb), "out of range");
    Ok(kb as u32)
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

    /// Connects once, so that a wrong `PG_ADMIN_URL` stops the service at start-up, and
    /// closes every other database to PUBLIC.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let mut admin: tokio_postgres::Config = settings
            .pg_admin_url
            .expose_secret()
            .parse()
            .context("PG_ADMIN_URL is not a PostgreSQL connection URL")?;
        if admin.get_connect_timeout().is_none() {
            admin.connect_timeout(Duration::from_secs(5));
        }
        // A session on the admin's own database, which no booking owns, so its settings are
        // the operator's: only to learn which of the settings the server knows.
        let known: Vec<String> = connect(&admin)
            .await
            .context("cannot connect to PostgreSQL with PG_ADMIN_URL")?
            .query(
                // Not pg_settings, which leaves out `role`.
                "SELECT name FROM pg_catalog.unnest($1::pg_catalog.text[]) name \
                 WHERE pg_catalog.current_setting(name, true) IS NOT NULL",
                &[&SESSION_SETTINGS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()],
            )
            .await
            .context("cannot list the server's settings")?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let options = SESSION_SETTINGS
            .iter()
            .filter(|(name, _)| known.iter().any(|k| k == name))
            .map(|(name, value)| format!("-c {name}={value}"));
        let options = admin
            .get_options()
            .into_iter()
            .map(str::to_owned)
            .chain(options);
        admin.options(options.collect::<Vec<_>>().join(" "));
        let manager = Self {
            settings,
            admin,
            client: Mutex::new(None),
        };
        let client = manager
            .client()
            .await
            .context("cannot connect to PostgreSQL with PG_ADMIN_URL")?;
        isolation::close_other_databases(&client).await?;
        Ok(manager)
    }

    /// The admin session, connecting first if there is none.
    async fn client(&self) -> Result<Arc<Client>, ManagerError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(connect(&self.admin).await?);
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

    /// `VALID UNTIL` for a booking ending at `end`, as an SQL literal.
    fn valid_until(&self, end: DateTime<Utc>) -> String {
        let until = TimeDelta::from_std(self.settings.release_grace)
            .ok()
            .and_then(|grace| end.checked_add_signed(grace));
        escape_literal(&until.map_or("infinity".into(), |t| {
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        }))
    }

    /// `ALTER ROLE … SET` for the role's limits. No `temp_file_limit` leaves it as it was:
    /// an admin that may not set it may not reset it either.
    fn role_limits(&self, role: &str) -> String {
        let timeout = match self.settings.statement_timeout_ms {
            Some(ms) => format!("ALTER ROLE {role} SET statement_timeout = {ms}"),
            None => format!("ALTER ROLE {role} RESET statement_timeout"),
        };
        match self.settings.temp_file_limit_kb {
            Some(kb) => format!("{timeout}; ALTER ROLE {role} SET temp_file_limit = {kb}"),
            None => timeout,
        }
    }
}

/// A new admin session on `config`, its `search_path` pinned before any other statement
/// (again, after [`SESSION_SETTINGS`], but the first session has none).
async fn connect(config: &tokio_postgres::Config) -> Result<Client, ManagerError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        ManagerError::transient("the database server cannot be reached").with_source(e)
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL admin connection closed");
        }
    });
    client
        .batch_execute(PIN_SEARCH_PATH)
        .await
        .map_err(|e| sql_error("pin the search path", e))?;
    Ok(client)
}

#[async_trait]
impl ResourceManager for PostgresDatabase {
    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let limit = self.connection_limit(reservation)?;
        let name = name_prefix(&reservation.event_id);
        let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_CHARS);
        // The server stores only this verifier; the password itself never reaches its logs.
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let (role, secret) = (escape_identifier(&name), escape_literal(&verifier));
        let until = self.valid_until(reservation.end);
        let client = self.client().await?;

        // The role logs in only once its limits and its database are in place.
        match client
            .batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
            .await
        {
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            result => result.map_err(|e| sql_error("create the database role", e))?,
        }
        client
            .batch_execute(&self.role_limits(&role))
            .await
            .map_err(|e| sql_error("set the role's limits", e))?;
        // From template0, which no one can connect to or change; closed until PUBLIC has
        // lost CONNECT. CREATE DATABASE cannot run in a transaction, so it goes on its own.
        match client
            .batch_execute(&format!(
                "CREATE DATABASE {role} OWNER {role} TEMPLATE template0 ALLOW_CONNECTIONS false"
            ))
            .await
        {
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
            result => result.map_err(|e| sql_error("create the database", e))?,
        }
        client
            .batch_execute(&format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {role} FROM PUBLIC; \
                 GRANT CONNECT, TEMPORARY ON DATABASE {role} TO {role}; \
                 ALTER DATABASE {role} ALLOW_CONNECTIONS true"
            ))
            .await
            .map_err(|e| sql_error("restrict access to the database", e))?;
        client
            .batch_execute(&format!(
                "ALTER ROLE {role} LOGIN PASSWORD {secret} CONNECTION LIMIT {limit} \
                 VALID UNTIL {until}"
            ))
            .await
            .map_err(|e| sql_error("open the database role", e))?;

        tracing::info!(limit, "database configured");
        let text = message(&self.settings, &name, limit, reservation.end);
        Ok(Outcome::new(text).with_secret(password))
    }

    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn end_changed(&self, reservation: &Reservation) -> Result<(), ManagerError> {
        let client = self.client().await?;
        let until = self.valid_until(reservation.end);
        let roles = booking_names(&client, "pg_roles", "rolname", &reservation.event_id).await?;
        for name in &roles {
            client
                .batch_execute(&format!(
                    "ALTER ROLE {} VALID UNTIL {until}",
                    escape_identifier(name)
                ))
                .await
                .map_err(|e| sql_error("move the role's expiry", e))?;
        }
        tracing::info!(roles = roles.len(), "expiry moved");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let client = self.client().await?;
        let id = &reservation.event_id;
        let roles = booking_names(&client, "pg_roles", "rolname", id).await?;
        let databases = booking_names(&client, "pg_database", "datname", id).await?;

        // First no new sessions, then no old ones, then nothing left.
        for name in &roles {
            client
                .batch_execute(&format!("ALTER ROLE {} NOLOGIN", escape_identifier(name)))
                .await
                .map_err(|e| sql_error("lock the database role", e))?;
        }
        for name in &databases {
            let database = escape_identifier(name);
            // PostgreSQL drops no template, and an owner may make their database one.
            let template = client
                .query_opt(
                    "SELECT FROM pg_catalog.pg_database \
                     WHERE datname OPERATOR(pg_catalog.=) $1 AND datistemplate",
                    &[name],
                )
                .await
                .map_err(|e| sql_error("look up the database", e))?;
            if template.is_some() {
                client
                    .batch_execute(&format!("ALTER DATABASE {database} IS_TEMPLATE false"))
                    .await
                    .map_err(|e| sql_error("make the database no template", e))?;
            }
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await
                .map_err(|e| sql_error("drop the database", e))?;
        }
        for name in &roles {
            client
                .execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid, 5000) \
                     FROM pg_catalog.pg_stat_activity WHERE usename OPERATOR(pg_catalog.=) $1",
                    &[name],
                )
                .await
                .map_err(|e| sql_error("end the role's sessions", e))?;
            self.drop_owned_elsewhere(&client, name).await?;
            let role = escape_identifier(name);
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

impl PostgresDatabase {
    /// `DROP OWNED BY` the role in every database other than the admin's where it owns
    /// objects or holds privileges (another booking's user may grant it some), or that it
    /// could connect to; else `DROP ROLE` would fail on them.
    ///
    /// The owner of such a database, another booking's user, may have closed it to the
    /// admin: a connection limit binds every role but superusers, and `ALLOW_CONNECTIONS
    /// false` (set from a session on some other database) binds all. The admin may alter
    /// what the roles it created own, so it lifts both for the moment it needs and then puts
    /// back what the owner chose. An owner who keeps closing it again from an open session
    /// can still fail the step, to be retried, until their own release drops the database.
    /// A closed database counts only where the role has something, so that one `configure`
    /// has just created, closed until PUBLIC has lost CONNECT, is never opened early.
    async fn drop_owned_elsewhere(&self, client: &Client, role: &str) -> Result<(), ManagerError> {
        let rows = client
            .query(
                "SELECT d.datname::text, d.datallowconn, d.datconnlimit \
                 FROM pg_catalog.pg_database d \
                 WHERE (d.datallowconn OR pg_catalog.starts_with(d.datname::text, $2)) \
                   AND d.datname OPERATOR(pg_catalog.<>) pg_catalog.current_database() \
                   AND (d.datallowconn \
                        AND pg_catalog.has_database_privilege($1::pg_catalog.name, d.oid, 'CONNECT') \
                        OR d.oid OPERATOR(pg_catalog.=) ANY (\
                          SELECT s.dbid FROM pg_catalog.pg_shdepend s \
                          JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) s.refobjid \
                          WHERE s.refclassid OPERATOR(pg_catalog.=) \
                                'pg_catalog.pg_authid'::pg_catalog.regclass \
                            AND r.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.name))",
                &[&role, &PREFIX],
            )
            .await
            .map_err(|e| sql_error("find the role's objects", e))?;
        for row in rows {
            let (database, allow, limit): (&str, bool, i32) = (row.get(0), row.get(1), row.get(2));
            let name = escape_identifier(database);
            // Only a booking's, whose owner is a booking's role. A limit of -2 marks a
            // database a DROP left half done, which takes no connection and no ALTER.
            let reopen = database.starts_with(PREFIX) && limit >= -1 && (!allow || limit >= 0);
            if reopen {
                client
                    .batch_execute(&format!(
                        "ALTER DATABASE {name} ALLOW_CONNECTIONS true CONNECTION LIMIT -1"
                    ))
                    .await
                    .map_err(|e| sql_error("open another database to the admin", e))?;
            }
            let mut config = self.admin.clone();
            config.dbname(database);
            let dropped = match connect(&config).await {
                Ok(session) => session
                    .batch_execute(&format!("DROP OWNED BY {}", escape_identifier(role)))
                    .await
                    .map_err(|e| sql_error("drop the role's objects in another database", e)),
                Err(e) => Err(e),
            };
            let restored = if reopen {
                client
                    .batch_execute(&format!(
                        "ALTER DATABASE {name} ALLOW_CONNECTIONS {allow} CONNECTION LIMIT {limit}"
                    ))
                    .await
                    .map_err(|e| sql_error("close another database again", e))
            } else {
                Ok(())
            };
            dropped?;
            restored?;
        }
        Ok(())
    }
}

/// The roles (`pg_roles`, `rolname`) or databases (`pg_database`, `datname`) of a booking:
/// `booking_<id>`, and the `booking_<id>_<username>` of earlier versions.
async fn booking_names(
    client: &Client,
    catalog: &str,
    column: &str,
    event_id: &str,
) -> Result<Vec<String>, ManagerError> {
    let prefix = name_prefix(event_id);
    let under = format!("{prefix}_");
    let rows = client
        .query(
            &format!(
                "SELECT {column}::text FROM pg_catalog.{catalog} \
                 WHERE {column} OPERATOR(pg_catalog.=) $1 \
                    OR pg_catalog.starts_with({column}::text, $2)"
            ),
            &[&prefix, &under],
        )
        .await
        .map_err(|e| sql_error("look up the booking's names", e))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The role's and the database's name: `booking_<id>` for an id of up to 20 digits (what
/// the reservation system sends), else `booking_h<hash>`: unique per booking, never a prefix
/// of another booking's name, and saying nothing about who booked.
pub fn name_prefix(event_id: &str) -> String {
    if (1..=20).contains(&event_id.len()) && event_id.bytes().all(|b| b.is_ascii_digit()) {
        format!("{PREFIX}{event_id}")
    } else {
        let hash = hex::encode(Sha256::digest(event_id.as_bytes()));
        format!("{PREFIX}h{}", &hash[..16])
    }
}

/// What the user is told: a libpq connection string first, so that nothing they need is
/// lost if the reservation system cuts the text at 500 characters.
/// What the user reads before the password, the connection string first: sealed, the
/// password leaves room for little more.
fn message(settings: &Settings, name: &str, limit: u16, end: DateTime<Utc>) -> String {
    format!(
        "host={} port={} dbname={name} user={name} is your PostgreSQL database until {}, \
         for at most {limit} connections at a time. Password:",
        settings.pg_public_host.trim(),
        settings.pg_public_port,
        end.format("%Y-%m-%d %H:%M UTC"),
        name = conninfo_value(name),
    )
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

/// Start-up: no role reaches a database that is not a booking's through PUBLIC.
mod isolation {
    use anyhow::Context as _;
    use postgres_protocol::escape::escape_identifier;
    use tokio_postgres::Client;
    use tokio_postgres::error::SqlState;

    /// Databases other than the bookings' that take connections and give PUBLIC CONNECT or
    /// TEMPORARY, and whether the admin owns each.
    const OPEN_TO_PUBLIC: &str = "\
        SELECT d.datname::text, \
               pg_catalog.pg_has_role(current_user, d.datdba, 'USAGE') \
        FROM pg_catalog.pg_database d \
        WHERE d.datallowconn \
          AND NOT pg_catalog.starts_with(d.datname::text, 'booking_') \
          AND EXISTS (SELECT FROM pg_catalog.aclexplode(\
                        COALESCE(d.datacl, pg_catalog.acldefault('d', d.datdba))) a \
                      WHERE a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid \
                        AND a.privilege_type OPERATOR(pg_catalog.=) \
                            ANY (ARRAY['CONNECT', 'TEMPORARY'])) \
        ORDER BY 1";

    /// Revokes CONNECT and TEMPORARY from PUBLIC on every database [`OPEN_TO_PUBLIC`]
    /// finds; where the admin may not, fails with the statements a superuser must run.
    pub async fn close_other_databases(client: &Client) -> anyhow::Result<()> {
        let open = client
            .query(OPEN_TO_PUBLIC, &[])
            .await
            .context("cannot list the databases")?;
        for row in open {
            let database = escape_identifier(row.get(0));
            let revoke = format!("REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC");
            match client.batch_execute(&revoke).await {
                // A role that does not own the database is refused, or only warned.
                Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
                result => result.with_context(|| format!("cannot run {revoke}"))?,
            }
        }
        let left = client
            .query(OPEN_TO_PUBLIC, &[])
            .await
            .context("cannot list the databases")?;
        if left.is_empty() {
            return Ok(());
        }
        let row = client
            .query_one(
                "SELECT current_user::text, pg_catalog.current_database()::text, r.rolsuper \
                 FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user",
                &[],
            )
            .await
            .context("cannot read the admin role")?;
        let (admin, own, superuser): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        let mut statements = Vec::new();
        for row in &left {
            let (database, owned): (String, bool) = (row.get(0), row.get(1));
            if database == own && !owned && !superuser {
                // Else the admin would lock itself out of the database it connects to.
                statements.push(format!(
                    "GRANT CONNECT ON DATABASE {} TO {};",
                    escape_identifier(&database),
                    escape_identifier(&admin)
                ));
            }
            statements.push(format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC;",
                escape_identifier(&database)
            ));
        }
        anyhow::bail!(
            "PG_ADMIN_URL's role {admin:?} may not stop other roles connecting to databases \
             that are not bookings'; run this as a superuser, then start again: {}",
            statements.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_message_fits_in_500_characters() {
        let settings = Settings {
            pg_admin_url: String::new().into(),
            pg_public_host: "h".repeat(MAX_HOST_CHARS),
            pg_public_port: u16::MAX,
            pg_connection_limit: u16::MAX,
            statement_timeout_ms: None,
            temp_file_limit_kb: None,
            release_grace: Duration::from_secs(600),
        };
        let name = name_prefix(&"9".repeat(20));
        let password = "p".repeat(PASSWORD_CHARS);

        let text = message(&settings, &name, u16::MAX, chrono::Utc::now());

        // In plain text the password follows on a line of its own.
        let shown = text.chars().count() + 1 + password.len();
        assert!(shown <= 500, "{shown} characters");
    }

    #[test]
    fn sizes_are_read_in_postgresql_units() {
        assert_eq!(kilobytes("1GB").unwrap(), 1 << 20);
        assert_eq!(kilobytes("512MB").unwrap(), 512 << 10);
        assert_eq!(kilobytes("64").unwrap(), 64);
        for bad in ["", "0", "1gb", "1 PB", "-5", "2048GB", "1GB; RESET ALL"] {
            assert!(kilobytes(bad).is_err(), "{bad}");
        }
    }
}
