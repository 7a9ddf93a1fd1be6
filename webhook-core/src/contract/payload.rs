//! Turns a verified raw body into a [`Delivery`]: a booking to act on, an event for the
//! manager's hook, or a reason to ignore it.
//!
//! The sender uses three shapes: START/END are flat (`eventId`, `resourceType`, ...) or, from
//! event processors 0.1.12–0.1.17, batched per user (`events[]`, user fields at the top);
//! everything the back end sends itself is nested (`{eventType, timestamp, webhookId, data}`).
//! The body is parsed once; `data` is kept as raw JSON and read only for the events that act
//! on bookings (`EVENT_DELETED`, `EVENT_UPDATED`, `RESOURCE_DELETED`), so a future event type
//! with an unexpected `data` is still recognised and ignored, and so is a `data` the sender
//! could not serialise (a string). Ids arrive as strings or numbers depending on the shape,
//! and both are accepted.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::contract::reservation::{Parameters, Reservation, Resource, Site, User};

/// Why a body was refused; always a 400 whose message names the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is empty")]
    Empty,
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("field {path}: {problem}")]
    InvalidField { path: String, problem: String },
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("{0}")]
    InvalidParameters(String),
}

impl PayloadError {
    /// The same problem, said of element `index` of a batch's `events`.
    fn in_batch(self, index: usize) -> String {
        match self {
            PayloadError::MissingField(f) => format!("events[{index}]: missing field {f}"),
            other => format!("events[{index}]: {other}"),
        }
    }
}

/// What to do with a booking event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `EVENT_START`: configure the resource.
    Configure,
    /// `EVENT_END`: release it.
    Release,
    /// `EVENT_DELETED`: release it if the booking is active; a future booking needs nothing.
    ReleaseIfActive,
    /// `EVENT_UPDATED` of a booking of this type: apply its new end, resource or owner.
    Update,
    /// `EVENT_UPDATED` that moved a booking to a resource of another type: release it if
    /// this webhook holds it.
    MovedAway,
}

impl Action {
    /// The reservation system's event type that asks for this.
    pub fn event_type(self) -> &'static str {
        match self {
            Action::Configure => "EVENT_START",
            Action::Release => "EVENT_END",
            Action::ReleaseIfActive => "EVENT_DELETED",
            Action::Update | Action::MovedAway => "EVENT_UPDATED",
        }
    }
}

/// A parsed delivery.
// Lives for one request and is moved once; boxing the large variant would only add an
// allocation to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A START, END, DELETED or UPDATED event for this webhook's resource type.
    Booking {
        action: Action,
        reservation: Reservation,
        /// The central system's id of this webhook, used when reporting back.
        webhook_id: Option<String>,
        /// DELETED only: whether the sender says it had sent START for this booking.
        start_notified: bool,
        /// When the sender says it sent the event (the signed `timestamp`).
        sent_at: Option<DateTime<Utc>>,
    },
    /// START or END batched per user: one result per element of `events`.
    Batch {
        action: Action,
        webhook_id: Option<String>,
        sent_at: Option<DateTime<Utc>>,
        items: Vec<BatchItem>,
    },
    /// `RESOURCE_DELETED` of a resource of this webhook's type: its bookings are gone.
    ResourceDeleted {
        resource_id: i64,
        webhook_id: Option<String>,
        sent_at: Option<DateTime<Utc>>,
    },
    /// Any other event type: offered to the manager's
    /// [hook](crate::manager::ResourceManager::on_event), and ignored with `reason` when the
    /// hook does not handle it.
    Other { event_type: String, reason: String },
    /// A booking event for another resource type: answered 2xx with the reason, never acted on.
    Ignored { event_type: String, reason: String },
}

/// One element of a batched START or END.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// The element's `eventId`, or its position when it has none.
    pub event_id: String,
    /// The booking, or why this webhook does not act on it (another resource type, or a
    /// malformed element).
    pub booking: Result<Reservation, String>,
}

