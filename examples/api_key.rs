//! A Redis API key for each booking, confined to the booking's own keys.
//!
//! `configure` creates a Redis ACL user for the booking with a fresh random key as its
//! password. The user may touch only keys that start with the booking's prefix, and only
//! with the commands its scopes allow. `release` deletes the user and closes the
//! connections it has open, so the key stops working at once.
//!
//! The user receives the host, port, user name, key and key prefix:
//! `redis-cli -h redis.example.org -p 6379 --user booking-103 --pass <key>`, keys under
//! `booking:103:`.
//!
//! # Settings
//! - `REDIS_ADMIN_URL` (required): how this webhook connects, e.g.
//!   `redis://webhook:secret@redis:6379`; the user needs the `@admin` commands `ACL` and
//!   `CLIENT`.
//! - `REDIS_PUBLIC_HOST` (required) and `REDIS_PUBLIC_PORT` (default 6379): the address
//!   users connect to.
//!
//! # Custom parameters
//! - `scopes` (optional, default `read,write`): a comma-separated list of [`SCOPES`].
//!   Whatever the scopes, commands that reach beyond the prefix ([`DENIED`]) are refused.
//!
//! # Repeated calls
//! A repeated `configure` sets the user's rules again and issues a new key; the previous
//! key stops authenticating, and connections already open with it stay open. A key cannot
//! be shown twice, and a `configure` is only repeated when its first answer may not have
//! reached the user. `release` of a booking whose user is gone succeeds.
//!
//! ACL users live in the server's memory: with an ACL file, a restarted server forgets
//! them unless `ACL SAVE` is run.
//!
//! Run it with `cargo run --example api_key --features redis`.

use anyhow::Context as _;
use async_trait::async_trait;
use rand::distr::{Alphanumeric, SampleString};
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use webhook::manager::{ManagerError, Outcome, ResourceManager};
use webhook::reservation::Reservation;

/// Random alphanumeric characters in a key: 32 of 62 symbols are about 190 bits.
const KEY_CHARS: usize = 32;
/// Longest `REDIS_PUBLIC_HOST` accepted, so the message stays within 500 characters.
const MAX_HOST_CHARS: usize = 100;
/// The scopes a booking may ask for, and the ACL command categories each one grants.
pub const SCOPES: &[(&str, &str)] = &[("read", "+@read"), ("write", "+@write")];
/// Scopes of a booking that asks for none.
const DEFAULT_SCOPES: &str = "read,write";
/// Always allowed: clients check their connection with it.
const ALLOWED: &[&str] = &["+ping"];
/// Always refused: commands that act on the whole server or list keys beyond the prefix,
/// which key patterns do not restrict (`FLUSHALL`, `KEYS`, `SCAN`, `FUNCTION FLUSH`, ...).
pub const DENIED: &[&str] = &["-@dangerous", "-scan", "-randomkey", "-dbsize", "-function"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    webhook::cli::run(ApiKey::from_env()).await
}

/// This manager's settings, read from the environment by [`Settings::from_vars`].
#[derive(Debug, Deserialize)]
pub struct Settings {
    /// `REDIS_ADMIN_URL`: the administrator's connection; it may hold a password.
    pub redis_admin_url: SecretString,
    /// `REDIS_PUBLIC_HOST`: the host name users are told to connect to.
    pub redis_public_host: String,
    /// `REDIS_PUBLIC_PORT`: the port users are told to connect to.
    #[serde(default = "default_port")]
    pub redis_public_port: u16,
}

fn default_port() -> u16 {
    6379
}

impl Settings {
    /// Reads the settings from `(name, value)` pairs; errors name the variable.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let settings: Self = webhook::config::settings_from_vars(vars)?;
        let host = settings.redis_public_host.trim();
        anyhow::ensure!(
            !host.is_empty() && host.chars().count() <= MAX_HOST_CHARS && !host.contains(' '),
            "REDIS_PUBLIC_HOST must be a host name of {MAX_HOST_CHARS} characters at most"
        );
        Ok(settings)
    }
}

/// Creates and deletes a Redis ACL user per booking.
pub struct ApiKey {
    settings: Settings,
    /// Reconnects by itself when the server restarts or the network drops.
    redis: ConnectionManager,
}

impl ApiKey {
    /// Reads the settings from the process environment and connects.
    pub async fn from_env() -> anyhow::Result<Self> {
        Self::new(Settings::from_vars(std::env::vars())?).await
    }

    /// Connects once, so that a wrong `REDIS_ADMIN_URL` stops the service at start-up.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.redis_admin_url.expose_secret())
            .context("REDIS_ADMIN_URL is not a Redis URL")?;
        let redis = client
            .get_connection_manager()
            .await
            .context("cannot connect to Redis with REDIS_ADMIN_URL")?;
        Ok(Self { settings, redis })
    }
}

