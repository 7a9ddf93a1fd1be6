//! The bodies `conformance` sends: the senders' fixtures (bundled with the crate, so an
//! installed binary has them), with every id, name, user, resource type and time made
//! fresh, so that no delivery names a real booking or resource and every signed timestamp
//! is now.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

const START: &str = include_str!("../../../fixtures/events/event_start.json");
const START_MINIMAL: &str = include_str!("../../../fixtures/events/event_start_minimal.json");
const START_OTHER_TYPE: &str = include_str!("../../../fixtures/events/event_start_other_type.json");
const END: &str = include_str!("../../../fixtures/events/event_end.json");
const BATCH: &str = include_str!("../../../fixtures/events/batch_start.json");
const CREATED: &str = include_str!("../../../fixtures/events/event_created.json");
const UPDATED: &str = include_str!("../../../fixtures/events/event_updated_extended.json");
const DELETED: &str = include_str!("../../../fixtures/events/event_deleted.json");
const RESOURCE_STATUS_CHANGED: &str =
    include_str!("../../../fixtures/events/resource_status_changed.json");
const RESOURCE_DELETED: &str = include_str!("../../../fixtures/events/resource_deleted.json");
const PING: &str = include_str!("../../../fixtures/events/test_event.json");
const FUTURE_EVENT_TYPE: &str = include_str!("../../../fixtures/events/future_event_type.json");

/// The user every test booking belongs to.
const USER: &str = "conformance-test-user";
/// The webhook id in every body: none the back end knows, so that reports a webhook sends
/// about test bookings are refused there rather than recorded.
const WEBHOOK_ID: i64 = 0;

/// Which fixture a flat START is built from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Flat {
    /// `event_start.json`: every field the event processor sends.
    Full,
    /// `event_start_minimal.json`: only the fields it always sends.
    Minimal,
    /// `event_start_other_type.json`: a booking of a resource of another type.
    OtherType,
}

/// A test booking: what its START and END carry.
#[derive(Debug, Clone)]
pub(super) struct Booking {
    /// `conformance-<run>-<n>`.
    pub id: String,
    pub resource_id: i64,
    /// `conformance-test-<run>-<n>`.
    pub resource_name: String,
    pub resource_type: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The fixture its START is built from (its END is `event_end.json`).
    pub flat: Flat,
}

/// A nested event's booking or resource: an id in the back end's numbering, which no real
/// booking or resource has.
#[derive(Debug, Clone)]
pub(super) struct Numbered {
    pub id: i64,
    pub resource_id: i64,
    pub resource_name: String,
    pub resource_type: String,
}

/// Times as the senders write them: UTC, milliseconds, `Z`.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("the bundled fixtures are JSON")
}

/// Sets `key` only where the fixture has it, so a minimal body stays minimal.
fn replace(v: &mut Value, key: &str, value: impl Into<Value>) {
    if let Some(slot) = v.get_mut(key) {
        *slot = value.into();
    }
}

/// The per-booking fields of the flat shape (and of each element of a batch).
fn booking_fields(v: &mut Value, b: &Booking) {
    v["eventId"] = b.id.clone().into();
    v["eventStart"] = time(b.start).into();
    v["eventEnd"] = time(b.end).into();
    v["resourceId"] = b.resource_id.into();
    v["resourceName"] = b.resource_name.clone().into();
    v["resourceType"] = b.resource_type.clone().into();
    replace(v, "eventTitle", "conformance test");
    replace(
        v,
        "eventDescription",
        "a test booking of the conformance command",
    );
}

/// The user fields at the top of the flat and the batched shapes.
fn user_fields(v: &mut Value) {
    v["userId"] = USER.into();
    replace(v, "username", "conformance-test");
    replace(v, "email", "conformance-test@example.invalid");
    // The fixture's key (no one holds its private half), with a comment of its own.
    let key = v.get("sshPublicKey").and_then(Value::as_str).map(|k| {
        let kind_and_key: Vec<&str> = k.split_whitespace().take(2).collect();
        format!("{} conformance-test", kind_and_key.join(" "))
    });
    if let Some(key) = key {
        v["sshPublicKey"] = key.into();
    }
}

fn flat(fixture_text: &str, b: &Booking, now: DateTime<Utc>) -> Value {
    let mut v = fixture(fixture_text);
    v["timestamp"] = time(now).into();
    v["webhookId"] = WEBHOOK_ID.into();
    user_fields(&mut v);
    booking_fields(&mut v, b);
    v
}

/// The flat `EVENT_START` of `b`.
pub(super) fn start(b: &Booking, now: DateTime<Utc>) -> Value {
    let text = match b.flat {
        Flat::Full => START,
        Flat::Minimal => START_MINIMAL,
        Flat::OtherType => START_OTHER_TYPE,
    };
    flat(text, b, now)
}

/// The flat `EVENT_END` of `b`.
pub(super) fn end(b: &Booking, now: DateTime<Utc>) -> Value {
    flat(END, b, now)
}

/// A START or END batched per user (event processors 0.1.12–0.1.17): one element per
/// booking, and `active` among the user's other bookings in progress.
pub(super) fn batch(
    event_type: &str,
    bookings: &[&Booking],
    active: &Booking,
    now: DateTime<Utc>,
) -> Value {
    let mut v = fixture(BATCH);
    v["eventType"] = event_type.into();
    v["timestamp"] = time(now).into();
    v["webhookId"] = WEBHOOK_ID.to_string().into();
    user_fields(&mut v);
    let element = v["events"][0].clone();
    let of = |b: &Booking| {
        let mut e = element.clone();
        booking_fields(&mut e, b);
        e
    };
    v["eventCount"] = bookings.len().into();
    v["events"] = bookings.iter().map(|b| of(b)).collect();
    v["activeResources"] = json!([of(active)]);
    v
}

