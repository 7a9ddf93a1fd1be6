//! A switch port's access VLAN for the length of a booking, on Open vSwitch.
//!
//! When a booking starts, the Open vSwitch port named like the booked resource
//! (`reservation.resource.name`, e.g. `sw1-port-3`) becomes an access port on the VLAN
//! the user asked for in the custom parameter `vlan_id`: `tag` is that VLAN, `vlan_mode`
//! is `access` and `trunks` is empty, so a port that was a trunk carries only the user's
//! VLAN. When the booking ends, the port gets back its previous `tag`, `vlan_mode` and
//! `trunks`. The change is written to the switch database (OVSDB, RFC 7047: the `Port`
//! row), which `ovs-vswitchd` applies.
//!
//! The port row itself remembers who holds it and its previous settings, in `external_ids`
//! (`reservation-webhook:booking`, `reservation-webhook:previous-tag`, `...:previous-vlan-mode`,
//! `...:previous-trunks`), so a release after a restart of this service still restores it,
//! and `ovs-vsctl list port NAME` shows an operator which booking holds a port. Every
//! read-check-write is one OVSDB transaction that first asserts (`wait`) that what was read
//! is unchanged, so two bookings racing for a port or a VLAN cannot both win.
//!
//! A START for a port another booking still holds (the previous booking's END is late)
//! fails transiently: the service retries it with backoff, and it succeeds once that END
//! has freed the port.
//!
//! # Settings
//! | variable | default | meaning |
//! |---|---|---|
//! | `OVSDB_ADDRESS` | `unix:/var/run/openvswitch/db.sock` | the switch database, `unix:PATH` or `tcp:HOST:PORT` |
//! | `OVS_PORTS` | required | the ports bookings may change: names, or prefixes ending in `*`, comma-separated (`sw1-port-*,lab-7`); list only user ports, so no booking can move an uplink |
//! | `OVS_VLAN_RANGE` | required | the VLANs users may ask for, `FIRST-LAST` within 1-4094; leave management and infrastructure VLANs out |
//! | `OVS_EXCLUSIVE_VLANS` | `true` | refuse a VLAN that any other port carries (its `tag` or among its `trunks`, booked or not, or that a booked port gets back when its booking ends) |
//! | `OVS_DEFAULT_VLAN` | none | the VLAN a released port gets if it had neither tag nor trunks before; unset: no tag |
//! | `OVSDB_TIMEOUT` | `10s` | how long one call to the database may take |
//!
//! A port with neither `tag` nor `trunks` carries every VLAN in Open vSwitch (an uplink,
//! typically); the exclusive check does not count it, as it is the way out for the VLANs it
//! carries, not a user of them.
//!
//! # What the user receives
//! `Port sw1-port-3 is an access port on VLAN 100 until 2026-11-23 12:00 UTC.`
//!
//! Start a project with it: `cargo generate ... -d manager=switch_port` makes this file its
//! `src/resource.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};
use webhook::contract::reservation::Reservation;
use webhook::manager::{ManagerError, Outcome, ResourceManager};

/// `external_ids` key naming the booking that holds the port.
pub const BOOKING_KEY: &str = "reservation-webhook:booking";
/// `external_ids` key holding the port's `tag` from before the booking, or [`NONE`].
pub const PREVIOUS_KEY: &str = "reservation-webhook:previous-tag";
/// `external_ids` key holding the port's `vlan_mode` from before the booking, or [`NONE`].
pub const PREVIOUS_MODE_KEY: &str = "reservation-webhook:previous-vlan-mode";
/// `external_ids` key holding the port's `trunks` from before the booking, comma-separated,
/// or [`NONE`].
pub const PREVIOUS_TRUNKS_KEY: &str = "reservation-webhook:previous-trunks";
/// The previous-value keys' value for a column that was empty.
const NONE: &str = "none";
/// The database `ovs-vswitchd` reads.
const DATABASE: &str = "Open_vSwitch";
/// Read-check-write rounds before giving up on a port that keeps changing underneath.
const ATTEMPTS: usize = 5;

/// The manager `src/main.rs` runs when this example is the project's `src/resource.rs`.
pub type Manager = SwitchPort;