/// Parses a body. `ours` tells whether a resource type's display name is this webhook's.
pub fn parse(body: &[u8], ours: impl Fn(&str) -> bool) -> Result<Delivery, PayloadError> {
    if body.trim_ascii().is_empty() {
        return Err(PayloadError::Empty);
    }
    let mut wire: Wire<'_> = match from_slice(body) {
        Ok(wire) => wire,
        Err(err) => return classify_failure(body, err),
    };
    let action = match wire.event_type.as_str() {
        "EVENT_START" => Action::Configure,
        "EVENT_END" => Action::Release,
        "EVENT_DELETED" => Action::ReleaseIfActive,
        "EVENT_UPDATED" => Action::Update,
        "RESOURCE_DELETED" => return resource_deleted(wire, ours),
        other => {
            let reason = ignore_reason(other);
            return Ok(Delivery::Other {
                event_type: wire.event_type,
                reason,
            });
        }
    };
    let webhook_id = wire.webhook_id.take().map(|id| id.0);
    let sent_at = wire.timestamp;
    if matches!(action, Action::ReleaseIfActive | Action::Update) {
        let Some(data) = nested_data(&wire)? else {
            return Ok(unreadable_data(wire.event_type));
        };
        let booking: WireBooking =
            from_slice(data.get().as_bytes()).map_err(|e| e.within("data"))?;
        let kind = &booking.resource.kind.name;
        let action = match (action, ours(kind)) {
            (_, true) => action,
            (Action::Update, false) => Action::MovedAway,
            (_, false) => return Ok(not_ours(wire.event_type, kind)),
        };
        let start_notified = booking.start_notified_at.is_some();
        return Ok(Delivery::Booking {
            action,
            reservation: booking.into_reservation(),
            webhook_id,
            start_notified,
            sent_at,
        });
    }
    if let Some(events) = wire.events.take() {
        let user = wire.user();
        let items = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| batch_item(i, e, &user, &ours))
            .collect();
        return Ok(Delivery::Batch {
            action,
            webhook_id,
            sent_at,
            items,
        });
    }
    let kind = wire
        .resource_type
        .as_deref()
        .ok_or(PayloadError::MissingField("resourceType"))?;
    if !ours(kind) {
        return Ok(not_ours(wire.event_type, kind));
    }
    let user = wire.user()?;
    Ok(Delivery::Booking {
        action,
        reservation: wire.item().into_reservation(user)?,
        webhook_id,
        start_notified: false,
        sent_at,
    })
}

/// `data` of a nested event; `None` when the sender could not serialise the entity and sent
/// a string in its place.
fn nested_data<'a>(wire: &Wire<'a>) -> Result<Option<&'a RawValue>, PayloadError> {
    let data = wire.data.ok_or(PayloadError::MissingField("data"))?;
    Ok((!data.get().starts_with('"')).then_some(data))
}

fn unreadable_data(event_type: String) -> Delivery {
    Delivery::Ignored {
        reason: format!(
            "{event_type} carries no booking (the sender could not serialise it): nothing to do"
        ),
        event_type,
    }
}

fn batch_item(
    index: usize,
    e: WireEvent,
    user: &Result<User, PayloadError>,
    ours: &impl Fn(&str) -> bool,
) -> BatchItem {
    let event_id = e
        .event_id
        .as_ref()
        .map_or_else(|| format!("events[{index}]"), |id| id.0.clone());
    let booking = match (e.resource_type.as_deref(), user) {
        (None, _) => Err(PayloadError::MissingField("resourceType").in_batch(index)),
        (Some(kind), _) if !ours(kind) => Err(format!(
            "resource type {kind:?} is not handled by this webhook"
        )),
        (_, Err(e)) => Err(e.to_string()),
        (_, Ok(user)) => e
            .into_reservation(user.clone())
            .map_err(|err| err.in_batch(index)),
    };
    BatchItem { event_id, booking }
}

