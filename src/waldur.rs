//! Waldur marketplace events on `POST /waldur`: who may send them, and how an order event
//! becomes a booking for the same [`ResourceManager`](crate::manager::ResourceManager).
//!
//! Waldur posts `{created, message, context, event_type}` and cannot sign it, so the endpoint
//! is guarded by a shared token (`X-Webhook-Token`) and/or a CIDR allow-list. Event types in
//! `WALDUR_CONFIGURE_EVENTS` configure, those in `WALDUR_RELEASE_EVENTS` release, for offerings
//! whose name or type is `WALDUR_RESOURCE_TYPE`; the rest go to the manager's hook.
//! `docs/sources.md` describes the mapping.

use std::collections::BTreeSet;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use poem::Request;
use poem::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::access;
use crate::config::same_name;
use crate::payload::{Action, PayloadError};
use crate::reply::Reply;
use crate::reservation::{Parameters, Reservation, Resource, User};

/// The header that carries `WALDUR_TOKEN`.
pub const TOKEN_HEADER: &str = "x-webhook-token";
/// Order events that configure, unless `WALDUR_CONFIGURE_EVENTS` says otherwise.
pub const DEFAULT_CONFIGURE_EVENTS: &str = "marketplace_order_completed";
/// Events that release, unless `WALDUR_RELEASE_EVENTS` says otherwise.
pub const DEFAULT_RELEASE_EVENTS: &str =
    "marketplace_resource_terminate_succeeded,marketplace_order_terminated";
/// Booking ids from Waldur start with this, so they never meet the reservation system's.
pub const BOOKING_PREFIX: &str = "waldur-";

/// The Waldur endpoint's settings; it exists only when a token or an allow-list is set.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WALDUR_TOKEN`: required in `X-Webhook-Token` when set.
    pub token: Option<SecretString>,
    /// `WALDUR_ALLOWED_CIDRS`: the client address must be in one when set.
    pub allowed: Option<Vec<IpNet>>,
    /// `WALDUR_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub configure_events: Vec<&'static str>,
    pub release_events: Vec<&'static str>,
    /// `WALDUR_RESOURCE_TYPE` (default `RESOURCE_TYPE`), matched against the offering's
    /// name and type.
    pub resource_type: String,
}

/// The `WALDUR_*` variables as read, before they are checked.
#[derive(Debug, Default)]
pub(crate) struct RawSettings {
    pub token: Option<SecretString>,
    pub allowed_cidrs: Option<String>,
    pub trusted_proxies: Option<String>,
    pub configure_events: Option<String>,
    pub release_events: Option<String>,
    pub resource_type: Option<String>,
}

