//! A Waldur delivery's body, read with the keys Waldur really sends: which booking it is
//! (`resource_uuid`), what the order asks (`order_get_type_display`, or `type`), who bought
//! it (`created_by_*`, else `user_*`) and the buyer's form values (`order_attributes`).
//!
//! Waldur writes its context field by field from its models: UUIDs as 32 hex digits, `None`
//! and `False` as the strings `"None"` and `"False"`. Every event it could have sent gets a
//! [`Delivery`]; only a body that is not a Waldur event at all is an error.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Settings;
use crate::contract::payload::{Action, PayloadError, json_kind};
use crate::contract::reservation::{Parameters, Reservation, Resource, User};
use crate::contract::same_name;

/// Booking ids from Waldur start with this, so they never meet the reservation system's.
pub const BOOKING_PREFIX: &str = "waldur-";

/// Why a form-encoded delivery is acknowledged and not acted on.
const FORM_ENCODED: &str = "Waldur's form content type sends only the context's key names, \
    not their values: nothing can be configured or released from it; set the web hook's \
    content type to JSON";

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
    /// An event that asks for nothing: offered to the manager's hook, else ignored with
    /// `reason`.
    Other { event_type: String, reason: String },
    /// An event for another offering, or one that cannot be acted on: acknowledged and
    /// ignored with `reason`.
    Ignored { event_type: String, reason: String },
}

/// What an order asks for (`order_get_type_display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Update,
    Terminate,
}