/// `RESOURCE_DELETED`: the back end deleted every booking of the resource with it.
fn resource_deleted(wire: Wire<'_>, ours: impl Fn(&str) -> bool) -> Result<Delivery, PayloadError> {
    let Some(data) = nested_data(&wire)? else {
        return Ok(unreadable_data(wire.event_type));
    };
    let resource: WireResource = from_slice(data.get().as_bytes()).map_err(|e| e.within("data"))?;
    if !ours(&resource.kind.name) {
        return Ok(not_ours(wire.event_type, &resource.kind.name));
    }
    Ok(Delivery::ResourceDeleted {
        resource_id: resource.id.0,
        webhook_id: wire.webhook_id.map(|id| id.0),
        sent_at: wire.timestamp,
    })
}

fn not_ours(event_type: String, kind: &str) -> Delivery {
    Delivery::Ignored {
        reason: format!("resource type {kind:?} is not handled by this webhook"),
        event_type,
    }
}

fn ignore_reason(event_type: &str) -> String {
    match event_type {
        "ALL" => "test event received".to_owned(),
        "EVENT_CREATED" => format!("{event_type} needs no action"),
        t if t.starts_with("RESOURCE_") => format!("{event_type} needs no action"),
        _ => format!("event type {event_type:?} is not handled by this webhook"),
    }
}

/// A failed parse of the whole body: say whether it was JSON at all, or which field was wrong.
/// An unrecognised event type whose fields have unexpected types is still offered to the hook,
/// not refused.
fn classify_failure(body: &[u8], err: FieldError) -> Result<Delivery, PayloadError> {
    let map = object(body)?;
    match map.get("eventType") {
        Some(Value::String(t))
            if !matches!(
                t.as_str(),
                "EVENT_START"
                    | "EVENT_END"
                    | "EVENT_DELETED"
                    | "EVENT_UPDATED"
                    | "RESOURCE_DELETED"
            ) =>
        {
            Ok(Delivery::Other {
                event_type: t.clone(),
                reason: ignore_reason(t),
            })
        }
        _ => Err(err.into()),
    }
}

/// Reads a body that must be a JSON object, saying what it is when it is not.
pub(crate) fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, PayloadError> {
    if body.trim_ascii().is_empty() {
        return Err(PayloadError::Empty);
    }
    match serde_json::from_slice::<Value>(body) {
        Err(e) => Err(PayloadError::InvalidJson(e.to_string())),
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(PayloadError::NotAnObject(json_kind(&other))),
    }
}

/// The kind of a JSON value, with its article, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Object(_) => "an object",
        Value::Null => "null",
    }
}

/// A deserialization failure with the path of the offending field.
struct FieldError {
    path: String,
    problem: String,
}

impl FieldError {
    fn within(self, parent: &str) -> PayloadError {
        let path = if self.path == "." {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.path)
        };
        FieldError { path, ..self }.into()
    }
}

impl From<FieldError> for PayloadError {
    fn from(e: FieldError) -> Self {
        // serde reports a missing field at the parent's path, naming it in the message.
        if e.path == "." {
            PayloadError::InvalidField {
                path: "body".into(),
                problem: e.problem,
            }
        } else {
            PayloadError::InvalidField {
                path: e.path,
                problem: e.problem,
            }
        }
    }
}

fn from_slice<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| FieldError {
        path: e.path().to_string(),
        problem: strip_position(e.inner()),
    })?;
    de.end().map_err(|e| FieldError {
        path: ".".into(),
        problem: e.to_string(),
    })?;
    Ok(value)
}

/// serde_json appends "at line 1 column 57" to messages, which means little to a sender.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Every shape in one struct: the flat fields of START/END, `events` of a batch, and `data`
/// for the nested ones.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    event_type: String,
    timestamp: Option<DateTime<Utc>>,
    event_id: Option<IdText>,
    webhook_id: Option<IdText>,
    user_id: Option<String>,
    username: Option<String>,
    email: Option<String>,
    ssh_public_key: Option<String>,
    event_title: Option<String>,
    event_description: Option<String>,
    event_start: Option<DateTime<Utc>>,
    event_end: Option<DateTime<Utc>>,
    custom_parameters: Option<Value>,
    resource_id: Option<IdNumber>,
    resource_name: Option<String>,
    resource_type: Option<String>,
    resource_specs: Option<String>,
    resource_location: Option<String>,
    site_id: Option<IdText>,
    site_name: Option<String>,
    events: Option<Vec<WireEvent>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

