//! Settings from environment variables, checked once at start-up.
//!
//! Every variable is documented in `.env.example`. A missing or malformed value stops the
//! service with a message that names the variable and what it expects. Secrets can come
//! from files (`WEBHOOK_SECRET_FILE`, for Kubernetes secret volumes) and are never logged.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::contract::signature::{Keys, Preset, WHSEC_PREFIX, standard_webhooks_key};
use crate::http::waldur;

/// `SEAL_CREDENTIALS`: whether the secrets of outcomes are sealed to the user's SSH key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Seal {
    /// Never: the secret goes in plain text, after the outcome's text (the default).
    #[default]
    Off,
    /// When the user has an `ssh-ed25519` or `ssh-rsa` key and the sealed message fits;
    /// otherwise in plain text.
    Prefer,
    /// Always: a booking whose user has no key a secret can be sealed to is refused before
    /// `configure`, and a configured one whose secret does not fit sealed is released again.
    Require,
}

impl Seal {
    /// The values `SEAL_CREDENTIALS` accepts, in words.
    pub const ACCEPTED: &str = "off, prefer or require";

    /// Reads a value of `SEAL_CREDENTIALS` (case and surrounding spaces ignored).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Some(Seal::Off),
            "prefer" => Some(Seal::Prefer),
            "require" => Some(Seal::Require),
            _ => None,
        }
    }

    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Seal::Off => "off",
            Seal::Prefer => "prefer",
            Seal::Require => "require",
        }
    }
}

/// Who the service is: the webhook crate's name and version (in `/healthz`, the server's
/// name and the reports' `User-Agent`), and the resource type the project was generated
/// for, which `RESOURCE_TYPE` overrides. Made by [`service!`](crate::service) in the
/// webhook's `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The webhook crate's name.
    pub name: &'static str,
    /// The webhook crate's version.
    pub version: &'static str,
    /// The resource type `RESOURCE_TYPE` defaults to; empty for none (then it must be set).
    pub resource_type: &'static str,
}

impl Service {
    /// The core itself, with no default resource type: what the core's own tests and tools
    /// run as.
    pub const CORE: Service = Service {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        resource_type: "",
    };
}

/// The [`Service`] of the crate that calls it: its name and version from Cargo, and the
/// default resource type given, e.g. `webhook::service!(include_str!("resource_type.txt"))`.
#[macro_export]
macro_rules! service {
    ($resource_type:expr) => {
        $crate::config::Service {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            resource_type: $resource_type,
        }
    };
}

/// Variables that may instead be read from the file named by `<NAME>_FILE`.
const FILE_VARIABLES: [&str; 5] = [
    "WEBHOOK_SECRET",
    "WEBHOOK_PREVIOUS_SECRETS",
    "LEDGER_URL",
    "ADMIN_TOKEN",
    "WALDUR_TOKEN",
];

/// A setting that stops start-up, with the variable it is about.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Everything the service needs to know before it starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Who the service is.
    pub service: Service,
    /// Address and port to listen on (`HOST`, `PORT`).
    pub listen: SocketAddr,
    /// The resource type this webhook manages, as the reservation system names it.
    pub resource_type: String,
    /// Keys that inbound signatures are checked against; `None` only with `ALLOW_UNSIGNED`.
    pub keys: Option<Keys>,
    /// Largest body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long a request's line and headers may take to arrive.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive after its headers (408 beyond it).
    pub body_timeout: Duration,
    /// How long a connection may go without a byte either way before it is closed.
    pub idle_timeout: Duration,
    /// Deliveries (`POST /webhook`, `POST /waldur`) handled at once; more get 503.
    pub max_concurrent_requests: usize,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Where results are reported to the user, if anywhere.
    pub notification: Option<Endpoint>,
    /// Where each processed event is recorded for the audit log, if anywhere.
    pub webhook_log: Option<Endpoint>,
    /// How long in-flight work may take to finish on SIGTERM.
    pub shutdown_timeout: Duration,
    /// `LOG_LEVEL`: a level or a filter such as `info,webhook=debug`.
    pub log_level: String,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Where bookings and reports are kept (`DATA_DIR`, or `LEDGER_URL`).
    pub ledger: LedgerConfig,
    /// How long a delivery waits for the manager before it is answered 202.
    pub processing_budget: Duration,
    /// Calls made for one operation when the manager's errors are transient.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each attempt (plus jitter).
    pub retry_backoff: Duration,
    /// How long after a booking's end it is released when no END or DELETED came.
    pub release_grace: Duration,
    /// How old (or how far ahead) a signed `timestamp` may be, the body's or, with
    /// `SIGNATURE_PRESET=standard-webhooks`, `webhook-timestamp`; `None` turns the check off
    /// (refused with that preset).
    pub replay_tolerance: Option<Duration>,
    /// How long a settled booking is kept, with its history and reports, before it is
    /// deleted; `None` keeps every booking for good.
    pub ledger_retention: Option<Duration>,
    /// The bearer token of `GET /bookings/{id}`; `None` turns the endpoint off.
    pub admin_token: Option<SecretString>,
    /// `POST /waldur`; `None` (no `WALDUR_TOKEN` nor `WALDUR_ALLOWED_CIDRS`) turns it off.
    pub waldur: Option<waldur::Settings>,
    /// `SEAL_CREDENTIALS`: whether the secrets managers hand out are sealed to the user's
    /// SSH key (decision 18).
    pub seal_credentials: Seal,
}

