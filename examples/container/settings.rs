//! The container example's settings: what the variables say, read and checked once at
//! start-up, refusing what would hand a user the host.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde::Deserialize;

/// The capabilities given back by default: what an image running `sshd` needs (see the
/// module's documentation for why each).
pub const DEFAULT_CAPABILITIES: [&str; 7] = [
    "CHOWN",
    "SETUID",
    "SETGID",
    "SYS_CHROOT",
    "NET_BIND_SERVICE",
    "KILL",
    "AUDIT_WRITE",
];
/// Linux's capabilities, each at the index of its bit.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

pub(crate) const MIB: i64 = 1 << 20;
pub(crate) const GIB: i64 = 1 << 30;
/// The smallest memory limit Docker accepts.
pub(crate) const MIN_MEMORY: i64 = 6 * MIB;
/// The smallest CPU limit Docker accepts (0.01 CPU), in billionths of a CPU.
pub(crate) const MIN_NANO_CPUS: i64 = 10_000_000;

/// Which network a booking's container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// One of its own, made for the booking and removed with it; `internal` has no route
    /// beyond it.
    PerBooking { internal: bool },
    /// An engine's network mode: `none`, or a network all bookings share.
    Mode(String),
}

/// What the manager needs to know, read once at start-up.
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    /// The engine's address; `None` takes the local socket.
    pub docker_host: Option<String>,
    /// With TLS to a `tcp://` engine: the directory of `ca.pem`, `cert.pem`, `key.pem`.
    pub tls_cert_path: Option<PathBuf>,
    /// The images users may choose.
    pub images: Vec<String>,
    /// The image when the booking names none; one of `images`.
    pub default_image: String,
    /// Largest memory limit, in bytes; also the default.
    pub max_memory: i64,
    /// Largest CPU limit, in CPUs; also the default.
    pub max_cpus: f64,
    /// The network each container joins.
    pub network: Network,
    /// The capabilities given back after all are dropped, such as `CHOWN`.
    pub capabilities: Vec<String>,
    /// Most processes a container may have at once.
    pub pids_limit: i64,
    /// Largest writable layer, in bytes, where the storage driver can limit it.
    pub disk_limit: Option<i64>,
    /// How long a container may take to stop before it is killed.
    pub stop_timeout: Duration,
}

/// The variables as envy reads them, before they are checked.
#[derive(Deserialize)]
struct RawSettings {
    docker_host: Option<String>,
    docker_tls_verify: Option<String>,
    docker_cert_path: Option<String>,
    home: Option<String>,
    container_images: Option<String>,
    container_default_image: Option<String>,
    container_max_memory: Option<String>,
    container_max_cpus: Option<String>,
    container_network: Option<String>,
    container_network_internal: Option<String>,
    container_capabilities: Option<String>,
    container_pids_limit: Option<String>,
    container_disk_limit: Option<String>,
    container_stop_timeout: Option<String>,
}

impl ContainerSettings {
    /// Reads the settings from `(name, value)` pairs; an error names the variable.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let raw: RawSettings = webhook::config::settings_from_vars(vars)?;
        let images: Vec<String> = list(raw.container_images.as_deref().unwrap_or_default());
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
        let internal = match raw.container_network_internal.as_deref().map(str::trim) {
            None | Some("true") => true,
            Some("false") => false,
            Some(text) => bail!("CONTAINER_NETWORK_INTERNAL: {text:?} is not true or false"),
        };
        let network = match raw.container_network.as_deref().map(str::trim) {
            None | Some("") | Some("booking") => Network::PerBooking { internal },
            Some(mode) => Network::Mode(mode.to_owned()),
        };
        let capabilities = match raw.container_capabilities.as_deref().map(str::trim) {
            None => DEFAULT_CAPABILITIES.map(String::from).to_vec(),
            Some("none") => Vec::new(),
            Some(text) => list(text),
        };
        let pids_limit = match raw.container_pids_limit.as_deref() {
            None => 256,
            Some(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .with_context(|| {
                    format!("CONTAINER_PIDS_LIMIT: {text:?} is not a whole number from 1")
                })?,
        };
        let disk_limit = match raw.container_disk_limit.as_deref().map(str::trim) {
            None => Some(10 * GIB),
            Some("none") => None,
            Some(text) => Some(parse_memory(text).filter(|d| *d >= MIB).with_context(|| {
                format!(
                    "CONTAINER_DISK_LIMIT: {text:?} is not a size from 1m, such as 10g, nor none"
                )
            })?),
        };
        let stop_timeout = match raw.container_stop_timeout.as_deref() {
            None => Duration::from_secs(5),
            Some(text) => humantime::parse_duration(text).with_context(|| {
                format!("CONTAINER_STOP_TIMEOUT: {text:?} is not a duration such as 5s")
            })?,
        };
        // As the `docker` command reads them: any value turns TLS on.
        let tls_cert_path = raw.docker_tls_verify.filter(|v| !v.is_empty()).map(|_| {
            match (raw.docker_cert_path, raw.home) {
                (Some(path), _) if !path.is_empty() => PathBuf::from(path),
                (_, Some(home)) => PathBuf::from(home).join(".docker"),
                _ => PathBuf::from(".docker"),
            }
        });
        let settings = Self {
            docker_host: raw.docker_host.filter(|h| !h.is_empty()),
            tls_cert_path,
            images,
            default_image,
            max_memory,
            max_cpus,
            network,
            capabilities,
            pids_limit,
            disk_limit,
            stop_timeout,
        };
        settings.check()?;
        Ok(settings)
    }