/// What the manager needs to know, read once at start-up.
#[derive(Debug, Clone)]
pub struct SwitchPortSettings {
    /// Where the switch database listens.
    pub address: OvsdbAddress,
    /// The ports bookings may change: a name, or a prefix ending in `*`; empty: none.
    pub ports: Vec<String>,
    /// The VLANs users may ask for.
    pub vlans: RangeInclusive<u16>,
    /// Whether a VLAN a booking asks for must be on no other port.
    pub exclusive: bool,
    /// The VLAN a released port gets when it had neither tag nor trunks before; `None`
    /// leaves it untagged.
    pub default_vlan: Option<u16>,
    /// How long one call to the database may take.
    pub timeout: Duration,
}

/// The variables as envy reads them, before they are checked.
#[derive(Deserialize)]
struct RawSettings {
    ovsdb_address: Option<String>,
    ovs_ports: Option<String>,
    ovs_vlan_range: Option<String>,
    ovs_exclusive_vlans: Option<String>,
    ovs_default_vlan: Option<String>,
    ovsdb_timeout: Option<String>,
}

impl SwitchPortSettings {
    /// Reads the settings from `(name, value)` pairs; an error names the variable.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let raw: RawSettings = webhook::config::settings_from_vars(vars)?;
        let address = raw
            .ovsdb_address
            .as_deref()
            .unwrap_or("unix:/var/run/openvswitch/db.sock")
            .parse()
            .context("OVSDB_ADDRESS")?;
        let ports = match raw.ovs_ports.as_deref() {
            None => bail!(
                "OVS_PORTS is not set: list the ports bookings may change, names or prefixes \
                 ending in * (such as sw1-port-*,lab-7), and leave uplinks out"
            ),
            Some(text) => parse_ports(text).with_context(|| {
                format!(
                    "OVS_PORTS: {text:?} is not a comma-separated list of port names or \
                     prefixes ending in * (such as sw1-port-*,lab-7)"
                )
            })?,
        };
        let vlans = match raw.ovs_vlan_range.as_deref() {
            None => bail!(
                "OVS_VLAN_RANGE is not set: give the VLANs users may ask for, such as \
                 100-199, and leave management and infrastructure VLANs out"
            ),
            Some(text) => parse_range(text).with_context(|| {
                format!("OVS_VLAN_RANGE: {text:?} is not a range such as 100-199 within 1-4094")
            })?,
        };
        let exclusive = match raw.ovs_exclusive_vlans.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(text) => bail!("OVS_EXCLUSIVE_VLANS: {text:?} is neither true nor false"),
        };
        let default_vlan = match raw.ovs_default_vlan.as_deref() {
            None => None,
            Some(text) => Some(parse_vlan(text).with_context(|| {
                format!("OVS_DEFAULT_VLAN: {text:?} is not a VLAN id from 1 to 4094")
            })?),
        };
        let timeout = match raw.ovsdb_timeout.as_deref() {
            None => Duration::from_secs(10),
            Some(text) => humantime::parse_duration(text).with_context(|| {
                format!("OVSDB_TIMEOUT: {text:?} is not a duration such as 10s")
            })?,
        };
        Ok(Self {
            address,
            ports,
            vlans,
            exclusive,
            default_vlan,
            timeout,
        })
    }
}

/// Port names and prefixes: `*` only at the end, at least one entry.
fn parse_ports(text: &str) -> Option<Vec<String>> {
    let ports: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = |p: &String| !p.trim_end_matches('*').contains('*') && p.matches('*').count() <= 1;
    (!ports.is_empty() && ports.iter().all(valid)).then_some(ports)
}

/// A VLAN id, 1 to 4094 (0 and 4095 are reserved by IEEE 802.1Q).
fn parse_vlan(text: &str) -> Option<u16> {
    text.trim().parse().ok().filter(|v| (1..=4094).contains(v))
}

fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (first, last) = text.split_once('-')?;
    let (first, last) = (parse_vlan(first)?, parse_vlan(last)?);
    (first <= last).then_some(first..=last)
}

/// Where the switch database listens, spelled as for `ovs-vsctl --db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvsdbAddress {
    /// `unix:/var/run/openvswitch/db.sock`
    Unix(PathBuf),
    /// `tcp:127.0.0.1:6640`
    Tcp(String),
}