/// Where the ledger lives.
#[derive(Debug, Clone)]
pub enum LedgerConfig {
    /// `DATA_DIR/ledger.db`, for one replica.
    /// `DATA_DIR/ledger.db`, for one replica.
    Embedded {
        /// `DATA_DIR`.
        dir: PathBuf,
    },
    /// A PostgreSQL database, for any number of replicas.
    /// A PostgreSQL database, for any number of replicas.
    Postgres {
        /// `LEDGER_URL`.
        url: SecretString,
    },
}

/// A report-back endpoint of the reservation system.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where reports are posted.
    pub url: reqwest::Url,
    /// How long one report may take.
    pub timeout: Duration,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// The variables as envy reads them, before they are checked.
#[derive(Deserialize)]
struct Raw {
    #[serde(default = "default_host")]
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    resource_type: Option<String>,
    webhook_secret: Option<SecretString>,
    webhook_previous_secrets: Option<SecretString>,
    webhook_secret_encoding: Option<String>,
    signature_preset: Option<String>,
    #[serde(default)]
    allow_unsigned: bool,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_concurrent_requests: Option<String>,
    max_connections: Option<String>,
    notification_endpoint: Option<String>,
    #[serde(default)]
    allow_insecure_reports: bool,
    notification_timeout: Option<String>,
    webhook_log_endpoint: Option<String>,
    webhook_log_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    #[serde(default = "default_log_level")]
    log_level: String,
    #[serde(default = "default_log_format")]
    log_format: String,
    data_dir: Option<String>,
    ledger_url: Option<SecretString>,
    processing_budget: Option<String>,
    max_attempts: Option<String>,
    retry_backoff: Option<String>,
    release_grace: Option<String>,
    replay_tolerance: Option<String>,
    ledger_retention: Option<String>,
    admin_token: Option<SecretString>,
    waldur_token: Option<SecretString>,
    waldur_allowed_cidrs: Option<String>,
    waldur_trusted_proxies: Option<String>,
    waldur_configure_events: Option<String>,
    waldur_release_events: Option<String>,
    waldur_resource_type: Option<String>,
    seal_credentials: Option<String>,
}

fn default_host() -> String {
    "0.0.0.0".into()
}
fn default_port() -> u16 {
    8080
}
/// The senders' bodies are 1–3 KB; every request in flight may hold this much.
fn default_max_body() -> usize {
    64 * 1024
}
fn default_log_level() -> String {
    "info".into()
}
fn default_log_format() -> String {
    "json".into()
}

/// The shortest signing key accepted: HMAC-SHA256's own size, and what the back end issues.
pub const MIN_SECRET_BYTES: usize = 32;

/// The shortest key a `whsec_` secret may decode to: the Standard Webhooks minimum (192
/// bits), and what the common senders issue (24 random bytes), so their secrets work as
/// given.
pub const MIN_WHSEC_BYTES: usize = 24;

/// Whether a secret is text from an example or a document rather than a secret: the
/// `.env.example` value, a `<...>` stand-in, or a word such as `secret`.
pub fn is_placeholder(secret: &str) -> bool {
    const WORDS: [&str; 12] = [
        "change-me",
        "changeme",
        "change_me",
        "replace-me",
        "replaceme",
        "secret",
        "example",
        "password",
        "webhook-secret",
        "your-secret",
        "test",
        "todo",
    ];
    let text = secret.trim().to_ascii_lowercase();
    let stand_in = text.starts_with('<') && text.ends_with('>');
    let one_char = text.chars().all(|c| text.starts_with(c));
    text.is_empty()
        || stand_in
        || one_char
        || WORDS.contains(&text.as_str())
        || ["change-me", "changeme", "change_me", "replace-me"]
            .iter()
            .any(|w| text.contains(w))
}

/// Time a report-back request may take, unless configured.
const DEFAULT_REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time in-flight work gets on shutdown; Kubernetes' default grace period is 30 s.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);
/// How long the sender waits for a reply; the processing budget must stay below it.
pub const SENDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait for the manager before answering 202: none. The event processor sends the START and
/// END of every webhook of the installation one at a time, without a timeout, so a reply
/// that waits for the manager delays everyone's deliveries (decision 10).
const DEFAULT_PROCESSING_BUDGET: Duration = Duration::ZERO;
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Above the sender's timeout: a connection waiting for its reply sends nothing meanwhile.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// With the default `MAX_BODY_BYTES`, at most 16 MiB of bodies held at once.
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;
/// Each open connection holds buffers of a few KiB, and its headers up to 16 KiB.
const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// END comes up to about a minute after the booking's end; ten minutes leaves room.
const DEFAULT_RELEASE_GRACE: Duration = Duration::from_secs(600);
/// The Standard Webhooks convention; START is sent a few minutes before the booking.
const DEFAULT_REPLAY_TOLERANCE: Duration = Duration::from_secs(300);
/// Long enough to answer a user's question about last quarter's booking.
const DEFAULT_LEDGER_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

impl Config {
    /// Reads the process environment, for `service`.
    pub fn from_env(service: Service) -> Result<Self, ConfigError> {
        Self::from_vars_for(service, std::env::vars())
    }

    /// Reads settings from `(name, value)` pairs as [`Service::CORE`] (so `RESOURCE_TYPE`
    /// must be among them); tests use this instead of the process environment.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self::from_vars_for(Service::CORE, vars)
    }

    /// Reads settings from `(name, value)` pairs, for `service`.
    pub fn from_vars_for<K, V>(
        service: Service,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = read_file_variables(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        )?;
        let raw: Raw = settings_from_vars(vars)?;
        raw.check(service)
    }

    /// Whether a resource type's display name is the one this webhook manages
    /// (ignoring case and surrounding spaces).
    pub fn handles(&self, resource_type: &str) -> bool {
        crate::contract::same_name(&self.resource_type, resource_type)
    }
}