/// The top of a nested event: a fresh timestamp, and the back end's string `webhookId`.
fn nested(fixture_text: &str, now: DateTime<Utc>) -> Value {
    let mut v = fixture(fixture_text);
    v["timestamp"] = time(now).into();
    v["webhookId"] = WEBHOOK_ID.to_string().into();
    v
}

/// The resource of a nested event's `data` (or `data` itself for a RESOURCE_* event).
fn resource_fields(r: &mut Value, n: &Numbered) {
    r["id"] = n.resource_id.into();
    r["name"] = n.resource_name.clone().into();
    r["type"]["name"] = n.resource_type.clone().into();
}

/// Which reservation event of the back end.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reservation {
    Created,
    Updated,
    Deleted,
}

/// `EVENT_CREATED`, `EVENT_UPDATED` (a longer booking) or `EVENT_DELETED` of a booking
/// that starts tomorrow: nothing was ever sent for it, so there is nothing to do now.
pub(super) fn reservation(kind: Reservation, n: &Numbered, now: DateTime<Utc>) -> Value {
    let (text, hours) = match kind {
        Reservation::Created => (CREATED, 1),
        Reservation::Updated => (UPDATED, 2),
        Reservation::Deleted => (DELETED, 1),
    };
    let mut v = nested(text, now);
    let start = now + Duration::days(1);
    let data = &mut v["data"];
    data["id"] = n.id.into();
    data["start"] = time(start).into();
    data["end"] = time(start + Duration::hours(hours)).into();
    data["keycloakId"] = USER.into();
    replace(data, "title", "conformance test");
    replace(
        data,
        "description",
        "a test booking of the conformance command",
    );
    replace(data, "createdAt", time(now));
    replace(data, "updatedAt", time(now));
    if let Some(map) = data.as_object_mut() {
        // Never started: the back end has not sent START for it.
        map.remove("startNotifiedAt");
    }
    resource_fields(&mut data["resource"], n);
    v
}

/// `RESOURCE_STATUS_CHANGED` (`deleted: false`) or `RESOURCE_DELETED` of a resource that
/// no booking has.
pub(super) fn resource(deleted: bool, n: &Numbered, now: DateTime<Utc>) -> Value {
    let text = if deleted {
        RESOURCE_DELETED
    } else {
        RESOURCE_STATUS_CHANGED
    };
    let mut v = nested(text, now);
    resource_fields(&mut v["data"], n);
    v
}

/// The admin's test ping (`ALL`).
pub(super) fn ping(now: DateTime<Utc>) -> Value {
    let mut v = nested(PING, now);
    v["data"]["timestamp"] = time(now).into();
    v["data"]["webhookId"] = WEBHOOK_ID.into();
    v
}

/// An event type a later sender may send.
pub(super) fn future_event_type(n: &Numbered, now: DateTime<Utc>) -> Value {
    let mut v = nested(FUTURE_EVENT_TYPE, now);
    v["data"]["id"] = n.id.into();
    v
}

/// A nested event whose entity the back end could not serialise: `data` is a string.
pub(super) fn data_string(now: DateTime<Utc>) -> Value {
    let mut v = nested(DELETED, now);
    v["data"] =
        "Payload serialization failed due to detached entity. Event type: EVENT_DELETED".into();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBERED: i64 = 8_000_000_000_000_000;

    #[test]
    fn no_body_keeps_a_fixture_id_name_user_or_time() {
        let now = Utc::now();
        let booking = |flat| Booking {
            id: "conformance-abc-1".into(),
            resource_id: 8_000_000_000_000_001,
            resource_name: "conformance-test-abc-1".into(),
            resource_type: "Switch Port".into(),
            start: now,
            end: now + Duration::minutes(30),
            flat,
        };
        let n = Numbered {
            id: 8_000_000_000_000_002,
            resource_id: 8_000_000_000_000_002,
            resource_name: "conformance-test-abc-2".into(),
            resource_type: "Switch Port".into(),
        };
        let (full, minimal, other) = (
            booking(Flat::Full),
            booking(Flat::Minimal),
            booking(Flat::OtherType),
        );
        let bodies = [
            start(&full, now),
            start(&minimal, now),
            start(&other, now),
            end(&full, now),
            batch("EVENT_START", &[&full, &other], &minimal, now),
            reservation(Reservation::Created, &n, now),
            reservation(Reservation::Updated, &n, now),
            reservation(Reservation::Deleted, &n, now),
            resource(false, &n, now),
            resource(true, &n, now),
            ping(now),
            future_event_type(&n, now),
            data_string(now),
        ];
        for body in bodies {
            let text = body.to_string();
            let stale = [
                "sw1-port", "gpu-node", "alice", "bob", "5f0c", "0d7e", "\"103\"",
            ];
            for stale in stale {
                assert!(!text.contains(stale), "{stale} in {text}");
            }
            assert!(body["webhookId"] == 0 || body["webhookId"] == "0", "{text}");
            let data = &body["data"];
            assert!(
                data.get("id").is_none_or(|id| id.as_i64() > Some(NUMBERED)),
                "{text}"
            );
            assert_eq!(body["timestamp"], time(now), "{text}");
            assert!(body.get("startNotifiedAt").is_none());
        }
    }
}
