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
//! # Who it guards against
//! The user holds a shell in the container and chooses its custom parameters, so the
//! container is confined as far as the image allows:
//! - **Capabilities**: all are dropped, then `CONTAINER_CAPABILITIES` are given back. The
//!   image this is made for runs OpenSSH's `sshd` as root and writes `SSH_PUBLIC_KEY` into
//!   the user's `authorized_keys` before it starts; that needs `NET_BIND_SERVICE` (listen
//!   on port 22), `SETUID` and `SETGID` (become the user, and the privilege-separation
//!   user), `SYS_CHROOT` (privilege separation chroots into an empty directory), `CHOWN`
//!   (give the user their terminal and their `authorized_keys`), `KILL` (the root monitor
//!   signals processes running as the user) and `AUDIT_WRITE` (login records). An image
//!   that needs none sets `CONTAINER_CAPABILITIES=none`.
//! - **No new privileges**: setuid programs (`sudo`, `su`, `ping` on some images) do not
//!   raise privileges inside the container.
//! - **Processes**: at most `CONTAINER_PIDS_LIMIT`, so a fork bomb stops there instead of
//!   exhausting the host.
//! - **Network**: by default each booking gets a bridge network of its own
//!   (`booking-103`, labelled like the container), made when it starts and removed when it
//!   ends, and `internal` (no route beyond it) unless `CONTAINER_NETWORK_INTERNAL=false`.
//!   One booking's container cannot reach another's. The host itself is still reachable
//!   at the network's gateway address where the engine gives the bridge one (dockerd
//!   does): bind the host's services to addresses other than those bridges, or firewall
//!   them. dockerd keeps networks apart with its iptables rules, so do not run it with
//!   `--iptables=false` on a host that forwards packets. `CONTAINER_NETWORK=host` and
//!   `container:...` (and Podman's `ns:...`) would give the user the host's or another
//!   container's network and are refused at start-up.
//! - **Disk**: the writable layer is limited to `CONTAINER_DISK_LIMIT` (`storage_opt
//!   size=`) where the engine's storage driver can: overlay on XFS mounted with `pquota`,
//!   btrfs, zfs, devicemapper. Elsewhere (overlay on ext4, the usual case) the engine
//!   refuses the option: the container is then made without it, and the service logs once
//!   a warning naming the storage driver; bookings do not fail. Volumes the image declares
//!   are not limited either way.
//! - **Engine**: a `DOCKER_HOST` over TCP must be loopback or use TLS
//!   (`DOCKER_TLS_VERIFY`), else the service refuses to start, since whoever reaches the
//!   engine's port controls the host. The engine's own error text is logged, never shown to
//!   the user.
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
//! | `DOCKER_HOST` | the local Docker socket | the engine, `unix:///path/to.sock` or `tcp://host:port` (TCP: loopback, or with `DOCKER_TLS_VERIFY`) |
//! | `DOCKER_TLS_VERIFY` | unset | any value: speak TLS to a `tcp://` engine, verifying it and presenting a client certificate, as the `docker` command does |
//! | `DOCKER_CERT_PATH` | `~/.docker` | where `ca.pem`, `cert.pem` and `key.pem` are, with `DOCKER_TLS_VERIFY` |
//! | `CONTAINER_IMAGES` | required | the images users may choose, comma-separated; they must be on the engine already (none is pulled) |
//! | `CONTAINER_DEFAULT_IMAGE` | the first of `CONTAINER_IMAGES` | the image when the booking names none |
//! | `CONTAINER_MAX_MEMORY` | `512m` | largest memory limit a user may ask for |
//! | `CONTAINER_MAX_CPUS` | `1` | largest CPU limit a user may ask for |
//! | `CONTAINER_NETWORK` | `booking` | `booking`: a network of its own for each booking; `none`: no network; else the name of a network all bookings share (they can reach each other on it); `host` and `container:...` are refused |
//! | `CONTAINER_NETWORK_INTERNAL` | `true` | whether a booking's own network has no route beyond it |
//! | `CONTAINER_CAPABILITIES` | `CHOWN,SETUID,SETGID,SYS_CHROOT,NET_BIND_SERVICE,KILL,AUDIT_WRITE` | the capabilities given back after all are dropped, comma-separated, or `none` |
//! | `CONTAINER_PIDS_LIMIT` | `256` | most processes (and threads) a container may have at once |
//! | `CONTAINER_DISK_LIMIT` | `10g` | largest writable layer, where the storage driver can limit it (see above); `none` asks for no limit |
//! | `CONTAINER_STOP_TIMEOUT` | `5s` | how long a container may take to stop before it is killed |
//!
//! # What the user receives
//! `Your container booking-103 is running until 2026-11-23 12:00 UTC: image
//! localhost/tiny:latest, memory 256 MiB, CPU limit 0.5. Address: 10.88.0.2. Your SSH
//! public key is in its SSH_PUBLIC_KEY variable.`
//!
//! Start a project with it: `cargo generate ... -d manager=container` makes this file its
//! `src/resource.rs`.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;
use webhook::contract::reservation::{Reservation, User};
use webhook::manager::{ManagerError, Outcome, ResourceManager};