impl Settings {
    /// Checks the variables; `None` when the endpoint is off. Errors name the variable.
    pub(crate) fn check(raw: RawSettings, resource_type: &str) -> Result<Option<Self>, String> {
        if raw.token.is_none() && raw.allowed_cidrs.is_none() {
            let stray = [
                ("WALDUR_TRUSTED_PROXIES", raw.trusted_proxies.is_some()),
                ("WALDUR_CONFIGURE_EVENTS", raw.configure_events.is_some()),
                ("WALDUR_RELEASE_EVENTS", raw.release_events.is_some()),
                ("WALDUR_RESOURCE_TYPE", raw.resource_type.is_some()),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} is set but the Waldur endpoint is off: set WALDUR_TOKEN or \
                     WALDUR_ALLOWED_CIDRS to turn it on"
                ));
            }
            return Ok(None);
        }
        if raw.trusted_proxies.is_some() && raw.allowed_cidrs.is_none() {
            return Err(
                "WALDUR_TRUSTED_PROXIES has no effect without WALDUR_ALLOWED_CIDRS: the client \
                 address is only needed for the allow-list"
                    .into(),
            );
        }
        let cidrs = |name: &str, text: Option<String>| {
            text.map(|t| access::parse_cidrs(name, &t)).transpose()
        };
        let configure = events(
            "WALDUR_CONFIGURE_EVENTS",
            raw.configure_events.as_deref(),
            DEFAULT_CONFIGURE_EVENTS,
        )?;
        let release = events(
            "WALDUR_RELEASE_EVENTS",
            raw.release_events.as_deref(),
            DEFAULT_RELEASE_EVENTS,
        )?;
        if let Some(both) = release.iter().find(|t| configure.contains(t)) {
            return Err(format!(
                "WALDUR_RELEASE_EVENTS: {both} is also in WALDUR_CONFIGURE_EVENTS; an event \
                 type can only configure or release"
            ));
        }
        let resource_type = raw
            .resource_type
            .unwrap_or_else(|| resource_type.to_owned())
            .trim()
            .to_owned();
        if resource_type.is_empty() {
            return Err(
                "WALDUR_RESOURCE_TYPE is empty: set it to the offering's name or type".into(),
            );
        }
        Ok(Some(Self {
            token: raw.token,
            allowed: cidrs("WALDUR_ALLOWED_CIDRS", raw.allowed_cidrs)?,
            trusted_proxies: cidrs("WALDUR_TRUSTED_PROXIES", raw.trusted_proxies)?
                .unwrap_or_default(),
            configure_events: configure,
            release_events: release,
            resource_type,
        }))
    }

    /// Lets a request through, or says why not: 403 for an address outside the allow-list
    /// (or an unreadable `X-Forwarded-For` from a trusted proxy), 401 for a missing or wrong
    /// token.
    pub fn admit(&self, req: &Request) -> Result<(), Reply> {
        if let Some(allowed) = &self.allowed {
            let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
            let client = peer
                .ok_or_else(|| "the client address is unknown".to_owned())
                .and_then(|peer| {
                    access::client_address(peer, req.headers(), &self.trusted_proxies)
                });
            let refusal = match client {
                Ok(ip) if access::contains(allowed, ip) => None,
                Ok(ip) => Some(format!(
                    "client address {ip} is not in WALDUR_ALLOWED_CIDRS"
                )),
                Err(e) => Some(e),
            };
            if let Some(message) = refusal {
                return Err(Reply::new(StatusCode::FORBIDDEN, "forbidden", message));
            }
        }
        if let Some(token) = &self.token {
            let unauthorized = |m: &str| Reply::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
            let presented = req
                .headers()
                .get(TOKEN_HEADER)
                .ok_or_else(|| unauthorized("missing token: send X-Webhook-Token"))?;
            let expected = token.expose_secret().trim().as_bytes();
            if !access::same_secret(presented.as_bytes().trim_ascii(), expected) {
                return Err(unauthorized("X-Webhook-Token does not match WALDUR_TOKEN"));
            }
        }
        Ok(())
    }
}

/// A comma-separated list of event types, kept for the life of the process.
fn events(name: &str, text: Option<&str>, default: &str) -> Result<Vec<&'static str>, String> {
    let list: Vec<&'static str> = text
        .unwrap_or(default)
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(intern)
        .collect();
    if list.is_empty() {
        return Err(format!("{name} lists no event type"));
    }
    Ok(list)
}

/// The ledger records event types as `&'static str`; each configured name is stored once
/// per process, however often a configuration is read.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().expect("event type names lock");
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// A parsed Waldur delivery.
// Lives for one request and is moved once, like `payload::Delivery`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An order or resource event that configures or releases a booking.
    Booking {
        action: Action,
        /// The Waldur event type, for the ledger's history.
        event_type: &'static str,
        reservation: Reservation,
    },
    /// Another event type: offered to the manager's hook, else ignored with `reason`.
    Other { event_type: String, reason: String },
    /// An event for an offering of another type: ignored with `reason`.
    Ignored { event_type: String, reason: String },
}

