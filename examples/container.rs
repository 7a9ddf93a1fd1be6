//! A container of one's own for the length of a booking, on Docker or Podman.
//!
//! When a booking starts, the user gets a running container from an image the operator
//! offers, with memory and CPU limits, the user's SSH public key in its environment, and
//! labels saying which booking and user it belongs to; when the booking ends, the
//! container is stopped and removed with its anonymous volumes. It speaks the Docker
//! Engine API, so it works with dockerd and with Podman's Docker-compatible service
//! (`podman system service`), and only uses calls both answer.
//!
//! The container's name comes from the booking id (`booking-103`), so a repeated START
//! finds the container it made before instead of making a second one, and END finds it
//! after a restart of this service.
//!
//! # Custom parameters (all optional)
//! | name | example | meaning |
//! |---|---|---|
//! | `image` | `localhost/tiny:latest` | one of `CONTAINER_IMAGES`; default `CONTAINER_DEFAULT_IMAGE` |
//! | `memory` | `256m`, `1g` | memory limit, at most `CONTAINER_MAX_MEMORY` (the default) |
//! | `cpus` | `0.5` | CPU limit, at most `CONTAINER_MAX_CPUS` (the default) |
//!
//! # Settings
//! | variable | default | meaning |
//! |---|---|---|
//! | `DOCKER_HOST` | the local Docker socket | the engine, `unix:///path/to.sock` or `tcp://host:port` |
//! | `CONTAINER_IMAGES` | required | the images users may choose, comma-separated; they must be on the engine already (none is pulled) |
//! | `CONTAINER_DEFAULT_IMAGE` | the first of `CONTAINER_IMAGES` | the image when the booking names none |
//! | `CONTAINER_MAX_MEMORY` | `512m` | largest memory limit a user may ask for |
//! | `CONTAINER_MAX_CPUS` | `1` | largest CPU limit a user may ask for |
//! | `CONTAINER_NETWORK` | the engine's default | network mode, e.g. `bridge`, `none` or a network's name |
//! | `CONTAINER_STOP_TIMEOUT` | `5s` | how long a container may take to stop before it is killed |
//!
//! # What the user receives
//! `Your container booking-103 is running until 2026-11-23 12:00 UTC: image
//! localhost/tiny:latest, memory 256 MiB, CPU limit 0.5. Address: 10.88.0.2. Your SSH
//! public key is in its SSH_PUBLIC_KEY variable.`
//!
//! Run it with `cargo run --example container --features docker`.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;
use webhook::manager::{ManagerError, Outcome, ResourceManager};
use webhook::reservation::{Reservation, User};

/// Label holding the booking id, which `release` checks before removing anything.
pub const BOOKING_LABEL: &str = "reservation-webhook.booking";
/// Label holding the user id, so an operator sees whose container it is.
pub const USER_LABEL: &str = "reservation-webhook.user";
/// The variable carrying the user's SSH public key into the container.
pub const SSH_KEY_VARIABLE: &str = "SSH_PUBLIC_KEY";

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;
/// The smallest memory limit Docker accepts.
const MIN_MEMORY: i64 = 6 * MIB;
/// The smallest CPU limit Docker accepts (0.01 CPU), in billionths of a CPU.
const MIN_NANO_CPUS: i64 = 10_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    webhook::cli::run(Container::from_env()).await
}

/// What the manager needs to know, read once at start-up.
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// The engine's address; `None` takes bollard's default (`DOCKER_HOST`, else the
    /// local socket).
    pub docker_host: Option<String>,
    /// The images users may choose.
    pub images: Vec<String>,
    /// The image when the booking names none; one of `images`.
    pub default_image: String,
    /// Largest memory limit, in bytes; also the default.
    pub max_memory: i64,
    /// Largest CPU limit, in CPUs; also the default.
    pub max_cpus: f64,
    /// The network mode; `None` leaves the engine's default.
    pub network: Option<String>,
    /// How long a container may take to stop before it is killed.
    pub stop_timeout: Duration,
}

/// The variables as envy reads them, before they are checked.
#[derive(Deserialize)]
struct RawSettings {
    docker_host: Option<String>,
    container_images: Option<String>,
    container_default_image: Option<String>,
    container_max_memory: Option<String>,
    container_max_cpus: Option<String>,
    container_network: Option<String>,
    container_stop_timeout: Option<String>,
}