impl Raw {
    fn check(mut self, service: Service) -> Result<Config, ConfigError> {
        let ip: IpAddr = self
            .host
            .parse()
            .map_err(|_| ConfigError(format!("HOST: {:?} is not an IP address", self.host)))?;
        let mut keys = self.keys()?;
        let resource_type = self
            .resource_type
            .unwrap_or_else(|| service.resource_type.to_owned())
            .trim()
            .to_owned();
        if resource_type.is_empty() {
            return Err(ConfigError(
                "RESOURCE_TYPE is empty or not set: set it to the resource type's name in the reservation system, e.g. \"Switch Port\"".into(),
            ));
        }
        let waldur = waldur::Settings::check(
            waldur::RawSettings {
                token: self.waldur_token.take(),
                allowed_cidrs: self.waldur_allowed_cidrs.take(),
                trusted_proxies: self.waldur_trusted_proxies.take(),
                configure_events: self.waldur_configure_events.take(),
                release_events: self.waldur_release_events.take(),
                resource_type: self.waldur_resource_type.take(),
            },
            &resource_type,
        )
        .map_err(ConfigError)?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError("MAX_BODY_BYTES must be at least 1".into()));
        }
        let idle_timeout =
            duration("IDLE_TIMEOUT", self.idle_timeout.take())?.unwrap_or(DEFAULT_IDLE_TIMEOUT);
        if idle_timeout < SENDER_TIMEOUT {
            return Err(ConfigError(format!(
                "IDLE_TIMEOUT: {} is below the sender's {}s timeout; a connection waiting for \
                 its reply would be closed",
                humantime::format_duration(idle_timeout),
                SENDER_TIMEOUT.as_secs()
            )));
        }
        let max_concurrent_requests = count(
            "MAX_CONCURRENT_REQUESTS",
            self.max_concurrent_requests.take(),
        )?
        .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS);
        let max_connections = count("MAX_CONNECTIONS", self.max_connections.take())?
            .unwrap_or(DEFAULT_MAX_CONNECTIONS.max(max_concurrent_requests + 16));
        if max_connections <= max_concurrent_requests {
            return Err(ConfigError(format!(
                "MAX_CONNECTIONS ({max_connections}) must be above MAX_CONCURRENT_REQUESTS \
                 ({max_concurrent_requests}), so that /healthz and /readyz still get through"
            )));
        }
        let log_format = match self.log_format.to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(ConfigError(format!(
                    "LOG_FORMAT: {other:?} is not json or pretty"
                )));
            }
        };
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            ConfigError(format!(
                "LOG_LEVEL: {:?} is not a level or filter such as info or webhook=debug ({e})",
                self.log_level
            ))
        })?;
        let replay_tolerance = off_or("REPLAY_TOLERANCE", self.replay_tolerance.take())?
            .map(|d| d.unwrap_or(DEFAULT_REPLAY_TOLERANCE));
        let ledger_retention = off_or("LEDGER_RETENTION", self.ledger_retention.take())?
            .map(|d| d.unwrap_or(DEFAULT_LEDGER_RETENTION));
        if let Some(k) = keys.take() {
            keys = Some(timestamps_checked(k, replay_tolerance)?);
        }
        retention_keeps_replays_out(ledger_retention, replay_tolerance)?;
        Ok(Config {
            service,
            listen: SocketAddr::new(ip, self.port),
            resource_type,
            keys,
            max_body_bytes: self.max_body_bytes,
            header_timeout: duration("HEADER_TIMEOUT", self.header_timeout)?
                .unwrap_or(DEFAULT_HEADER_TIMEOUT),
            body_timeout: duration("BODY_TIMEOUT", self.body_timeout)?
                .unwrap_or(DEFAULT_BODY_TIMEOUT),
            idle_timeout,
            max_concurrent_requests,
            max_connections,
            notification: endpoint(
                "NOTIFICATION_ENDPOINT",
                self.notification_endpoint,
                "NOTIFICATION_TIMEOUT",
                self.notification_timeout,
                self.allow_insecure_reports,
            )?,
            webhook_log: endpoint(
                "WEBHOOK_LOG_ENDPOINT",
                self.webhook_log_endpoint,
                "WEBHOOK_LOG_TIMEOUT",
                self.webhook_log_timeout,
                self.allow_insecure_reports,
            )?,
            shutdown_timeout: duration("SHUTDOWN_TIMEOUT", self.shutdown_timeout)?
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            log_level: self.log_level,
            log_format,
            ledger: match self.ledger_url {
                Some(url) => {
                    crate::engine::ledger_tls::parse(url.expose_secret())
                        .map_err(|e| ConfigError(format!("LEDGER_URL: {e}")))?;
                    LedgerConfig::Postgres { url }
                }
                None => LedgerConfig::Embedded {
                    dir: PathBuf::from(self.data_dir.as_deref().unwrap_or("./data")),
                },
            },
            processing_budget: budget(self.processing_budget)?,
            max_attempts: match self.max_attempts {
                None => DEFAULT_MAX_ATTEMPTS,
                Some(text) => match text.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        return Err(ConfigError(format!(
                            "MAX_ATTEMPTS: {text:?} is not a whole number of at least 1"
                        )));
                    }
                },
            },
            retry_backoff: duration("RETRY_BACKOFF", self.retry_backoff)?
                .unwrap_or(DEFAULT_RETRY_BACKOFF),
            release_grace: duration("RELEASE_GRACE", self.release_grace)?
                .unwrap_or(DEFAULT_RELEASE_GRACE),
            replay_tolerance,
            ledger_retention,
            admin_token: self.admin_token,
            waldur,
            seal_credentials: seal_credentials(self.seal_credentials)?,
        })
    }

    /// The signing preset and whether secrets are Base64: `SIGNATURE_PRESET` decides when
    /// set (`WEBHOOK_SECRET_ENCODING` may then only agree with it, and must be unset with
    /// `standard-webhooks`, which decodes each `whsec_` secret and no other), else
    /// `WEBHOOK_SECRET_ENCODING` (default utf8) with the reservation system's headers.
    fn preset(&self) -> Result<(Preset, bool), ConfigError> {
        let preset = match &self.signature_preset {
            None => None,
            Some(text) => Some(Preset::parse(text).ok_or_else(|| {
                ConfigError(format!(
                    "SIGNATURE_PRESET: {text:?} is not reservation-system, github, agent-registry \
                     or standard-webhooks"
                ))
            })?),
        };
        let encoding = match self.webhook_secret_encoding.as_deref() {
            None => None,
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "utf8" | "utf-8" | "text" => Some(false),
                "base64" => Some(true),
                _ => {
                    return Err(ConfigError(format!(
                        "WEBHOOK_SECRET_ENCODING: {text:?} is not utf8 or base64"
                    )));
                }
            },
        };
        match (preset, encoding) {
            (Some(p @ Preset::StandardWebhooks), Some(base64)) => Err(ConfigError(format!(
                "WEBHOOK_SECRET_ENCODING={} cannot be used with SIGNATURE_PRESET={}, which \
                 decodes a whsec_ secret and takes any other as UTF-8 text: unset \
                 WEBHOOK_SECRET_ENCODING",
                if base64 { "base64" } else { "utf8" },
                p.as_str(),
            ))),
            (Some(p), Some(base64)) if base64 != p.decodes_secret() => Err(ConfigError(format!(
                "WEBHOOK_SECRET_ENCODING={} contradicts SIGNATURE_PRESET={}, which takes the \
                 secret as {}: unset WEBHOOK_SECRET_ENCODING",
                if base64 { "base64" } else { "utf8" },
                p.as_str(),
                if p.decodes_secret() {
                    "Base64"
                } else {
                    "UTF-8 text"
                },
            ))),
            (Some(p), _) => Ok((p, p.decodes_secret())),
            (None, base64) => Ok((Preset::ReservationSystem, base64.unwrap_or(false))),
        }
    }

    fn keys(&self) -> Result<Option<Keys>, ConfigError> {
        let (preset, decode_base64) = self.preset()?;
        let Some(primary) = &self.webhook_secret else {
            if self.allow_unsigned {
                return Ok(None);
            }
            return Err(ConfigError(
                "WEBHOOK_SECRET is not set: set it (or WEBHOOK_SECRET_FILE) to this webhook's secret \
                 in the reservation system, or set ALLOW_UNSIGNED=true to accept unsigned events \
                 (never in production)"
                    .into(),
            ));
        };
        let previous = self
            .webhook_previous_secrets
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_default();
        let secrets = std::iter::once(("WEBHOOK_SECRET", primary.expose_secret().trim())).chain(
            previous
                .split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| ("WEBHOOK_PREVIOUS_SECRETS", s)),
        );
        let mut keys = Vec::new();
        for (name, secret) in secrets {
            if secret.is_empty() {
                return Err(ConfigError(format!("{name} is empty")));
            }
            if is_placeholder(secret) {
                return Err(ConfigError(format!(
                    "{name} is a placeholder, not a secret: set it to this webhook's secret in \
                     the reservation system"
                )));
            }
            let whsec = preset == Preset::StandardWebhooks && secret.starts_with(WHSEC_PREFIX);
            let key = if preset == Preset::StandardWebhooks {
                standard_webhooks_key(secret).ok_or_else(|| {
                    ConfigError(format!(
                        "{name} starts with {WHSEC_PREFIX} but the rest is not Base64, which \
                         SIGNATURE_PRESET=standard-webhooks decodes: copy the whole secret \
                         the sender shows"
                    ))
                })?
            } else if decode_base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(secret)
                    .map_err(|_| {
                        ConfigError(format!(
                            "{name} is not Base64, but {} decodes the secret first",
                            match &self.signature_preset {
                                Some(_) => format!("SIGNATURE_PRESET={}", preset.as_str()),
                                None => "WEBHOOK_SECRET_ENCODING=base64".to_owned(),
                            }
                        ))
                    })?
            } else {
                secret.as_bytes().to_vec()
            };
            if whsec && key.len() < MIN_WHSEC_BYTES {
                return Err(ConfigError(format!(
                    "{name} is {} bytes once decoded: a {WHSEC_PREFIX} secret needs at least \
                     {MIN_WHSEC_BYTES} (the Standard Webhooks minimum)",
                    key.len(),
                )));
            }
            if !whsec && key.len() < MIN_SECRET_BYTES {
                return Err(ConfigError(format!(
                    "{name} is {} bytes{}: a secret needs at least {MIN_SECRET_BYTES} (the \
                     reservation system issues 32 random bytes as Base64)",
                    key.len(),
                    if decode_base64 { " once decoded" } else { "" },
                )));
            }
            keys.push(key);
        }
        Ok(Some(Keys::new(keys).with_preset(preset)))
    }
}