/// Parses a Waldur body sent with `content_type`. Errors only for a body that is not a
/// Waldur event (not JSON or a form, no `event_type`); any Waldur event is a [`Delivery`].
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
    s: &Settings,
) -> Result<Delivery, PayloadError> {
    let form = content_type.is_some_and(|t| {
        let t = t.trim_start().to_ascii_lowercase();
        t.starts_with("application/x-www-form-urlencoded") || t.starts_with("multipart/form-data")
    });
    if let Some(event_type) = form_event_type(body).filter(|_| form || !body.starts_with(b"{")) {
        return Ok(Delivery::Ignored {
            event_type,
            reason: FORM_ENCODED.into(),
        });
    }
    let map = crate::contract::payload::object(body).map_err(|e| match e {
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
    let ignored = |reason: String| Delivery::Ignored {
        event_type: event_type.to_owned(),
        reason: format!("{event_type} ignored: {reason}"),
    };
    match booking(&map, event_type, action, static_type, s) {
        Ok(delivery) => Ok(delivery),
        Err(reason) => Ok(ignored(reason)),
    }
}

/// A listed event as a booking, or why it cannot be one.
fn booking(
    map: &Map<String, Value>,
    event_type: &str,
    action: Action,
    static_type: &'static str,
    s: &Settings,
) -> Result<Delivery, String> {
    let context = match map.get("context") {
        Some(Value::Object(context)) => context,
        None | Some(Value::Null) => return Err("missing field context".into()),
        Some(other) => {
            return Err(format!(
                "field context: expected an object, got {}",
                json_kind(other)
            ));
        }
    };
    let field = |key: &'static str| text(context, key);
    let (offering_uuid, offering_name) = (field("offering_uuid")?, field("offering_name")?);
    if offering_uuid.or(offering_name).is_none() {
        return Err("the context names no offering (offering_uuid or offering_name)".into());
    }
    if !ours(offering_uuid, offering_name, s) {
        return Ok(not_ours(event_type, offering_name.or(offering_uuid)));
    }
    let kind = field("order_get_type_display")?.or(field("type")?);
    let action = match (action, kind.map(kind_of)) {
        (_, None | Some(Some(Kind::Create))) => action,
        (_, Some(Some(Kind::Terminate))) => Action::Release,
        (_, Some(Some(Kind::Update) | None)) => {
            return Ok(Delivery::Other {
                event_type: event_type.to_owned(),
                reason: format!(
                    "{event_type} of an order of type {:?} needs no action",
                    kind.unwrap_or_default()
                ),
            });
        }
    };
    let key = field("resource_uuid")?.ok_or(
        "the context names no resource (resource_uuid): there is no booking to configure or \
         release",
    )?;
    let created = match map.get("created") {
        None | Some(Value::Null) => Utc::now(),
        Some(value) => serde_json::from_value::<DateTime<Utc>>(value.clone()).map_err(|_| {
            format!(
                "field created: expected an RFC 3339 date and time, got {}",
                json_kind(value)
            )
        })?,
    };
    // The buyer; `user_*` names whoever made the request behind the event (an approver, an
    // agent), so it stands in only when the order names no buyer.
    let (user_id, username) = match field("created_by_uuid")? {
        Some(id) => (Some(id), field("created_by_username")?),
        None => (field("user_uuid")?, field("user_username")?),
    };
    let attributes = |key| match context.get(key) {
        Some(Value::Object(values)) => Some(values),
        _ => None,
    };
    let resource_name = field("resource_name")?
        .or_else(|| attributes("order_attributes")?.get("name")?.as_str())
        .filter(|n| !n.trim().is_empty());
    let reservation = Reservation {
        event_id: format!("{BOOKING_PREFIX}{key}"),
        user: User {
            // Empty only for an event with no buyer and no requester: a resource event from
            // background work. A release needs no user (the ledger has the booking's).
            id: user_id.unwrap_or_default().to_owned(),
            username: username.map(str::to_owned),
            email: None,
            ssh_public_key: None,
        },
        resource: Resource {
            id: resource_number(key),
            name: resource_name
                .or(offering_name)
                .unwrap_or(&s.resource_type)
                .to_owned(),
            kind: offering_name.unwrap_or(&s.resource_type).to_owned(),
            specs: None,
            location: None,
        },
        site: None,
        title: resource_name.map(str::to_owned),
        description: map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
        start: created,
        end: open_end(),
        parameters: Parameters::parse(Some(&Value::Object(parameters(context))))?,
    };
    Ok(Delivery::Booking {
        action,
        event_type: static_type,
        reservation,
    })
}

/// The manager's parameters: the context's own fields, typed, under the resource's
/// attributes, under the buyer's form values (`order_attributes`), which win.
fn parameters(context: &Map<String, Value>) -> Map<String, Value> {
    let mut values: Map<String, Value> = context
        .iter()
        .filter(|(k, _)| *k != "order_attributes" && *k != "resource_attributes")
        .filter_map(|(k, v)| Some((k.clone(), typed(v)?)))
        .collect();
    for key in ["resource_attributes", "order_attributes"] {
        if let Some(Value::Object(attributes)) = context.get(key) {
            values.extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    values
}

/// A context value as its model had it: `"None"` is absent, `"True"`/`"False"` are booleans.
fn typed(value: &Value) -> Option<Value> {
    match value.as_str() {
        Some("None") => None,
        Some("True") => Some(Value::Bool(true)),
        Some("False") => Some(Value::Bool(false)),
        _ => Some(value.clone()),
    }
}

fn kind_of(text: &str) -> Option<Kind> {
    [
        ("create", Kind::Create),
        ("update", Kind::Update),
        ("terminate", Kind::Terminate),
    ]
    .into_iter()
    .find(|(name, _)| text.eq_ignore_ascii_case(name))
    .map(|(_, kind)| kind)
}

/// Whether the offering is `WALDUR_RESOURCE_TYPE`, by name or by UUID (with or without
/// dashes).
fn ours(uuid: Option<&str>, name: Option<&str>, s: &Settings) -> bool {
    let hex = |t: &str| t.replace('-', "").to_ascii_lowercase();
    name.is_some_and(|n| same_name(n, &s.resource_type))
        || uuid.is_some_and(|u| hex(u) == hex(s.resource_type.trim()))
}

/// An event type outside the lists: for the hook, unless it names another offering.
fn other(map: &Map<String, Value>, event_type: &str, s: &Settings) -> Delivery {
    let named = |key| map.get("context")?.get(key)?.as_str();
    let (uuid, name) = (named("offering_uuid"), named("offering_name"));
    if uuid.or(name).is_some() && !ours(uuid, name, s) {
        return not_ours(event_type, name.or(uuid));
    }
    let reason = if event_type == "marketplace_order_terminated" {
        "marketplace_order_terminated means the order was cancelled: the resource stays as it \
         was, nothing is released"
            .to_owned()
    } else {
        format!("Waldur event type {event_type:?} is not handled by this webhook")
    };
    Delivery::Other {
        event_type: event_type.to_owned(),
        reason,
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

/// The `event_type` of a form-encoded body (`a=b&c=d`), if it is one.
fn form_event_type(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "event_type")
        .map(|(_, value)| value.to_owned())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// A context field that must be text when present; empty text and `"None"` count as absent.
fn text<'a>(context: &'a Map<String, Value>, key: &'static str) -> Result<Option<&'a str>, String> {
    match context.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t.trim()).filter(|t| !t.is_empty() && *t != "None")),
        Some(other) => Err(format!(
            "field context.{key}: expected a string, got {}",
            json_kind(other)
        )),
    }
}

fn invalid(path: &str, expected: &str, got: &Value) -> PayloadError {
    PayloadError::InvalidField {
        path: path.to_owned(),
        problem: format!("expected {expected}, got {}", json_kind(got)),
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
    use serde_json::json;

    #[test]
    fn context_strings_none_and_false_read_as_absent_and_false() {
        let context = json!({
            "project_end_date": "None",
            "created_by_is_staff": "False",
            "order_attributes": {"vlan_id": "100"},
            "resource_attributes": {"vlan_id": "99", "ports": 2},
        });
        let p = parameters(context.as_object().unwrap());
        assert_eq!(p.get("project_end_date"), None);
        assert_eq!(p["created_by_is_staff"], json!(false));
        assert_eq!(p["vlan_id"], "100", "the buyer's value wins");
        assert_eq!(p["ports"], 2);
        let map = json!({"resource_uuid": "None"});
        assert_eq!(text(map.as_object().unwrap(), "resource_uuid"), Ok(None));
    }

    #[test]
    fn a_form_body_is_recognised_by_its_event_type() {
        let form = b"created=2026&context=order_uuid&event_type=marketplace_order_completed";
        assert_eq!(
            form_event_type(form).as_deref(),
            Some("marketplace_order_completed")
        );
        assert_eq!(form_event_type(b"not json"), None);
        assert_eq!(form_event_type(br#"{"event_type":"x"}"#), None);
    }

    #[test]
    fn resource_numbers_are_stable_positive_and_distinct() {
        assert_eq!(resource_number("4f7a9c"), resource_number("4f7a9c"));
        assert_ne!(resource_number("4f7a9c"), resource_number("4f7a9d"));
        assert!(resource_number("") > 0);
    }
}