impl ContainerSettings {
    /// Reads the settings from `(name, value)` pairs; an error names the variable.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let raw: RawSettings = webhook::config::settings_from_vars(vars)?;
        let images: Vec<String> = raw
            .container_images
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(String::from)
            .collect();
        ensure!(
            !images.is_empty(),
            "CONTAINER_IMAGES is not set: list the images users may choose, comma-separated"
        );
        let default_image = raw.container_default_image.unwrap_or(images[0].clone());
        ensure!(
            images.contains(&default_image),
            "CONTAINER_DEFAULT_IMAGE: {default_image:?} is not one of CONTAINER_IMAGES"
        );
        let max_memory = match raw.container_max_memory.as_deref() {
            None => 512 * MIB,
            Some(text) => parse_memory(text)
                .filter(|m| *m >= MIN_MEMORY)
                .with_context(|| {
                    format!("CONTAINER_MAX_MEMORY: {text:?} is not a size from 6m, such as 2g")
                })?,
        };
        let max_cpus = match raw.container_max_cpus.as_deref() {
            None => 1.0,
            Some(text) => parse_nano_cpus(text)
                .filter(|n| *n >= MIN_NANO_CPUS)
                .map(|n| n as f64 / 1e9)
                .with_context(|| {
                    format!("CONTAINER_MAX_CPUS: {text:?} is not a number from 0.01, such as 2")
                })?,
        };
        let stop_timeout = match raw.container_stop_timeout.as_deref() {
            None => Duration::from_secs(5),
            Some(text) => humantime::parse_duration(text).with_context(|| {
                format!("CONTAINER_STOP_TIMEOUT: {text:?} is not a duration such as 5s")
            })?,
        };
        Ok(Self {
            docker_host: raw.docker_host,
            images,
            default_image,
            max_memory,
            max_cpus,
            network: raw.container_network,
            stop_timeout,
        })
    }
}

/// A memory size: bytes, or a whole number with `k`, `m` or `g` (powers of 1024, as
/// `docker run --memory` reads them; `mb` and `mib` are accepted too).
fn parse_memory(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit_size = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        _ => return None,
    };
    number.parse::<i64>().ok()?.checked_mul(unit_size)
}

/// A number of CPUs such as `2` or `0.5`, in billionths of a CPU as the engine takes it.
fn parse_nano_cpus(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let cpus: f64 = text.parse().ok()?;
    (cpus.is_finite() && cpus < 1e6).then(|| (cpus * 1e9).round() as i64)
}

/// The container's name for a booking: `booking-<id>` when the id is a valid name, else
/// its valid characters and a hash of the whole id, so any id gives a distinct name that
/// the engine accepts (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn container_name(booking: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !booking.is_empty() && booking.len() <= 64 && booking.chars().all(valid) {
        return format!("booking-{booking}");
    }
    let kept: String = booking.chars().filter(|c| valid(*c)).take(32).collect();
    let hash = hex::encode(&Sha256::digest(booking.as_bytes())[..4]);
    format!("booking-{kept}-{hash}")
}

/// What a booking asks for, checked against what is offered.
struct Request {
    image: String,
    memory: i64,
    nano_cpus: i64,
    ssh_key: Option<String>,
}

/// Gives each booking a container on a Docker-compatible engine.
pub struct Container {
    settings: ContainerSettings,
    /// The engine client, made on first use with the API version agreed with the
    /// engine, so the service starts (and `/readyz` says why not) while it is down.
    docker: OnceCell<Docker>,
}

impl Container {
    /// Builds the manager from the process environment.
    pub async fn from_env() -> anyhow::Result<Self> {
        Self::new(ContainerSettings::from_vars(std::env::vars())?)
    }

    /// Builds the manager from settings; does not contact the engine yet.
    pub fn new(settings: ContainerSettings) -> anyhow::Result<Self> {
        if let Some(host) = &settings.docker_host {
            let schemes = ["unix://", "tcp://", "http://"];
            ensure!(
                schemes.iter().any(|s| host.starts_with(s)),
                "DOCKER_HOST: {host:?} is not unix:///path/to.sock or tcp://host:port"
            );
        }
        if settings.images.is_empty() || !settings.images.contains(&settings.default_image) {
            bail!("the default image must be one of the offered images");
        }
        Ok(Self {
            settings,
            docker: OnceCell::new(),
        })
    }

    /// The engine client, speaking the newest API version both sides know: bollard's
    /// own is newer than what Podman (1.41) and older dockerd answer to.
    async fn engine(&self) -> Result<&Docker, ManagerError> {
        self.docker
            .get_or_try_init(|| async {
                let docker = match &self.settings.docker_host {
                    Some(host) => Docker::connect_with_host(host)?,
                    None => Docker::connect_with_defaults()?,
                };
                docker.negotiate_version().await
            })
            .await
            .map_err(|e| engine_error("answer", e))
    }