fn endpoint(
    name: &str,
    url: Option<String>,
    timeout_name: &str,
    timeout: Option<String>,
    allow_insecure: bool,
) -> Result<Option<Endpoint>, ConfigError> {
    let timeout = duration(timeout_name, timeout)?.unwrap_or(DEFAULT_REPORT_TIMEOUT);
    let Some(url) = url else { return Ok(None) };
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| ConfigError(format!("{name}: {url:?} is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError(format!(
            "{name}: {url:?} must be an http or https URL"
        )));
    }
    // Reports carry the user's results and the webhook's signature: in the clear, anyone
    // on the path reads them, so only loopback may be plain without saying so.
    if parsed.scheme() == "http" && !allow_insecure && !is_loopback(&parsed) {
        return Err(ConfigError(format!(
            "{name}: {url:?} is plain http: use https, or set ALLOW_INSECURE_REPORTS=true to \
             send reports unencrypted on a network you trust"
        )));
    }
    Ok(Some(Endpoint {
        url: parsed,
        timeout,
    }))
}

/// Whether a URL's host is this machine: 127.0.0.0/8, ::1 or localhost.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// `PROCESSING_BUDGET`: below the sender's timeout.
fn budget(value: Option<String>) -> Result<Duration, ConfigError> {
    // `0s` is the default spelled out: answer as soon as the booking is recorded.
    let zero = value
        .as_deref()
        .is_some_and(|v| matches!(v.trim(), "0" | "0s" | "0ms"));
    let budget = if zero {
        Duration::ZERO
    } else {
        duration("PROCESSING_BUDGET", value)?.unwrap_or(DEFAULT_PROCESSING_BUDGET)
    };
    if budget >= SENDER_TIMEOUT {
        return Err(ConfigError(format!(
            "PROCESSING_BUDGET: {} is not below the sender's {}s timeout; the sender would \
             record the delivery as failed",
            humantime::format_duration(budget),
            SENDER_TIMEOUT.as_secs()
        )));
    }
    Ok(budget)
}