impl Wire<'_> {
    /// The user fields, at the top of the flat and the batched shapes.
    fn user(&self) -> Result<User, PayloadError> {
        Ok(User {
            id: self
                .user_id
                .clone()
                .ok_or(PayloadError::MissingField("userId"))?,
            username: self.username.clone(),
            email: self.email.clone(),
            ssh_public_key: self.ssh_public_key.clone(),
        })
    }

    /// The booking fields of the flat shape.
    fn item(self) -> WireEvent {
        WireEvent {
            event_id: self.event_id,
            event_title: self.event_title,
            event_description: self.event_description,
            event_start: self.event_start,
            event_end: self.event_end,
            custom_parameters: self.custom_parameters,
            resource_id: self.resource_id,
            resource_name: self.resource_name,
            resource_type: self.resource_type,
            resource_specs: self.resource_specs,
            resource_location: self.resource_location,
            site_id: self.site_id,
            site_name: self.site_name,
        }
    }
}

/// One booking's fields in the flat shape, and in each element of a batch's `events`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    event_id: Option<IdText>,
    event_title: Option<String>,
    event_description: Option<String>,
    event_start: Option<DateTime<Utc>>,
    event_end: Option<DateTime<Utc>>,
    custom_parameters: Option<Value>,
    resource_id: Option<IdNumber>,
    resource_name: Option<String>,
    resource_type: Option<String>,
    resource_specs: Option<String>,
    resource_location: Option<String>,
    site_id: Option<IdText>,
    site_name: Option<String>,
}

impl WireEvent {
    fn into_reservation(self, user: User) -> Result<Reservation, PayloadError> {
        use PayloadError::MissingField as Missing;
        Ok(Reservation {
            event_id: self.event_id.ok_or(Missing("eventId"))?.0,
            user,
            resource: Resource {
                id: self.resource_id.ok_or(Missing("resourceId"))?.0,
                name: self.resource_name.ok_or(Missing("resourceName"))?,
                kind: self.resource_type.ok_or(Missing("resourceType"))?,
                specs: self.resource_specs,
                location: self.resource_location,
            },
            site: self.site_id.map(|id| Site {
                id: id.0,
                name: self.site_name,
            }),
            title: self.event_title,
            description: self.event_description,
            start: self.event_start.ok_or(Missing("eventStart"))?,
            end: self.event_end.ok_or(Missing("eventEnd"))?,
            parameters: Parameters::parse_or_keep(self.custom_parameters.as_ref()),
        })
    }
}

/// `data` of EVENT_DELETED and EVENT_UPDATED: the reservation as the back end stores it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBooking {
    id: IdText,
    title: Option<String>,
    description: Option<String>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    keycloak_id: String,
    custom_parameters: Option<Value>,
    start_notified_at: Option<DateTime<Utc>>,
    resource: WireResource,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResource {
    id: IdNumber,
    name: String,
    specs: Option<String>,
    location: Option<String>,
    site_id: Option<IdText>,
    #[serde(rename = "type")]
    kind: WireType,
}

#[derive(Deserialize)]
struct WireType {
    name: String,
}

impl WireBooking {
    /// The booking, with the user's id only: the back end's entity has no name, address or
    /// key.
    fn into_reservation(self) -> Reservation {
        Reservation {
            event_id: self.id.0,
            user: User {
                id: self.keycloak_id,
                username: None,
                email: None,
                ssh_public_key: None,
            },
            resource: Resource {
                id: self.resource.id.0,
                name: self.resource.name,
                kind: self.resource.kind.name,
                specs: self.resource.specs,
                location: self.resource.location,
            },
            site: self.resource.site_id.map(|id| Site {
                id: id.0,
                name: None,
            }),
            title: self.title,
            description: self.description,
            start: self.start,
            end: self.end,
            parameters: Parameters::parse_or_keep(self.custom_parameters.as_ref()),
        }
    }
}