    /// The booking's custom parameters and SSH key, checked.
    fn request(&self, reservation: &Reservation) -> Result<Request, ManagerError> {
        let s = &self.settings;
        let parameters = &reservation.parameters;
        let image = match parameters.get("image") {
            None => s.default_image.clone(),
            Some(image) if s.images.iter().any(|i| *i == image) => image.into_owned(),
            Some(image) => {
                return Err(ManagerError::invalid_parameter(
                    "image",
                    format!(
                        "{} is not offered; choose one of: {}",
                        quoted(&image),
                        s.images.join(", ")
                    ),
                ));
            }
        };
        let max_nano_cpus = (s.max_cpus * 1e9).round() as i64;
        let memory = limit(
            reservation,
            ("memory", "a size such as 256m or 1g"),
            parse_memory,
            MIN_MEMORY..=s.max_memory,
            &format!("from 6m to {}", size(s.max_memory)),
        )?;
        let nano_cpus = limit(
            reservation,
            ("cpus", "a number of CPUs such as 0.5"),
            parse_nano_cpus,
            MIN_NANO_CPUS..=max_nano_cpus,
            &format!("from 0.01 to {}", s.max_cpus),
        )?;
        Ok(Request {
            image,
            memory: memory.unwrap_or(s.max_memory),
            nano_cpus: nano_cpus.unwrap_or(max_nano_cpus),
            ssh_key: ssh_key(&reservation.user)?,
        })
    }

    /// The booking's container, if there is one; an error if the name is taken by a
    /// container that is not this booking's.
    async fn find(
        &self,
        name: &str,
        booking: &str,
    ) -> Result<Option<ContainerInspectResponse>, ManagerError> {
        match self.engine().await?.inspect_container(name, None).await {
            Ok(found) => {
                let labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
                if labels
                    .and_then(|l| l.get(BOOKING_LABEL))
                    .map(String::as_str)
                    != Some(booking)
                {
                    return Err(ManagerError::permanent(format!(
                        "a container named {name} exists that is not this booking's; \
                         an operator must remove it"
                    )));
                }
                Ok(Some(found))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine_error("find the container", e)),
        }
    }

    /// Creates the booking's container (not started).
    async fn create(
        &self,
        engine: &Docker,
        name: &str,
        reservation: &Reservation,
        request: &Request,
    ) -> Result<(), EngineError> {
        let labels = HashMap::from([
            (BOOKING_LABEL.to_owned(), reservation.event_id.clone()),
            (USER_LABEL.to_owned(), reservation.user.id.clone()),
        ]);
        let env = request
            .ssh_key
            .as_ref()
            .map(|key| vec![format!("{SSH_KEY_VARIABLE}={key}")]);
        let body = ContainerCreateBody {
            image: Some(request.image.clone()),
            hostname: Some(name.chars().take(63).collect()),
            labels: Some(labels),
            env,
            host_config: Some(HostConfig {
                memory: Some(request.memory),
                // No swap beyond the memory limit, so the limit means what it says.
                memory_swap: Some(request.memory),
                nano_cpus: Some(request.nano_cpus),
                network_mode: self.settings.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        engine.create_container(Some(options), body).await.map(drop)
    }
}

#[async_trait]
impl ResourceManager for Container {
    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let request = self.request(reservation)?;
        let name = container_name(&reservation.event_id);
        let booking = &reservation.event_id;
        let engine = self.engine().await?;
        let running = match self.find(&name, booking).await? {
            Some(container) => is_running(&container),
            None => match self.create(engine, &name, reservation, &request).await {
                Ok(()) => false,
                // A concurrent configure may have made it first (dockerd answers 409,
                // Podman 500): what counts is whether the booking's container exists now.
                Err(e) => match self.find(&name, booking).await? {
                    Some(container) => is_running(&container),
                    None => return Err(engine_error("create the container", e)),
                },
            },
        };
        if !running {
            engine
                .start_container(&name, None)
                .await
                .map_err(|e| engine_error("start the container", e))?;
        }
        let container = self.find(&name, booking).await?.ok_or_else(|| {
            ManagerError::transient(format!("container {name} vanished while starting"))
        })?;
        Ok(Outcome::new(message(&name, reservation, &container)))
    }

    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id))]
    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let name = container_name(&reservation.event_id);
        let Some(container) = self.find(&name, &reservation.event_id).await? else {
            return Ok(Outcome::new(format!("Your container {name} is gone.")));
        };
        // By id from here on: the name could be reused as soon as it is removed.
        let id = container.id.unwrap_or(name.clone());
        let engine = self.engine().await?;
        let seconds = i32::try_from(self.settings.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let stop = StopContainerOptionsBuilder::new().t(seconds).build();
        match engine.stop_container(&id, Some(stop)).await {
            Err(e) if status(&e) != Some(404) => return Err(engine_error("stop the container", e)),
            _ => {}
        }
        let remove = RemoveContainerOptionsBuilder::new()
            .v(true)
            .force(true)
            .build();
        match engine.remove_container(&id, Some(remove)).await {
            Err(e) if status(&e) != Some(404) => Err(engine_error("remove the container", e)),
            _ => Ok(Outcome::new(format!(
                "Your container {name} has been removed."
            ))),
        }
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        self.engine()
            .await?
            .ping()
            .await
            .map(drop)
            .map_err(|e| engine_error("answer", e))
    }
}