impl FromStr for OvsdbAddress {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text.split_once(':') {
            Some(("unix", path)) if !path.is_empty() => Ok(Self::Unix(path.into())),
            Some(("tcp", host_port)) if host_port.contains(':') => Ok(Self::Tcp(host_port.into())),
            _ => bail!("{text:?} is not unix:PATH or tcp:HOST:PORT"),
        }
    }
}

impl fmt::Display for OvsdbAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(host_port) => write!(f, "tcp:{host_port}"),
        }
    }
}

/// Gives booked Open vSwitch ports the VLAN their booking asks for.
pub struct SwitchPort {
    settings: SwitchPortSettings,
    db: Ovsdb,
}

impl SwitchPort {
    /// Builds the manager from the process environment.
    pub async fn from_env() -> anyhow::Result<Self> {
        Ok(Self::new(SwitchPortSettings::from_vars(std::env::vars())?))
    }

    /// Refuses a port `OVS_PORTS` does not list. (Release needs no check: it only restores
    /// a port that this booking's configure marked.)
    fn allowed(&self, port: &str) -> Result<(), ManagerError> {
        let ports = &self.settings.ports;
        let listed = |p: &String| match p.strip_suffix('*') {
            Some(prefix) => port.starts_with(prefix),
            None => port == p,
        };
        if ports.iter().any(listed) {
            return Ok(());
        }
        Err(ManagerError::permanent(format!(
            "port {} is not among the ports this webhook may change (OVS_PORTS)",
            quoted(port)
        )))
    }

    /// Builds the manager from settings. Connects only when called: each call opens its
    /// own short connection, so a restarted database needs no reconnect logic.
    pub fn new(settings: SwitchPortSettings) -> Self {
        let db = Ovsdb {
            address: settings.address.clone(),
            timeout: settings.timeout,
        };
        Self { settings, db }
    }

    /// The `vlan_id` custom parameter, checked against 802.1Q and the offered range.
    fn vlan(&self, reservation: &Reservation) -> Result<u16, ManagerError> {
        let (first, last) = (self.settings.vlans.start(), self.settings.vlans.end());
        let text = reservation.parameters.get("vlan_id").ok_or_else(|| {
            ManagerError::invalid_parameter(
                "vlan_id",
                format!("is missing: give the VLAN for the port, from {first} to {last}"),
            )
        })?;
        let vlan = parse_vlan(&text).ok_or_else(|| {
            ManagerError::invalid_parameter(
                "vlan_id",
                format!(
                    "{} is not a VLAN id: give a whole number from 1 to 4094",
                    quoted(&text)
                ),
            )
        })?;
        if !self.settings.vlans.contains(&vlan) {
            return Err(ManagerError::invalid_parameter(
                "vlan_id",
                format!("VLAN {vlan} is not offered here: choose one from {first} to {last}"),
            ));
        }
        Ok(vlan)
    }