/// `SEAL_CREDENTIALS`: off (the default), prefer or require.
fn seal_credentials(value: Option<String>) -> Result<Seal, ConfigError> {
    let Some(text) = value else {
        return Ok(Seal::default());
    };
    Seal::parse(&text).ok_or_else(|| {
        ConfigError(format!(
            "SEAL_CREDENTIALS: {text:?} is not {}",
            Seal::ACCEPTED
        ))
    })
}

/// Reads a whole number of at least 1.
fn count(name: &str, value: Option<String>) -> Result<Option<usize>, ConfigError> {
    let Some(text) = value else { return Ok(None) };
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(ConfigError(format!(
            "{name}: {text:?} is not a whole number of at least 1"
        ))),
    }
}

/// Reads a duration such as `5s`, `500ms` or `2m`; a bare number means seconds.
fn duration(name: &str, value: Option<String>) -> Result<Option<Duration>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let text = value.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(ConfigError(format!(
            "{name}: {value:?} is not a positive duration such as 5s, 500ms or 2m"
        ))),
    }
}

/// A duration that `off` turns off: `None` for `off`, else the duration if one is set.
fn off_or(name: &str, value: Option<String>) -> Result<Option<Option<Duration>>, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some("off") => Ok(None),
        _ => Ok(Some(duration(name, value)?)),
    }
}

/// Standard Webhooks signs `webhook-timestamp` so that it can be checked, and that check is
/// the preset's whole defence against a recorded delivery played back: its keys get the
/// tolerance, and turning it off stops start-up.
fn timestamps_checked(keys: Keys, tolerance: Option<Duration>) -> Result<Keys, ConfigError> {
    if keys.preset() != Preset::StandardWebhooks {
        return Ok(keys);
    }
    match tolerance {
        Some(tolerance) => Ok(keys.with_tolerance(tolerance)),
        None => Err(ConfigError(
            "REPLAY_TOLERANCE=off cannot be used with SIGNATURE_PRESET=standard-webhooks: the \
             webhook-timestamp check is that preset's only defence against a delivery played \
             back; set REPLAY_TOLERANCE to a duration (5m, the default, is the Standard Webhooks \
             one), or choose another preset"
                .into(),
        )),
    }
}

/// A booking deleted by retention is forgotten: its START, replayed, would configure it
/// again. Only the replay check keeps it out, by refusing a timestamp older than the
/// tolerance, so retention needs that check, and must keep bookings for longer than it.
fn retention_keeps_replays_out(
    retention: Option<Duration>,
    tolerance: Option<Duration>,
) -> Result<(), ConfigError> {
    let Some(retention) = retention else {
        return Ok(());
    };
    let shown = in_days(retention);
    match tolerance {
        None => Err(ConfigError(format!(
            "LEDGER_RETENTION ({shown}) needs REPLAY_TOLERANCE: with the replay check off, \
             the START of a booking that retention deleted, sent again, would configure it \
             again; set LEDGER_RETENTION=off as well, or turn REPLAY_TOLERANCE back on"
        ))),
        Some(tolerance) if retention <= tolerance => Err(ConfigError(format!(
            "LEDGER_RETENTION ({shown}) must be longer than REPLAY_TOLERANCE ({}): a \
             booking must outlive the time its events are accepted",
            humantime::format_duration(tolerance)
        ))),
        Some(_) => Ok(()),
    }
}

/// `d` in whole days when it is some (humantime would say `2months 29days 2h 52m 48s` for
/// 90 days), else as humantime writes it.
fn in_days(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    match d.as_secs() {
        secs if secs >= DAY && secs % DAY == 0 && d.subsec_nanos() == 0 => {
            format!("{}d", secs / DAY)
        }
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Replaces `NAME_FILE=path` with `NAME=<contents of path>` for secret variables.
fn read_file_variables(
    mut vars: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    for name in FILE_VARIABLES {
        let file_var = format!("{name}_FILE");
        let Some(path) = vars.remove(&file_var) else {
            continue;
        };
        if vars.contains_key(name) {
            return Err(ConfigError(format!(
                "both {name} and {file_var} are set: set only one"
            )));
        }
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("{file_var}: cannot read {path:?}: {e}")))?;
        let contents = contents.trim_end_matches(['\r', '\n']).to_owned();
        if contents.is_empty() {
            return Err(ConfigError(format!("{file_var}: {path:?} is empty")));
        }
        vars.insert(name.to_owned(), contents);
    }
    Ok(vars)
}