/// Parses a Waldur body. A listed event must name its offering, a booking id and a user;
/// other event types are not checked beyond `event_type`.
pub fn parse(body: &[u8], s: &Settings) -> Result<Delivery, PayloadError> {
    let map = crate::payload::object(body).map_err(|e| match e {
        PayloadError::InvalidJson(e) => PayloadError::InvalidJson(format!(
            "{e} (set the Waldur web hook's content type to JSON)"
        )),
        e => e,
    })?;
    let event_type = match map.get("event_type") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.as_str(),
        None | Some(Value::Null) => return Err(PayloadError::MissingField("event_type")),
        Some(other) => return Err(invalid("event_type", "a non-empty string", other)),
    };
    let listed = |list: &[&'static str], action| {
        list.iter()
            .find(|t| **t == event_type)
            .map(|t| (action, *t))
    };
    let Some((action, static_type)) = listed(&s.configure_events, Action::Configure)
        .or_else(|| listed(&s.release_events, Action::Release))
    else {
        return Ok(other(&map, event_type, s));
    };
    let context = match map.get("context") {
        Some(Value::Object(context)) => context,
        None | Some(Value::Null) => return Err(PayloadError::MissingField("context")),
        Some(other) => return Err(invalid("context", "an object", other)),
    };
    let field = |key: &'static str| text(context, key);
    let (offering_type, offering_name) = (field("offering_type")?, field("offering_name")?);
    let Some(kind) = [offering_type, offering_name]
        .into_iter()
        .flatten()
        .find(|t| same_name(t, &s.resource_type))
    else {
        if offering_type.or(offering_name).is_none() {
            return Err(PayloadError::MissingField(
                "context.offering_name (or context.offering_type): needed to tell whether the \
                 order is for this webhook",
            ));
        }
        return Ok(not_ours(event_type, offering_name.or(offering_type)));
    };
    // A completed order may be a termination; a cancelled one may have been an update or a
    // termination, which leave the resource as it was.
    let order_type = field("order_type")?;
    let action = match (action, order_type) {
        (_, None) => action,
        (_, Some(t)) if t.eq_ignore_ascii_case("create") => action,
        (Action::Configure, Some(t)) if t.eq_ignore_ascii_case("terminate") => Action::Release,
        (_, Some(t)) => {
            return Ok(Delivery::Other {
                event_type: event_type.to_owned(),
                reason: format!("{event_type} of an order of type {t:?} needs no action"),
            });
        }
    };
    let key =
        field("resource_uuid")?
            .or(field("order_uuid")?)
            .ok_or(PayloadError::MissingField(
                "context.resource_uuid (or context.order_uuid)",
            ))?;
    let user_email = field("user_email")?;
    let user = field("user_uuid")?
        .or(user_email)
        .ok_or(PayloadError::MissingField(
            "context.user_uuid (or context.user_email)",
        ))?;
    let created = match map.get("created") {
        None | Some(Value::Null) => Utc::now(),
        Some(value) => serde_json::from_value::<DateTime<Utc>>(value.clone())
            .map_err(|_| invalid("created", "an RFC 3339 date and time", value))?,
    };
    let resource_name = field("resource_name")?;
    let reservation = Reservation {
        event_id: format!("{BOOKING_PREFIX}{key}"),
        user: User {
            id: user.to_owned(),
            username: field("user_username")?.map(str::to_owned),
            email: user_email.map(str::to_owned),
            ssh_public_key: None,
        },
        resource: Resource {
            id: resource_number(key),
            name: resource_name.or(offering_name).unwrap_or(kind).to_owned(),
            kind: kind.to_owned(),
            specs: None,
            location: None,
        },
        site: None,
        title: field("order_name")?.or(resource_name).map(str::to_owned),
        description: map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
        start: created,
        end: open_end(),
        parameters: Parameters::parse(Some(&Value::Object(context.clone())))
            .map_err(PayloadError::InvalidParameters)?,
    };
    Ok(Delivery::Booking {
        action,
        event_type: static_type,
        reservation,
    })
}

/// An event type outside the lists: for the hook, unless it names an offering of another type.
fn other(map: &Map<String, Value>, event_type: &str, s: &Settings) -> Delivery {
    let named = |key| map.get("context")?.get(key)?.as_str();
    let (offering_type, offering_name) = (named("offering_type"), named("offering_name"));
    let ours = [offering_type, offering_name]
        .into_iter()
        .flatten()
        .any(|t| same_name(t, &s.resource_type));
    if !ours && offering_type.or(offering_name).is_some() {
        return not_ours(event_type, offering_name.or(offering_type));
    }
    Delivery::Other {
        event_type: event_type.to_owned(),
        reason: format!("Waldur event type {event_type:?} is not handled by this webhook"),
    }
}