    /// One read-check-write round of `configure`; `false` when the port changed meanwhile.
    async fn try_configure(
        &self,
        port: &str,
        vlan: u16,
        booking: &str,
    ) -> Result<bool, ManagerError> {
        let mut reads = vec![select_port(port)];
        if self.settings.exclusive {
            reads.push(select_all_ports());
        }
        let results = self
            .db
            .transact(reads)
            .await
            .map_err(OvsdbError::into_manager)?;
        let row = PortRow::from_select(port, &results[0])?;
        match row.external_ids.get(BOOKING_KEY) {
            Some(holder) if holder != booking => {
                // Most often the previous booking's END is late: worth retrying.
                return Err(ManagerError::transient(format!(
                    "port {port} is still held by another booking; \
                     it is freed when that booking ends"
                )));
            }
            Some(_) if row.is_access_port_on(vlan) => return Ok(true),
            _ => {}
        }
        let mut asserts = vec![row.unchanged()];
        if self.settings.exclusive {
            let all = rows(&results[1]);
            if let Some(user) = vlan_user(&all, port, vlan) {
                return Err(ManagerError::invalid_parameter(
                    "vlan_id",
                    format!("VLAN {vlan} is in use {user}: choose another VLAN"),
                ));
            }
            asserts.push(json!({
                "op": "wait", "table": "Port", "timeout": 0, "until": "==",
                "where": [],
                "columns": ALL_PORTS_COLUMNS,
                "rows": all,
            }));
        }
        let mut ids = row.external_ids.clone();
        if !ids.contains_key(BOOKING_KEY) {
            // The first configure of this booking: remember what to go back to. A repeat
            // keeps the values from the first, which are the port's real previous ones.
            ids.insert(BOOKING_KEY.into(), booking.into());
            ids.insert(
                PREVIOUS_KEY.into(),
                row.tag.map_or(NONE.into(), |t| t.to_string()),
            );
            ids.insert(
                PREVIOUS_MODE_KEY.into(),
                row.vlan_mode.clone().unwrap_or_else(|| NONE.into()),
            );
            ids.insert(PREVIOUS_TRUNKS_KEY.into(), trunks_text(&row.trunks));
        }
        let write = row.update(
            Some(vlan),
            Some(VlanShape {
                mode: Some("access".into()),
                trunks: Vec::new(),
            }),
            &ids,
        );
        self.commit(asserts, write, &format!("booking {booking} starts"))
            .await
    }

    /// One read-check-write round of `release`; the outcome, or `None` when the port
    /// changed meanwhile.
    async fn try_release(&self, port: &str, booking: &str) -> Result<Option<String>, ManagerError> {
        let results = self
            .db
            .transact(vec![select_port(port)])
            .await
            .map_err(OvsdbError::into_manager)?;
        let row = PortRow::from_select(port, &results[0])?;
        if row.external_ids.get(BOOKING_KEY).map(String::as_str) != Some(booking) {
            return Ok(Some(format!(
                "Port {port} was not held by this booking: nothing to undo."
            )));
        }
        let mut ids = row.external_ids.clone();
        ids.remove(BOOKING_KEY);
        let previous = Previous::take(port, &mut ids);
        // Absent for a port configured by a version that wrote only `tag`: leave the
        // other columns as that version did.
        let shape = previous.shape;
        let untagged_access = previous.tag.is_none()
            && shape.as_ref().is_none_or(|shape| {
                shape.trunks.is_empty() && shape.mode.as_deref().is_none_or(|m| m == "access")
            });
        let restore = match previous.tag {
            Some(tag) => Some(tag),
            None if untagged_access => self.settings.default_vlan,
            None => None,
        };
        let write = row.update(restore, shape.clone(), &ids);
        let why = format!("booking {booking} ends");
        if !self.commit(vec![row.unchanged()], write, &why).await? {
            return Ok(None);
        }
        let trunks = shape.map(|s| s.trunks).unwrap_or_default();
        Ok(Some(match restore {
            _ if !trunks.is_empty() => {
                format!(
                    "Port {port} is back to trunking VLANs {}.",
                    trunks_text(&trunks)
                )
            }
            Some(vlan) => format!("Port {port} is back on VLAN {vlan}."),
            None => format!("Port {port} no longer has an access VLAN."),
        }))
    }

    /// Runs `asserts` then `write` as one transaction, with `why` in the database's log;
    /// `false` if an assert failed, that is, what was read has changed.
    async fn commit(
        &self,
        mut asserts: Vec<Value>,
        write: Value,
        why: &str,
    ) -> Result<bool, ManagerError> {
        asserts.push(write);
        asserts.push(json!({"op": "comment", "comment": format!("reservation-webhook: {why}")}));
        match self.db.transact(asserts).await {
            Ok(_) => Ok(true),
            Err(OvsdbError::Operation { error, .. }) if error == "timed out" => Ok(false),
            Err(e) => Err(e.into_manager()),
        }
    }
}