#[path = "container/settings.rs"]
mod settings;
pub use settings::{CAPABILITIES, ContainerSettings, DEFAULT_CAPABILITIES, Network};
use settings::{
    GIB, MIB, MIN_MEMORY, MIN_NANO_CPUS, capability_name, parse_memory, parse_nano_cpus,
};

/// Label holding the booking id, which `release` checks before removing anything.
pub const BOOKING_LABEL: &str = "reservation-webhook.booking";
/// Label holding the user id, so an operator sees whose container it is.
pub const USER_LABEL: &str = "reservation-webhook.user";
/// The variable carrying the user's SSH public key into the container.
pub const SSH_KEY_VARIABLE: &str = "SSH_PUBLIC_KEY";
/// How long a call to an engine over TLS may take, in seconds (bollard's default).
const TLS_TIMEOUT: u64 = 120;

/// The manager `src/main.rs` runs when this example is the project's `src/resource.rs`.
pub type Manager = Container;

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
    /// Set once the engine refused a disk limit: its storage driver cannot enforce one.
    no_disk_limit: AtomicBool,
}

impl Container {
    /// Builds the manager from the process environment.
    pub async fn from_env() -> anyhow::Result<Self> {
        Self::new(ContainerSettings::from_vars(std::env::vars())?)
    }

    /// Builds the manager from settings, refusing unsafe ones; does not contact the
    /// engine yet.
    pub fn new(settings: ContainerSettings) -> anyhow::Result<Self> {
        settings.check()?;
        Ok(Self {
            settings,
            docker: OnceCell::new(),
            no_disk_limit: AtomicBool::new(false),
        })
    }