fn not_ours(event_type: &str, offering: Option<&str>) -> Delivery {
    Delivery::Ignored {
        event_type: event_type.to_owned(),
        reason: format!(
            "offering {:?} is not handled by this webhook",
            offering.unwrap_or_default()
        ),
    }
}

/// A context field that must be text when present; empty text counts as absent.
fn text<'a>(
    context: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, PayloadError> {
    match context.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t.trim()).filter(|t| !t.is_empty())),
        Some(other) => Err(PayloadError::InvalidField {
            path: format!("context.{key}"),
            problem: format!(
                "expected a string, got {}",
                crate::payload::json_kind(other)
            ),
        }),
    }
}

fn invalid(path: &str, expected: &str, got: &Value) -> PayloadError {
    PayloadError::InvalidField {
        path: path.to_owned(),
        problem: format!(
            "expected {expected}, got {}",
            crate::payload::json_kind(got)
        ),
    }
}

/// Waldur bookings have no end: releases come with terminations. The sweeper never sees
/// this end pass.
pub fn open_end() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).expect("9999-12-31T23:59:59Z is a valid time")
}

/// Waldur names resources by UUID; the ledger keys resources by number. Each booking gets a
/// stable positive number of its own (FNV-1a of its key), so Waldur bookings never wait for
/// each other's calls.
pub fn resource_number(key: &str) -> i64 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash & i64::MAX as u64).max(1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(raw: RawSettings) -> Result<Option<Settings>, String> {
        Settings::check(raw, "Switch Port")
    }

    #[test]
    fn the_endpoint_is_off_without_a_token_or_an_allow_list_and_says_so_when_half_set() {
        assert!(settings(RawSettings::default()).unwrap().is_none());
        let err = settings(RawSettings {
            trusted_proxies: Some("10.0.0.1".into()),
            ..RawSettings::default()
        })
        .unwrap_err();
        assert!(err.starts_with("WALDUR_TRUSTED_PROXIES is set"), "{err}");
    }

    #[test]
    fn defaults_apply_and_an_event_type_cannot_both_configure_and_release() {
        let on = || RawSettings {
            allowed_cidrs: Some("10.0.0.0/8".into()),
            ..RawSettings::default()
        };
        let s = settings(on()).unwrap().unwrap();
        assert_eq!(s.configure_events, ["marketplace_order_completed"]);
        assert_eq!(s.release_events.len(), 2);
        assert_eq!(s.resource_type, "Switch Port");
        let err = settings(RawSettings {
            configure_events: Some("a, b".into()),
            release_events: Some("b".into()),
            ..on()
        })
        .unwrap_err();
        assert!(err.starts_with("WALDUR_RELEASE_EVENTS: b"), "{err}");
    }

    #[test]
    fn the_waldur_endpoint_is_on_with_a_token_from_a_file_or_an_allow_list() {
        let c = Config::from_vars([("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long")])
            .unwrap();
        assert!(c.waldur.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "waldur-token\n").unwrap();
        let c = Config::from_vars([
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
                Config::from_vars([
                    ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"),
                    ("WALDUR_TOKEN", "hunter2")
                ])
                .unwrap()
            )
            .contains("hunter2")
        );
        let c = Config::from_vars([
            ("WEBHOOK_SECRET", "test-secret-of-at-least-32-bytes-long"),
            ("WALDUR_ALLOWED_CIDRS", "192.0.2.0/24"),
        ]);
        assert!(c.unwrap().waldur.unwrap().token.is_none());
    }

    #[test]
    fn resource_numbers_are_stable_positive_and_distinct() {
        assert_eq!(resource_number("4f7a9c"), resource_number("4f7a9c"));
        assert_ne!(resource_number("4f7a9c"), resource_number("4f7a9d"));
        assert!(resource_number("") > 0);
    }
}