#[async_trait]
impl ResourceManager for SwitchPort {
    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id, port = %reservation.resource.name))]
    async fn configure(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let port = port_name(reservation)?;
        self.allowed(port)?;
        let vlan = self.vlan(reservation)?;
        for _ in 0..ATTEMPTS {
            if self
                .try_configure(port, vlan, &reservation.event_id)
                .await?
            {
                return Ok(Outcome::new(format!(
                    "Port {port} is an access port on VLAN {vlan} until {}.",
                    reservation.end.format("%Y-%m-%d %H:%M UTC")
                )));
            }
        }
        Err(ManagerError::transient(format!(
            "port {port} kept changing while being configured"
        )))
    }

    #[tracing::instrument(skip_all, fields(booking = %reservation.event_id, port = %reservation.resource.name))]
    async fn release(&self, reservation: &Reservation) -> Result<Outcome, ManagerError> {
        let port = port_name(reservation)?;
        for _ in 0..ATTEMPTS {
            if let Some(message) = self.try_release(port, &reservation.event_id).await? {
                return Ok(Outcome::new(message));
            }
        }
        Err(ManagerError::transient(format!(
            "port {port} kept changing while being released"
        )))
    }

    async fn ready(&self) -> Result<(), ManagerError> {
        self.db
            .call("echo", json!(["ready"]))
            .await
            .map(drop)
            .map_err(OvsdbError::into_manager)
    }
}

/// The booked resource's name, which is the port's name on the switch.
fn port_name(reservation: &Reservation) -> Result<&str, ManagerError> {
    let name = reservation.resource.name.as_str();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ManagerError::permanent(format!(
            "the booked resource's name {} is not a switch port name",
            quoted(name)
        )));
    }
    Ok(name)
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

/// The operation reading the port's row, as [`PortRow`] needs it.
fn select_port(port: &str) -> Value {
    json!({
        "op": "select", "table": "Port",
        "where": [["name", "==", port]],
        "columns": ["_uuid", "tag", "vlan_mode", "trunks", "external_ids"],
    })
}

/// The columns of every port the exclusivity check reads and asserts unchanged.
const ALL_PORTS_COLUMNS: [&str; 4] = ["name", "tag", "trunks", "external_ids"];

/// The operation reading every port, for the exclusivity check.
fn select_all_ports() -> Value {
    json!({"op": "select", "table": "Port", "where": [], "columns": ALL_PORTS_COLUMNS})
}

/// Who, other than `port`, carries `vlan` now or gets it back when its booking ends, as
/// the words after "in use"; `None` when no one does.
fn vlan_user(all: &[Value], port: &str, vlan: u16) -> Option<&'static str> {
    all.iter()
        .filter(|other| other["name"] != port)
        .find_map(|other| {
            let ids = map_of(&other["external_ids"]);
            let mut carried = integers(&other["tag"]);
            carried.extend(integers(&other["trunks"]));
            if ids.contains_key(BOOKING_KEY) {
                let previous = Previous::read(&ids);
                carried.extend(previous.tag);
                carried.extend(previous.shape.into_iter().flat_map(|s| s.trunks));
            }
            carried
                .contains(&vlan)
                .then_some(if ids.contains_key(BOOKING_KEY) {
                    "by another booking"
                } else {
                    "on this switch"
                })
        })
}

/// The rows of a `select` result.
fn rows(result: &Value) -> Vec<Value> {
    result["rows"].as_array().cloned().unwrap_or_default()
}

/// The integers of an OVSDB set column: an atom when it holds one, else `["set", [...]]`.
/// Values outside 0-4095, which the schema does not allow, are skipped.
fn integers(value: &Value) -> Vec<u16> {
    let atoms = match value.as_array() {
        Some(set) if set.first().is_some_and(|tag| tag == "set") => {
            set[1].as_array().cloned().unwrap_or_default()
        }
        _ => vec![value.clone()],
    };
    atoms
        .iter()
        .filter_map(|atom| atom.as_u64().and_then(|n| u16::try_from(n).ok()))
        .filter(|n| *n <= 4095)
        .collect()
}

/// `10,20`, or [`NONE`] for no VLANs: how `trunks` is kept in `external_ids`.
fn trunks_text(trunks: &[u16]) -> String {
    if trunks.is_empty() {
        return NONE.into();
    }
    let texts: Vec<String> = trunks.iter().map(u16::to_string).collect();
    texts.join(",")
}

/// A `tag` as the schema allows it, 0 to 4095: kept and restored as it was, even outside
/// 802.1Q's 1-4094.
fn parse_tag(text: &str) -> Option<u16> {
    text.trim().parse().ok().filter(|t| *t <= 4095)
}