/// Whether the engine reports the container running.
fn is_running(container: &ContainerInspectResponse) -> bool {
    container
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false)
}

/// What the user is told: where the container is and what it has.
fn message(name: &str, reservation: &Reservation, container: &ContainerInspectResponse) -> String {
    let host = container.host_config.as_ref();
    let memory = host.and_then(|h| h.memory).unwrap_or_default();
    let cpus = host.and_then(|h| h.nano_cpus).unwrap_or_default() as f64 / 1e9;
    let image = container
        .config
        .as_ref()
        .and_then(|c| c.image.as_deref())
        .unwrap_or("?");
    let addresses: Vec<&str> = container
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .into_iter()
        .flat_map(|networks| networks.values())
        .filter_map(|n| n.ip_address.as_deref())
        .filter(|ip| !ip.is_empty())
        .collect();
    let address = if addresses.is_empty() {
        "It has no network address of its own.".to_owned()
    } else {
        format!("Address: {}.", addresses.join(", "))
    };
    let key_set = format!("{SSH_KEY_VARIABLE}=");
    let has_key = container
        .config
        .as_ref()
        .and_then(|c| c.env.as_ref())
        .is_some_and(|env| env.iter().any(|v| v.starts_with(&key_set)));
    let key = if has_key {
        format!("Your SSH public key is in its {SSH_KEY_VARIABLE} variable.")
    } else {
        "Add an SSH public key to your profile to log in with it.".to_owned()
    };
    format!(
        "Your container {name} is running until {}: image {image}, memory {}, CPU limit \
         {cpus}. {address} {key}",
        reservation.end.format("%Y-%m-%d %H:%M UTC"),
        size(memory),
    )
}

/// A limit the booking may set in custom parameter `name`: `None` when it does not,
/// else `what` (as `parse` reads it) within `allowed`, which `offer` puts in words.
fn limit(
    reservation: &Reservation,
    (name, what): (&str, &str),
    parse: fn(&str) -> Option<i64>,
    allowed: RangeInclusive<i64>,
    offer: &str,
) -> Result<Option<i64>, ManagerError> {
    let Some(text) = reservation.parameters.get(name) else {
        return Ok(None);
    };
    let problem = match parse(&text) {
        Some(value) if allowed.contains(&value) => return Ok(Some(value)),
        Some(_) => format!("{} is outside what is offered: {offer}", quoted(&text)),
        None => format!("{} is not {what} ({offer})", quoted(&text)),
    };
    Err(ManagerError::invalid_parameter(name, problem))
}

/// The user's SSH public key, if they have one, as one OpenSSH `authorized_keys` line.
fn ssh_key(user: &User) -> Result<Option<String>, ManagerError> {
    let Some(key) = user.ssh_public_key.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if key.is_empty() {
        return Ok(None);
    }
    let mut fields = key.split(' ');
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next().unwrap_or_default();
    let known_kind = ["ssh-", "ecdsa-sha2-", "sk-"]
        .iter()
        .any(|prefix| kind.starts_with(prefix));
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if key.len() > 16 * 1024
        || key.chars().any(char::is_control)
        || !known_kind
        || blob.is_empty()
        || !blob.chars().all(base64)
    {
        return Err(ManagerError::permanent(
            "your SSH public key is not one OpenSSH public key line (such as \"ssh-ed25519 AAAA... you@laptop\"); correct it in your profile",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// The HTTP status of an engine's refusal.
fn status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An engine failure in words for the user: its own message when it refused (4xx, not
/// worth retrying), a transient error when it failed or could not be reached.
fn engine_error(action: &str, e: EngineError) -> ManagerError {
    let error = match &e {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let message: String = message.chars().take(200).collect();
            if *status_code >= 500 {
                ManagerError::transient(format!(
                    "the container engine failed to {action}: {message}"
                ))
            } else {
                ManagerError::permanent(format!(
                    "the container engine refused to {action}: {message}"
                ))
            }
        }
        _ => ManagerError::transient(format!(
            "the container engine is not reachable (trying to {action})"
        )),
    };
    error.with_source(e)
}

/// A size in bytes, as a person reads it.
fn size(bytes: i64) -> String {
    match bytes {
        b if b % GIB == 0 => format!("{} GiB", b / GIB),
        b if b % MIB == 0 => format!("{} MiB", b / MIB),
        b => format!("{b} bytes"),
    }
}

/// A user-supplied value for a message: quoted, and cut so it cannot flood it.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(32).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}