/// Reads settings of your own, such as your manager's, from the process environment into
/// `T` (field `pg_admin_url` ← variable `PG_ADMIN_URL`); errors name the variable.
pub fn settings_from_env<T: serde::de::DeserializeOwned>() -> Result<T, ConfigError> {
    settings_from_vars(std::env::vars())
}

/// [`settings_from_env`] from `(name, value)` pairs, for tests.
pub fn settings_from_vars<T: serde::de::DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    // envy names a missing field in lower case; the variable is upper case.
    envy::from_iter(vars).map_err(|e| {
        ConfigError(match e {
            envy::Error::MissingValue(field) => format!("{} is not set", field.to_uppercase()),
            envy::Error::Custom(msg) => msg,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A webhook generated for switch ports.
    const SWITCH_PORTS: Service = Service {
        name: "switch-port-hook",
        version: "1.2.3",
        resource_type: "Switch Port\n",
    };

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars_for(SWITCH_PORTS, vars.iter().copied())
    }

    #[test]
    fn the_resource_type_defaults_to_the_services_and_the_core_has_none() {
        let secret = ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long");
        assert_eq!(config(&[secret]).unwrap().service, SWITCH_PORTS);
        let err = Config::from_vars([secret]).unwrap_err().to_string();
        assert!(err.contains("RESOURCE_TYPE is empty"), "{err}");
        let set = Config::from_vars([secret, ("RESOURCE_TYPE", "Database")]).unwrap();
        assert_eq!(set.resource_type, "Database");
    }

    #[test]
    fn defaults_apply_when_only_the_secret_is_set() {
        let c = config(&[("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long")]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.resource_type, "Switch Port");
        assert_eq!(c.max_body_bytes, 64 << 10);
        assert_eq!(c.max_concurrent_requests, 256);
        assert_eq!(c.max_connections, 512);
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.notification.is_none());
        assert!(matches!(&c.ledger, LedgerConfig::Embedded { dir } if dir.ends_with("data")));
        assert_eq!(c.processing_budget, Duration::ZERO);
        assert_eq!(c.replay_tolerance, Some(Duration::from_secs(300)));
        assert_eq!(
            c.ledger_retention,
            Some(Duration::from_secs(90 * 24 * 3600))
        );
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn retention_is_refused_without_a_replay_check_that_outlasts_it() {
        let secret = ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long");
        let err = config(&[secret, ("REPLAY_TOLERANCE", "off")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LEDGER_RETENTION (90d) needs REPLAY_TOLERANCE"),
            "{err}"
        );
        assert!(err.contains("set LEDGER_RETENTION=off"), "{err}");
        let err = config(&[
            secret,
            ("REPLAY_TOLERANCE", "10m"),
            ("LEDGER_RETENTION", "5m"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("LEDGER_RETENTION (5m) must be longer than REPLAY_TOLERANCE (10m)"),
            "{err}"
        );
        let off = config(&[
            secret,
            ("REPLAY_TOLERANCE", "off"),
            ("LEDGER_RETENTION", "off"),
        ])
        .unwrap();
        assert_eq!((off.replay_tolerance, off.ledger_retention), (None, None));
        let set = config(&[secret, ("LEDGER_RETENTION", "30d")]).unwrap();
        assert_eq!(
            set.ledger_retention,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
    }

    #[test]
    fn a_ledger_url_selects_postgres_and_never_appears_in_debug_output() {
        let c = config(&[
            ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"),
            ("LEDGER_URL", "postgres://hook:hunter2@db:5432/hook"),
            ("REPLAY_TOLERANCE", "off"),
            ("LEDGER_RETENTION", "off"),
        ])
        .unwrap();
        assert!(matches!(c.ledger, LedgerConfig::Postgres { .. }));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.replay_tolerance, None);
    }

    #[test]
    fn without_a_secret_the_service_refuses_to_start_unless_unsigned_is_allowed() {
        let err = config(&[]).unwrap_err().to_string();
        assert!(err.contains("WEBHOOK_SECRET is not set"), "{err}");
        let c = config(&[("ALLOW_UNSIGNED", "true")]).unwrap();
        assert!(c.keys.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, expected) in [
            (vec![("PORT", "eighty")], "PORT"),
            (vec![("PORT", "70000")], "PORT"),
            (vec![("HOST", "localhost:1")], "HOST"),
            (vec![("RESOURCE_TYPE", "  ")], "RESOURCE_TYPE"),
            (
                vec![("NOTIFICATION_ENDPOINT", "not a url")],
                "NOTIFICATION_ENDPOINT",
            ),
            (
                vec![("WEBHOOK_LOG_ENDPOINT", "ftp://x/")],
                "WEBHOOK_LOG_ENDPOINT",
            ),
            (
                vec![("NOTIFICATION_ENDPOINT", "http://reservations.example.org/n")],
                "NOTIFICATION_ENDPOINT: \"http://reservations.example.org/n\" is plain http",
            ),
            (
                vec![("WEBHOOK_LOG_ENDPOINT", "http://10.0.0.1/log")],
                "ALLOW_INSECURE_REPORTS=true",
            ),
            (
                vec![("NOTIFICATION_TIMEOUT", "soon")],
                "NOTIFICATION_TIMEOUT",
            ),
            (vec![("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (vec![("LOG_LEVEL", "info,[")], "LOG_LEVEL"),
            (vec![("ALLOW_UNSIGNED", "yes please")], "ALLOW_UNSIGNED"),
            (vec![("MAX_BODY_BYTES", "0")], "MAX_BODY_BYTES"),
            (vec![("HEADER_TIMEOUT", "0s")], "HEADER_TIMEOUT"),
            (vec![("BODY_TIMEOUT", "slow")], "BODY_TIMEOUT"),
            (vec![("IDLE_TIMEOUT", "5s")], "IDLE_TIMEOUT"),
            (
                vec![("MAX_CONCURRENT_REQUESTS", "0")],
                "MAX_CONCURRENT_REQUESTS",
            ),
            (
                vec![("MAX_CONCURRENT_REQUESTS", "64"), ("MAX_CONNECTIONS", "64")],
                "MAX_CONNECTIONS",
            ),
            (vec![("PROCESSING_BUDGET", "10s")], "PROCESSING_BUDGET"),
            (vec![("PROCESSING_BUDGET", "soon")], "PROCESSING_BUDGET"),
            (vec![("MAX_ATTEMPTS", "0")], "MAX_ATTEMPTS"),
            (vec![("RETRY_BACKOFF", "-1s")], "RETRY_BACKOFF"),
            (vec![("RELEASE_GRACE", "later")], "RELEASE_GRACE"),
            (vec![("REPLAY_TOLERANCE", "none")], "REPLAY_TOLERANCE"),
            (
                vec![("LEDGER_URL", "postgres://h:notaport/x")],
                "LEDGER_URL",
            ),
            (
                vec![("ADMIN_TOKEN_FILE", "/nonexistent/token")],
                "ADMIN_TOKEN_FILE",
            ),
            (
                vec![("WEBHOOK_SECRET_ENCODING", "rot13")],
                "WEBHOOK_SECRET_ENCODING",
            ),
            (
                vec![("WEBHOOK_SECRET_ENCODING", "base64")],
                "WEBHOOK_SECRET",
            ),
            (vec![("SIGNATURE_PRESET", "gitlab")], "SIGNATURE_PRESET"),
            (
                vec![("WALDUR_ALLOWED_CIDRS", "10.0.0.0/33")],
                "WALDUR_ALLOWED_CIDRS",
            ),
            (
                vec![("WALDUR_TOKEN_FILE", "/nonexistent/token")],
                "WALDUR_TOKEN_FILE",
            ),
            (
                vec![
                    ("WALDUR_TOKEN", "t"),
                    ("WALDUR_ALLOWED_CIDRS", "10.0.0.0/8"),
                    ("WALDUR_TRUSTED_PROXIES", "proxy"),
                ],
                "WALDUR_TRUSTED_PROXIES: \"proxy\"",
            ),
            (
                vec![
                    ("WALDUR_TOKEN", "t"),
                    ("WALDUR_TRUSTED_PROXIES", "10.0.0.1"),
                ],
                "WALDUR_TRUSTED_PROXIES has no effect without WALDUR_ALLOWED_CIDRS",
            ),
            (
                vec![("WALDUR_TOKEN", "t"), ("WALDUR_RESOURCE_TYPE", " ")],
                "WALDUR_RESOURCE_TYPE",
            ),
            (
                vec![("WALDUR_CONFIGURE_EVENTS", "marketplace_order_approved")],
                "WALDUR_CONFIGURE_EVENTS is set but the Waldur endpoint is off",
            ),
        ] {
            let mut vars = vars;
            if !vars.iter().any(|(k, _)| k.starts_with("WEBHOOK_SECRET")) {
                vars.push(("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"));
            } else {
                vars.push(("WEBHOOK_SECRET", "not base64!"));
            }
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
    }

    #[test]
    fn sealing_credentials_is_off_unless_set_and_bad_values_name_the_accepted_ones() {
        let secret = ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long");
        assert_eq!(config(&[secret]).unwrap().seal_credentials, Seal::Off);
        for (value, seal) in [("prefer", Seal::Prefer), (" Require", Seal::Require)] {
            let c = config(&[secret, ("SEAL_CREDENTIALS", value)]).unwrap();
            assert_eq!(c.seal_credentials, seal);
        }
        let err = config(&[secret, ("SEAL_CREDENTIALS", "always")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SEAL_CREDENTIALS: \"always\" is not off, prefer or require"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_read_from_files_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file-and-at-least-32-bytes-long\n").unwrap();
        let c = config(&[("WEBHOOK_SECRET_FILE", path.to_str().unwrap())]).unwrap();
        let keys = c.keys.unwrap();
        assert_eq!(
            keys.sign(b"x"),
            Keys::new(vec![b"from-file-and-at-least-32-bytes-long".to_vec()]).sign(b"x")
        );
        assert!(!format!("{keys:?}").contains("from-file"));

        let err = config(&[("WEBHOOK_SECRET_FILE", "/nonexistent/secret")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WEBHOOK_SECRET_FILE"), "{err}");
    }

    #[test]
    fn base64_secrets_are_decoded_only_when_asked() {
        let c = config(&[
            (
                "WEBHOOK_SECRET",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("WEBHOOK_SECRET_ENCODING", "base64"),
        ])
        .unwrap();
        assert_eq!(
            c.keys.unwrap().sign(b"x"),
            Keys::new(vec![b"0123456789abcdef0123456789abcdef".to_vec()]).sign(b"x")
        );
    }

    #[test]
    fn standard_webhooks_decodes_whsec_secrets_and_needs_the_timestamp_check() {
        let preset = ("SIGNATURE_PRESET", "standard-webhooks");
        // 24 bytes once decoded, as the common senders issue them.
        let whsec = ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let raw = ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long");
        for secret in [whsec, raw] {
            let c = config(&[preset, secret]).unwrap();
            assert_eq!(c.keys.unwrap().preset(), Preset::StandardWebhooks);
            assert_eq!(c.replay_tolerance, Some(Duration::from_secs(300)));
        }
        let short = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 16])
        );
        let off = ("REPLAY_TOLERANCE", "off");
        let both_off = [preset, whsec, off, ("LEDGER_RETENTION", "off")];
        for (vars, expected) in [
            (
                vec![preset, ("WEBHOOK_SECRET", "whsec_not base64!")],
                "WEBHOOK_SECRET starts with whsec_ but the rest is not Base64",
            ),
            (
                vec![preset, whsec, ("WEBHOOK_PREVIOUS_SECRETS", "whsec_%%%%")],
                "WEBHOOK_PREVIOUS_SECRETS starts with whsec_ but the rest is not Base64",
            ),
            (
                vec![preset, ("WEBHOOK_SECRET", short.as_str())],
                "WEBHOOK_SECRET is 16 bytes once decoded: a whsec_ secret needs at least 24",
            ),
            (
                vec![preset, ("WEBHOOK_SECRET", "short-but-not-a-placeholder")],
                "WEBHOOK_SECRET is 27 bytes: a secret needs at least 32",
            ),
            (
                both_off.to_vec(),
                "REPLAY_TOLERANCE=off cannot be used with SIGNATURE_PRESET=standard-webhooks",
            ),
            (
                vec![preset, whsec, off],
                "REPLAY_TOLERANCE=off cannot be used with SIGNATURE_PRESET=standard-webhooks",
            ),
            (
                vec![preset, whsec, ("WEBHOOK_SECRET_ENCODING", "utf8")],
                "WEBHOOK_SECRET_ENCODING=utf8 cannot be used with SIGNATURE_PRESET=standard-webhooks",
            ),
        ] {
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
    }

    #[test]
    fn placeholders_and_short_secrets_are_refused_naming_the_variable() {
        let strong = "k9Vd3xQ2mT7pL0sR8wY4uB6nH1cJ5fZaE3gK7iO2qX0=";
        for (vars, expected) in [
            (
                vec![("WEBHOOK_SECRET", "change-me")],
                "WEBHOOK_SECRET is a placeholder",
            ),
            (
                vec![("WEBHOOK_SECRET", "Secret")],
                "WEBHOOK_SECRET is a placeholder",
            ),
            (
                vec![(
                    "WEBHOOK_SECRET",
                    "<the webhook secret set in the reservation system>",
                )],
                "WEBHOOK_SECRET is a placeholder",
            ),
            (
                vec![(
                    "WEBHOOK_SECRET",
                    "please-change-me-before-going-to-production",
                )],
                "WEBHOOK_SECRET is a placeholder",
            ),
            (
                vec![("WEBHOOK_SECRET", "short-but-not-a-placeholder")],
                "WEBHOOK_SECRET is 27 bytes: a secret needs at least 32",
            ),
            (
                vec![
                    ("WEBHOOK_SECRET", strong),
                    ("WEBHOOK_PREVIOUS_SECRETS", "an-old-and-short-one"),
                ],
                "WEBHOOK_PREVIOUS_SECRETS is 20 bytes",
            ),
            (
                // 32 characters, but 24 bytes once decoded.
                vec![
                    ("WEBHOOK_SECRET", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"),
                    ("WEBHOOK_SECRET_ENCODING", "base64"),
                ],
                "WEBHOOK_SECRET is 24 bytes once decoded",
            ),
        ] {
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
        assert!(config(&[("WEBHOOK_SECRET", strong)]).is_ok());
    }

    #[test]
    fn plain_http_reports_need_loopback_or_an_explicit_setting() {
        let secret = ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long");
        for url in [
            "http://127.0.0.1:9000/n",
            "http://127.8.0.1/n",
            "http://[::1]:9000/n",
            "http://localhost/n",
            "https://reservations.example.org/n",
        ] {
            let c = config(&[secret, ("NOTIFICATION_ENDPOINT", url)]).unwrap();
            assert!(c.notification.is_some(), "{url}");
        }
        let c = config(&[
            secret,
            ("NOTIFICATION_ENDPOINT", "http://backend.internal/n"),
            ("ALLOW_INSECURE_REPORTS", "true"),
        ])
        .unwrap();
        assert_eq!(c.notification.unwrap().url.scheme(), "http");
    }

    #[test]
    fn the_waldur_endpoint_is_on_with_a_token_from_a_file_or_an_allow_list() {
        let c = config(&[("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long")]).unwrap();
        assert!(c.waldur.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "waldur-token\n").unwrap();
        let c = config(&[
            ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"),
            ("WALDUR_TOKEN_FILE", path.to_str().unwrap()),
            ("WALDUR_RESOURCE_TYPE", "VLAN"),
        ])
        .unwrap();
        let w = c.waldur.unwrap();
        assert_eq!(w.token.unwrap().expose_secret(), "waldur-token");
        assert_eq!(w.resource_type, "VLAN");
        assert!(
            !format!(
                "{:?}",
                config(&[
                    ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"),
                    ("WALDUR_TOKEN", "hunter2")
                ])
                .unwrap()
            )
            .contains("hunter2")
        );
        let c = config(&[
            ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"),
            ("WALDUR_ALLOWED_CIDRS", "192.0.2.0/24"),
        ]);
        assert!(c.unwrap().waldur.unwrap().token.is_none());
    }
}