/// A port's `vlan_mode` (`None`: unset) and `trunks`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VlanShape {
    mode: Option<String>,
    trunks: Vec<u16>,
}

/// What a port had before its booking, as its `external_ids` keep it.
struct Previous {
    tag: Option<u16>,
    /// `None` when only the tag was kept, by a version that changed nothing else.
    shape: Option<VlanShape>,
}

impl Previous {
    /// Reads the previous values; an unreadable one counts as empty.
    fn read(ids: &BTreeMap<String, String>) -> Self {
        let tag = ids
            .get(PREVIOUS_KEY)
            .filter(|t| *t != NONE)
            .and_then(|t| parse_tag(t));
        let shape = ids.get(PREVIOUS_MODE_KEY).map(|mode| VlanShape {
            mode: (mode != NONE).then(|| mode.clone()),
            trunks: ids
                .get(PREVIOUS_TRUNKS_KEY)
                .filter(|t| *t != NONE)
                .map(|t| t.split(',').filter_map(parse_tag).collect())
                .unwrap_or_default(),
        });
        Self { tag, shape }
    }

    /// Reads the previous values and removes their keys from `ids`, warning about one that
    /// cannot be read.
    fn take(port: &str, ids: &mut BTreeMap<String, String>) -> Self {
        let previous = Self::read(ids);
        if let Some(text) = ids.get(PREVIOUS_KEY)
            && text != NONE
            && previous.tag.is_none()
        {
            tracing::warn!(port, previous = %text, "unreadable previous VLAN");
        }
        for key in [PREVIOUS_KEY, PREVIOUS_MODE_KEY, PREVIOUS_TRUNKS_KEY] {
            ids.remove(key);
        }
        previous
    }
}

/// A port's row as read, kept in wire form too so a `wait` can assert it is unchanged.
struct PortRow {
    uuid: Value,
    tag: Option<u16>,
    vlan_mode: Option<String>,
    trunks: Vec<u16>,
    external_ids: BTreeMap<String, String>,
    raw: Value,
}

impl PortRow {
    fn from_select(port: &str, result: &Value) -> Result<Self, ManagerError> {
        let row = rows(result).into_iter().next().ok_or_else(|| {
            ManagerError::permanent(format!("the switch has no port named {}", quoted(port)))
        })?;
        Ok(Self {
            uuid: row["_uuid"].clone(),
            // Any tag the schema allows, 0 and 4095 included: it is what a release restores.
            tag: integers(&row["tag"]).first().copied(),
            vlan_mode: row["vlan_mode"].as_str().map(str::to_owned),
            trunks: integers(&row["trunks"]),
            external_ids: map_of(&row["external_ids"]),
            raw: row,
        })
    }

    /// Whether the port is already what `configure` makes of it.
    fn is_access_port_on(&self, vlan: u16) -> bool {
        self.tag == Some(vlan)
            && self.vlan_mode.as_deref() == Some("access")
            && self.trunks.is_empty()
    }

    /// Fails the transaction if the row changed since it was read.
    fn unchanged(&self) -> Value {
        let columns = ["tag", "vlan_mode", "trunks", "external_ids"];
        let row: serde_json::Map<String, Value> = columns
            .iter()
            .map(|c| ((*c).to_owned(), self.raw[*c].clone()))
            .collect();
        json!({
            "op": "wait", "table": "Port", "timeout": 0, "until": "==",
            "where": [["_uuid", "==", self.uuid]],
            "columns": columns,
            "rows": [row],
        })
    }

    /// Sets the row's tag (`None`: no tag), its mode and trunks unless `shape` is `None`,
    /// and its external ids.
    fn update(
        &self,
        tag: Option<u16>,
        shape: Option<VlanShape>,
        ids: &BTreeMap<String, String>,
    ) -> Value {
        let tag = tag.map_or(json!(["set", []]), |t| json!(t));
        let ids: Vec<Value> = ids.iter().map(|(k, v)| json!([k, v])).collect();
        let mut row = json!({"tag": tag, "external_ids": ["map", ids]});
        if let Some(shape) = shape {
            row["vlan_mode"] = shape.mode.map_or(json!(["set", []]), |m| json!(m));
            row["trunks"] = json!(["set", shape.trunks]);
        }
        json!({
            "op": "update", "table": "Port",
            "where": [["_uuid", "==", self.uuid]],
            "row": row,
        })
    }
}