    /// The engine client, speaking the newest API version both sides know: bollard's
    /// own is newer than what Podman (1.41) and older dockerd answer to.
    async fn engine(&self) -> Result<&Docker, ManagerError> {
        self.docker
            .get_or_try_init(|| async {
                let docker = match (&self.settings.docker_host, &self.settings.tls_cert_path) {
                    (Some(host), Some(dir)) if !host.starts_with("unix://") => {
                        Docker::connect_with_ssl(
                            host,
                            &dir.join("key.pem"),
                            &dir.join("cert.pem"),
                            &dir.join("ca.pem"),
                            TLS_TIMEOUT,
                            bollard::API_DEFAULT_VERSION,
                        )?
                    }
                    (Some(host), _) => Docker::connect_with_host(host)?,
                    (None, _) => Docker::connect_with_local_defaults()?,
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

    /// Whether the booking's own network exists; an error if the name is taken by a
    /// network that is not this booking's.
    async fn find_network(&self, name: &str, booking: &str) -> Result<bool, ManagerError> {
        match self.engine().await?.inspect_network(name, None).await {
            Ok(found) => {
                let labels = found.labels.as_ref();
                if labels
                    .and_then(|l| l.get(BOOKING_LABEL))
                    .map(String::as_str)
                    != Some(booking)
                {
                    return Err(ManagerError::permanent(format!(
                        "a network named {name} exists that is not this booking's; \
                         an operator must remove it"
                    )));
                }
                Ok(true)
            }
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine_error("find the booking's network", e)),
        }
    }

    /// Makes the booking's own network unless it exists; its network mode for the
    /// container either way.
    async fn network(&self, name: &str, reservation: &Reservation) -> Result<String, ManagerError> {
        let internal = match &self.settings.network {
            Network::Mode(mode) => return Ok(mode.clone()),
            Network::PerBooking { internal } => *internal,
        };
        let booking = &reservation.event_id;
        if self.find_network(name, booking).await? {
            return Ok(name.to_owned());
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(internal),
            labels: Some(labels(reservation)),
            ..Default::default()
        };
        match self.engine().await?.create_network(request).await {
            Ok(_) => Ok(name.to_owned()),
            // Made meanwhile (dockerd answers 409, Podman 500): it is there, which counts.
            Err(e) => match self.find_network(name, booking).await? {
                true => Ok(name.to_owned()),
                false => Err(engine_error("create the booking's network", e)),
            },
        }
    }

    /// Removes the booking's own network if it has one; gone already is fine. It is
    /// looked for whatever `CONTAINER_NETWORK` says now, so bookings made before it
    /// changed leave none behind; a network of that name that is not the booking's is an
    /// error only where the booking should have one.
    async fn remove_network(&self, name: &str, booking: &str) -> Result<(), ManagerError> {
        let own = matches!(self.settings.network, Network::PerBooking { .. });
        match self.find_network(name, booking).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(_) if !own => return Ok(()),
            Err(e) => return Err(e),
        }
        match self.engine().await?.remove_network(name).await {
            Err(e) if status(&e) != Some(404) => {
                Err(engine_error("remove the booking's network", e))
            }
            _ => Ok(()),
        }
    }

    /// Creates the booking's container (not started), with a disk limit unless the
    /// engine has shown it cannot enforce one.
    async fn create(
        &self,
        engine: &Docker,
        name: &str,
        network: &str,
        reservation: &Reservation,
        request: &Request,
    ) -> Result<(), EngineError> {
        let disk = self
            .settings
            .disk_limit
            .filter(|_| !self.no_disk_limit.load(Ordering::Relaxed));
        let body = self.body(name, network, reservation, request, disk);
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        match engine.create_container(Some(options.clone()), body).await {
            Err(e) if disk.is_some() && refuses_disk_limit(&e) => {
                if !self.no_disk_limit.swap(true, Ordering::Relaxed) {
                    let driver = storage_driver(engine).await;
                    tracing::warn!(
                        error = %e,
                        "the engine's storage driver ({driver}) cannot limit a container's \
                         writable layer: containers are made without CONTAINER_DISK_LIMIT"
                    );
                }
                let body = self.body(name, network, reservation, request, None);
                engine.create_container(Some(options), body).await.map(drop)
            }
            created => created.map(drop),
        }
    }

    /// What the container is made of: the request, confined (see the module's
    /// documentation).
    fn body(
        &self,
        name: &str,
        network: &str,
        reservation: &Reservation,
        request: &Request,
        disk: Option<i64>,
    ) -> ContainerCreateBody {
        let env = request
            .ssh_key
            .as_ref()
            .map(|key| vec![format!("{SSH_KEY_VARIABLE}={key}")]);
        let capabilities = self
            .settings
            .capabilities
            .iter()
            .map(|c| format!("CAP_{}", capability_name(c)))
            .collect();
        ContainerCreateBody {
            image: Some(request.image.clone()),
            hostname: Some(name.chars().take(63).collect()),
            labels: Some(labels(reservation)),
            env,
            host_config: Some(HostConfig {
                memory: Some(request.memory),
                // No swap beyond the memory limit, so the limit means what it says.
                memory_swap: Some(request.memory),
                nano_cpus: Some(request.nano_cpus),
                network_mode: Some(network.to_owned()),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(capabilities),
                security_opt: Some(vec!["no-new-privileges".into()]),
                pids_limit: Some(self.settings.pids_limit),
                storage_opt: disk.map(|d| HashMap::from([("size".to_owned(), d.to_string())])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// An engine's refusal to create the container, in words for the user: an image
    /// missing from the engine is named, as it is the operator's to fix.
    async fn create_error(&self, engine: &Docker, image: &str, e: EngineError) -> ManagerError {
        if status(&e) == Some(404)
            && let Err(missing) = engine.inspect_image(image).await
            && status(&missing) == Some(404)
        {
            return ManagerError::permanent(format!(
                "the image {image} is not on the container engine; an operator must load it"
            ))
            .with_source(e);
        }
        engine_error("create the container", e)
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
            None => {
                let network = self.network(&name, reservation).await?;
                match self
                    .create(engine, &name, &network, reservation, &request)
                    .await
                {
                    Ok(()) => false,
                    // A concurrent configure may have made it first (dockerd answers 409,
                    // Podman 500): what counts is whether the booking's container exists now.
                    Err(e) => match self.find(&name, booking).await? {
                        Some(container) => is_running(&container),
                        None => return Err(self.create_error(engine, &request.image, e).await),
                    },
                }
            }
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
        let booking = &reservation.event_id;
        let Some(container) = self.find(&name, booking).await? else {
            // A configure cut short may have made the network only.
            self.remove_network(&name, booking).await?;
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
            Err(e) if status(&e) != Some(404) => {
                return Err(engine_error("remove the container", e));
            }
            _ => {}
        }
        self.remove_network(&name, booking).await?;
        Ok(Outcome::new(format!(
            "Your container {name} has been removed."
        )))
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

/// The labels of a booking's container and network.
fn labels(reservation: &Reservation) -> HashMap<String, String> {
    HashMap::from([
        (BOOKING_LABEL.to_owned(), reservation.event_id.clone()),
        (USER_LABEL.to_owned(), reservation.user.id.clone()),
    ])
}

/// Whether the engine refused a container for its disk limit (`storage_opt size`),
/// which its storage driver cannot enforce; dockerd and Podman say so in these words.
fn refuses_disk_limit(e: &EngineError) -> bool {
    let EngineError::DockerResponseServerError { message, .. } = e else {
        return false;
    };
    let message = message.to_ascii_lowercase();
    ["storage-opt", "storage opt", "storageopt", "quota"]
        .iter()
        .any(|words| message.contains(words))
}

/// The engine's storage driver and what it is on, for the log.
async fn storage_driver(engine: &Docker) -> String {
    let Ok(info) = engine.info().await else {
        return "unknown".into();
    };
    let backing = info
        .driver_status
        .unwrap_or_default()
        .into_iter()
        .find(|pair| pair.first().is_some_and(|k| k == "Backing Filesystem"))
        .and_then(|pair| pair.get(1).cloned());
    let driver = info.driver.unwrap_or_else(|| "unknown".into());
    match backing {
        Some(backing) => format!("{driver} on {backing}"),
        None => driver,
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

/// An engine failure in words for the user, without the engine's own text (it can name
/// the host's paths, drivers and versions): that goes to the log, as the error's source.
fn engine_error(action: &str, e: EngineError) -> ManagerError {
    let error = match status(&e) {
        Some(500..) => ManagerError::transient(format!(
            "the container engine failed to {action}; it is tried again"
        )),
        Some(_) => ManagerError::permanent(format!(
            "the container engine refused to {action}; an operator can find why in the \
             service's log"
        )),
        None => ManagerError::transient(format!(
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
