//! A Redis API key for each booking, confined to the booking's own keys.
//!
//! `configure` creates a Redis ACL user for the booking with a fresh random key as its
//! password. The user may touch only keys that start with the booking's prefix, and only
//! with the commands its scopes allow. `release` deletes the user and closes the
//! connections it has open, so the key stops working at once, then deletes the keys under
//! the booking's prefix, so the next booking finds none of them.
//!
//! A prefix is only a fence if there is no way around it: while Redis's `default` user
//! logs in without a password and reaches the bookings' keys, the manager refuses to start.
//!
//! The user receives the host, port, user name and key prefix, and the key on a line of its
//! own: `redis-cli -h redis.example.org -p 6379 --user booking-103 --pass <key>`, keys under
//! `booking:103:`. The key is the outcome's secret ([`Outcome::with_secret`]): with
//! `SEAL_CREDENTIALS=prefer` or `require` the service seals it to the user's SSH key, so
//! that the reservation system, which keeps the message, cannot read it.
//!
//! # Settings
//! - `REDIS_ADMIN_URL` (required): how this webhook connects, e.g.
//!   `redis://webhook:secret@redis:6379`; the user needs the `@admin` commands `ACL` and
//!   `CLIENT`, and `SCAN` and `UNLINK` on the bookings' keys.
//! - `REDIS_PUBLIC_HOST` (required) and `REDIS_PUBLIC_PORT` (default 6379): the address
//!   users connect to.
//!
//! # Custom parameters
//! - `scopes` (optional, default `read,write`): a comma-separated list of [`SCOPES`].
//!   Whatever the scopes, commands that reach beyond the prefix or allocate far more than
//!   they send (`SETRANGE`, `SETBIT`, `BITFIELD`: up to 512 MB in one command) are refused
//!   ([`DENIED`]). No parameter goes into the key pattern.
//!
//! # The server
//! - Turn the `default` user off (`ACL SETUSER default off`, after giving the webhook a user
//!   of its own) or give it a password (`ACL SETUSER default on >PASSWORD`, or
//!   `requirepass`); the manager refuses to start while it is open.
//! - Set `maxmemory`: bookings share the server's memory, and `SET` or `APPEND` can still
//!   grow a key by what a user sends.
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
//! Start a project with it: `cargo generate ... -d manager=api_key` makes this file its
//! `src/resource.rs`.

use anyhow::Context as _;
use async_trait::async_trait;
use rand::distr::{Alphanumeric, SampleString};
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

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
/// which key patterns do not restrict (`FLUSHALL`, `KEYS`, `SCAN`, `FUNCTION FLUSH`, ...),
/// and those that allocate up to 512 MB from a few bytes, by writing at a far offset
/// (`BITFIELD_RO` stays for reading bits).
pub const DENIED: &[&str] = &[
    "-@dangerous",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-function",
    "-setrange",
    "-setbit",
    "-bitfield",
];
/// Keys `SCAN` visits per round when `release` deletes a booking's keys.
const SCAN_COUNT: usize = 1000;

/// The manager `src/main.rs` runs when this example is the project's `src/resource.rs`.
pub type Manager = ApiKey;

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

    /// Connects once, so that a wrong `REDIS_ADMIN_URL` stops the service at start-up, and
    /// refuses a server whose `default` user would let anyone past the bookings' prefixes.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.redis_admin_url.expose_secret())
            .context("REDIS_ADMIN_URL is not a Redis URL")?;
        let redis = client
            .get_connection_manager()
            .await
            .context("cannot connect to Redis with REDIS_ADMIN_URL")?;
        refuse_open_default_user(&mut redis.clone()).await?;
        Ok(Self { settings, redis })
    }
}