#[async_trait]
impl ResourceManager for ApiKey {
    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let scopes = scopes(reservation)?;
        let (user, prefix) = (
            user_name(&reservation.event_id),
            key_prefix(&reservation.event_id),
        );
        let key = Alphanumeric.sample_string(&mut rand::rng(), KEY_CHARS);
        // Redis is given the key's hash only, so the key appears in no command or log.
        let hash = hex::encode(Sha256::digest(key.as_bytes()));

        // `reset` first: the same rules result however the user was left before.
        let mut setuser = redis::cmd("ACL");
        setuser
            .arg("SETUSER")
            .arg(&user)
            .arg("reset")
            .arg("on")
            .arg(format!("#{hash}"))
            .arg(format!("~{prefix}*"))
            .arg("resetchannels")
            .arg("-@all");
        for scope in &scopes {
            setuser.arg(grant(scope));
        }
        setuser.arg(ALLOWED).arg(DENIED);
        setuser
            .query_async::<()>(&mut self.redis.clone())
            .await
            .map_err(|e| redis_error("create the API key", e))?;

        tracing::info!(%user, scopes = %scopes.join(","), "API key configured");
        Ok(Outcome::new(format!(
            "host={} port={} user={user} key={key} works for keys starting with {prefix} \
             (scopes {}) until {}.",
            self.settings.redis_public_host.trim(),
            self.settings.redis_public_port,
            scopes.join(","),
            reservation.end.format("%Y-%m-%d %H:%M UTC"),
        )))
    }

    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let user = user_name(&reservation.event_id);
        // In one transaction: no new logins, no open connections, no user. Switching the
        // user off first also creates it if it was gone, so `CLIENT KILL USER` always has
        // a user to act on and a repeated release succeeds.
        let killed: (i64,) = redis::pipe()
            .atomic()
            .cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("off")
            .ignore()
            .cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg(&user)
            .cmd("ACL")
            .arg("DELUSER")
            .arg(&user)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| redis_error("delete the API key", e))?;

        tracing::info!(%user, connections_closed = killed.0, "API key released");
        Ok(Outcome::new("Your Redis API key has been deleted."))
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.redis.clone())
            .await
            .map_err(|e| redis_error("answer", e))
    }
}

/// The scopes a booking asked for, checked against [`SCOPES`], in [`SCOPES`] order.
fn scopes(reservation: &Reservation) -> Result<Vec<&'static str>, ManagerError> {
    let asked = reservation.parameters.get("scopes");
    let asked = asked.as_deref().unwrap_or(DEFAULT_SCOPES);
    let allowed = || {
        SCOPES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut chosen = Vec::new();
    for scope in asked.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, _)) = SCOPES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(scope))
        else {
            let shown: String = scope.chars().take(40).collect();
            return Err(ManagerError::invalid_parameter(
                "scopes",
                format!("unknown scope {shown:?}; allowed: {}", allowed()),
            ));
        };
        if !chosen.contains(name) {
            chosen.push(*name);
        }
    }
    if chosen.is_empty() {
        return Err(ManagerError::invalid_parameter(
            "scopes",
            format!("name at least one of: {}", allowed()),
        ));
    }
    chosen.sort_by_key(|c| SCOPES.iter().position(|(name, _)| name == c));
    Ok(chosen)
}

/// The ACL rule a scope from [`SCOPES`] grants.
fn grant(scope: &str) -> &'static str {
    SCOPES
        .iter()
        .find(|(name, _)| *name == scope)
        .map(|(_, rule)| *rule)
        .expect("scopes are checked against SCOPES")
}

/// `booking-<id>`: the ACL user of a booking.
pub fn user_name(event_id: &str) -> String {
    format!("booking-{}", booking_part(event_id))
}

/// `booking:<id>:`: the start of every key the booking's user may touch.
pub fn key_prefix(event_id: &str) -> String {
    format!("booking:{}:", booking_part(event_id))
}

/// The id itself when it is up to 20 digits (what the reservation system sends), else `h`
/// and a hash of it: unique per booking, and free of spaces and glob characters, which
/// user names and key patterns cannot take.
fn booking_part(event_id: &str) -> String {
    if (1..=20).contains(&event_id.len()) && event_id.bytes().all(|b| b.is_ascii_digit()) {
        event_id.to_owned()
    } else {
        let hash = hex::encode(Sha256::digest(event_id.as_bytes()));
        format!("h{}", &hash[..16])
    }
}

/// A failed command: transient when Redis cannot be reached or did not answer in time.
fn redis_error(what: &str, e: redis::RedisError) -> ManagerError {
    let message = format!("Redis could not {what}");
    let error = if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        ManagerError::transient(message)
    } else {
        ManagerError::permanent(message)
    };
    error.with_source(e)
}