/// An OVSDB map (`["map", [[key, value], ...]]`) of strings.
fn map_of(value: &Value) -> BTreeMap<String, String> {
    value[1]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned())))
        .collect()
}

/// Why a call to the switch database failed.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("cannot talk to the switch database: {0}")]
    Io(#[from] std::io::Error),
    #[error("the switch database did not answer in time")]
    Timeout,
    #[error("the switch database answered with an error: {0}")]
    Rpc(String),
    #[error("the switch database refused the change: {error} ({details})")]
    Operation { error: String, details: String },
}

impl OvsdbError {
    /// Unreachable or slow is worth retrying; a refusal is not.
    fn into_manager(self) -> ManagerError {
        let error = match &self {
            Self::Io(_) | Self::Timeout => {
                ManagerError::transient("the switch database is not reachable")
            }
            Self::Rpc(_) | Self::Operation { .. } => {
                let text: String = self.to_string().chars().take(300).collect();
                ManagerError::permanent(text)
            }
        };
        error.with_source(self)
    }
}

/// A stream to the database, over a unix socket or TCP.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A minimal OVSDB client: JSON-RPC 1.0 over a stream (RFC 7047 section 4), where
/// messages are JSON objects sent back to back, without delimiters. It makes one short
/// connection per call, which keeps it free of reconnect logic; a booking is a handful
/// of calls, so the cost does not matter.
struct Ovsdb {
    address: OvsdbAddress,
    timeout: Duration,
}

impl Ovsdb {
    /// Runs `operations` on the `Open_vSwitch` database as one atomic transaction
    /// (RFC 7047 section 4.1.3) and returns each operation's result.
    async fn transact(&self, operations: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![json!(DATABASE)];
        params.extend(operations);
        let result = self.call("transact", Value::Array(params)).await?;
        let results = result.as_array().cloned().unwrap_or_default();
        // A failed operation carries "error"; the ones after it are not run.
        if let Some(failed) = results.iter().find(|r| r.get("error").is_some()) {
            return Err(OvsdbError::Operation {
                error: failed["error"].as_str().unwrap_or("error").to_owned(),
                details: failed["details"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(results)
    }

    /// Sends one request and returns its result, within the timeout.
    async fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        tokio::time::timeout(self.timeout, self.call_unbounded(method, params))
            .await
            .map_err(|_| OvsdbError::Timeout)?
    }

    async fn call_unbounded(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let mut stream: Box<dyn Connection> = match &self.address {
            OvsdbAddress::Unix(path) => Box::new(UnixStream::connect(path).await?),
            OvsdbAddress::Tcp(host_port) => Box::new(TcpStream::connect(host_port).await?),
        };
        let request = json!({"method": method, "params": params, "id": 0});
        stream.write_all(request.to_string().as_bytes()).await?;
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            buffer.extend_from_slice(&chunk[..read]);
            let mut messages = serde_json::Deserializer::from_slice(&buffer).into_iter::<Value>();
            let mut echoes = Vec::new();
            let mut consumed = 0;
            while let Some(message) = messages.next() {
                let message = match message {
                    Ok(message) => message,
                    Err(e) if e.is_eof() => break,
                    Err(e) => return Err(OvsdbError::Rpc(format!("unreadable reply: {e}"))),
                };
                if message["method"] == "echo" {
                    // The server's keep-alive probe: answering it keeps the connection.
                    echoes.push(
                        json!({"id": message["id"], "result": message["params"], "error": null}),
                    );
                } else if message["id"] == 0 {
                    return match &message["error"] {
                        Value::Null => Ok(message["result"].clone()),
                        error => Err(OvsdbError::Rpc(error.to_string())),
                    };
                }
                consumed = messages.byte_offset();
            }
            for echo in echoes {
                stream.write_all(echo.to_string().as_bytes()).await?;
            }
            buffer.drain(..consumed);
        }
    }
}