    /// Refuses what would hand the user the host: its network, another container's,
    /// an engine anyone on the path can drive, an unknown capability.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if let Some(host) = &self.docker_host {
            check_docker_host(host, self.tls_cert_path.is_some())?;
        }
        // As with `docker`, TLS applies to a TCP engine only.
        let tcp = self
            .docker_host
            .as_ref()
            .is_some_and(|h| !h.starts_with("unix://"));
        if let Some(dir) = self.tls_cert_path.as_ref().filter(|_| tcp) {
            for file in ["ca.pem", "cert.pem", "key.pem"] {
                ensure!(
                    dir.join(file).is_file(),
                    "DOCKER_CERT_PATH: {} has no {file} (DOCKER_TLS_VERIFY is set)",
                    dir.display()
                );
            }
        }
        if let Network::Mode(mode) = &self.network {
            let lower = mode.to_ascii_lowercase();
            let shares = |prefix: &str| lower == prefix || lower.starts_with(&format!("{prefix}:"));
            ensure!(
                !(shares("host") || shares("container") || shares("ns")),
                "CONTAINER_NETWORK: {mode:?} would give users the network of the host or of \
                 another container; use booking (a network of its own for each booking), none, \
                 or the name of a network"
            );
            ensure!(!mode.is_empty(), "CONTAINER_NETWORK is empty");
        }
        for capability in &self.capabilities {
            ensure!(
                CAPABILITIES.contains(&capability_name(capability)),
                "CONTAINER_CAPABILITIES: {capability:?} is not a Linux capability such as CHOWN"
            );
        }
        ensure!(
            self.pids_limit >= 1,
            "CONTAINER_PIDS_LIMIT: {} is not a whole number from 1",
            self.pids_limit
        );
        ensure!(
            !self.images.is_empty() && self.images.contains(&self.default_image),
            "the default image must be one of the offered images"
        );
        Ok(())
    }
}

/// A capability's name without the `CAP_` some write before it, in capitals.
pub(crate) fn capability_name(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix("CAP_").unwrap_or(text)
}

/// Comma-separated values, trimmed, without empty ones.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(String::from)
        .collect()
}

/// A `DOCKER_HOST` this service may use: a Unix socket, or TCP to this machine's
/// loopback or with TLS.
fn check_docker_host(host: &str, tls: bool) -> anyhow::Result<()> {
    if host.strip_prefix("unix://").is_some_and(|p| !p.is_empty()) {
        return Ok(());
    }
    let Some(address) = ["tcp://", "http://", "https://"]
        .iter()
        .find_map(|scheme| host.strip_prefix(scheme))
        .filter(|a| !a.is_empty())
    else {
        bail!("DOCKER_HOST: {host:?} is not unix:///path/to.sock or tcp://host:port");
    };
    let authority = address.split('/').next().unwrap_or_default();
    let name = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(name, _)| name),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ensure!(
        tls || (loopback && !host.starts_with("https://")),
        "DOCKER_HOST: {host:?} is TCP without TLS to another machine, and whoever can reach \
         that port controls the engine and its host; set DOCKER_TLS_VERIFY=1 and \
         DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem), or reach the engine through a Unix \
         socket"
    );
    Ok(())
}

/// A memory size: bytes, or a whole number with `k`, `m` or `g` (powers of 1024, as
/// `docker run --memory` reads them; `mb` and `mib` are accepted too).
pub(crate) fn parse_memory(text: &str) -> Option<i64> {
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
pub(crate) fn parse_nano_cpus(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let cpus: f64 = text.parse().ok()?;
    (cpus.is_finite() && cpus < 1e6).then(|| (cpus * 1e9).round() as i64)
}