/// An id the sender writes as a string in one shape and a number in the other.
#[derive(Clone)]
struct IdText(String);

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = IdText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id (string or integer)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdText, E> {
                if v.is_empty() {
                    return Err(E::custom("an id must not be empty"));
                }
                Ok(IdText(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdText, E> {
                Ok(IdText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A numeric id, accepted as an integer or a string of digits.
struct IdNumber(i64);

impl<'de> Deserialize<'de> for IdNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = IdNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer id")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdNumber, E> {
                v.parse()
                    .map(IdNumber)
                    .map_err(|_| E::custom(format!("expected an integer id, got {v:?}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdNumber, E> {
                i64::try_from(v)
                    .map(IdNumber)
                    .map_err(|_| E::custom("id out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdNumber, E> {
                Ok(IdNumber(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch_port(kind: &str) -> bool {
        kind == "Switch Port"
    }

    fn parse_str(body: &str) -> Result<Delivery, PayloadError> {
        parse(body.as_bytes(), switch_port)
    }

    #[test]
    fn ids_are_read_from_strings_and_numbers() {
        assert_eq!(from_slice::<IdText>(b"\"7\"").ok().unwrap().0, "7");
        assert_eq!(from_slice::<IdText>(b"7").ok().unwrap().0, "7");
        assert_eq!(from_slice::<IdNumber>(b"\"42\"").ok().unwrap().0, 42);
        assert!(from_slice::<IdNumber>(b"\"x\"").is_err());
        assert!(from_slice::<IdText>(b"{}").is_err());
    }

    #[test]
    fn a_wrong_field_type_names_the_field() {
        let err = parse_str(r#"{"eventType":"EVENT_START","eventStart":5}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field eventStart: invalid type: integer `5`, expected an RFC 3339 formatted date and time string"
        );
    }

    #[test]
    fn a_missing_resource_type_is_refused() {
        let err = parse_str(r#"{"eventType":"EVENT_END","eventId":"1"}"#).unwrap_err();
        assert_eq!(err, PayloadError::MissingField("resourceType"));
    }

    #[test]
    fn a_deleted_event_without_data_is_refused() {
        let err = parse_str(r#"{"eventType":"EVENT_DELETED"}"#).unwrap_err();
        assert_eq!(err, PayloadError::MissingField("data"));
    }

    #[test]
    fn a_missing_field_inside_data_names_the_path() {
        let err = parse_str(r#"{"eventType":"EVENT_DELETED","data":{"id":1}}"#).unwrap_err();
        assert_eq!(err.to_string(), "field data: missing field `start`");
    }

    #[test]
    fn an_unknown_event_type_with_odd_fields_goes_to_the_hook_not_refused() {
        let d = parse_str(r#"{"eventType":"EVENT_MOVED","eventId":{"a":1}}"#).unwrap();
        assert!(matches!(d, Delivery::Other { .. }), "{d:?}");
    }

    #[test]
    fn a_start_for_another_resource_type_is_ignored_without_the_hook() {
        let d = parse_str(r#"{"eventType":"EVENT_START","resourceType":"Room"}"#).unwrap();
        assert!(matches!(d, Delivery::Ignored { .. }), "{d:?}");
    }

    #[test]
    fn non_objects_and_non_json_are_told_apart() {
        assert_eq!(parse_str("[1]"), Err(PayloadError::NotAnObject("an array")));
        assert_eq!(
            parse_str("\"x\""),
            Err(PayloadError::NotAnObject("a string"))
        );
        assert!(matches!(parse_str("{"), Err(PayloadError::InvalidJson(_))));
        assert!(matches!(
            parse_str("{} x"),
            Err(PayloadError::InvalidJson(_))
        ));
        assert_eq!(parse_str(" \n"), Err(PayloadError::Empty));
    }
}