/// Fails while the `default` user is on, needs no password and may read or write a
/// booking's keys: anyone who reaches the server would then have every booking's keys.
async fn refuse_open_default_user(redis: &mut ConnectionManager) -> anyhow::Result<()> {
    let reply: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg("default")
        .query_async(redis)
        .await
        .context("cannot check Redis's default user (ACL GETUSER default)")?;
    let flags = strings(field(&reply, "flags"));
    if !(flags.iter().any(|f| f == "on") && flags.iter().any(|f| f == "nopass")) {
        return Ok(());
    }
    let probe = key_prefix("0");
    let mut reaches = false;
    for command in [&["GET", probe.as_str()][..], &["SET", probe.as_str(), "x"]] {
        // `OK` when the user may run the command, else a sentence saying why not.
        let answer: String = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg("default")
            .arg(command)
            .query_async(redis)
            .await
            .context("cannot check Redis's default user (ACL DRYRUN)")?;
        reaches |= answer == "OK";
    }
    anyhow::ensure!(
        !reaches,
        "Redis's default user needs no password and can reach every booking's keys, so a \
         booking's key prefix keeps no one out: turn it off with `ACL SETUSER default off` \
         (after REDIS_ADMIN_URL names a user of its own) or give it a password with \
         `ACL SETUSER default on >PASSWORD` (or `requirepass`)"
    );
    Ok(())
}

/// The value after `name` in a reply of name-value pairs (`ACL GETUSER`).
fn field<'a>(reply: &'a redis::Value, name: &str) -> Option<&'a redis::Value> {
    let is = |v: &redis::Value| strings(Some(v)).first().is_some_and(|s| s == name);
    match reply {
        redis::Value::Array(items) => items
            .chunks(2)
            .find(|pair| is(&pair[0]))
            .and_then(|pair| pair.get(1)),
        redis::Value::Map(pairs) => pairs.iter().find(|(k, _)| is(k)).map(|(_, v)| v),
        _ => None,
    }
}

/// A reply's strings: the one string, or those of an array or set.
fn strings(value: Option<&redis::Value>) -> Vec<String> {
    match value {
        Some(redis::Value::BulkString(bytes)) => vec![String::from_utf8_lossy(bytes).into()],
        Some(redis::Value::SimpleString(text)) => vec![text.clone()],
        Some(redis::Value::Array(items) | redis::Value::Set(items)) => {
            items.iter().flat_map(|v| strings(Some(v))).collect()
        }
        _ => Vec::new(),
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
        // The connection first: sealed, the key leaves room for little more.
        Ok(Outcome::new(format!(
            "host={} port={} user={user} for keys starting with {prefix} (scopes {}) until \
             {}. Key:",
            self.settings.redis_public_host.trim(),
            self.settings.redis_public_port,
            scopes.join(","),
            reservation.end.format("%Y-%m-%d %H:%M UTC"),
        ))
        .with_secret(key))
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
        // With the user gone nothing adds keys under the prefix: one pass finds them all.
        let keys = self
            .delete_keys(&key_prefix(&reservation.event_id))
            .await
            .map_err(|e| redis_error("delete the booking's keys", e))?;

        tracing::info!(%user, connections_closed = killed.0, keys, "API key released");
        Ok(Outcome::new(
            "Your Redis API key and the keys it wrote have been deleted.",
        ))
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.redis.clone())
            .await
            .map_err(|e| redis_error("answer", e))
    }
}

impl ApiKey {
    /// Deletes every key starting with `prefix` (`SCAN` then `UNLINK`, which frees large
    /// values off the main thread) and returns how many there were.
    async fn delete_keys(&self, prefix: &str) -> redis::RedisResult<usize> {
        let mut redis = self.redis.clone();
        let pattern = format!("{}*", glob_escaped(prefix));
        let (mut cursor, mut deleted) = (0u64, 0);
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut redis)
                .await?;
            if !keys.is_empty() {
                deleted += redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<usize>(&mut redis)
                    .await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// `text` with Redis's glob characters escaped, so a pattern matches it literally.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
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
