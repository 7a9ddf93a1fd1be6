//! What a verified event that is not a booking's start or end looks like to a manager's
//! hook: its sender, type and raw body.

use serde::Deserialize;

/// Which sender an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The reservation system, on `POST /webhook`.
    ReservationSystem,
    /// Waldur's marketplace, on `POST /waldur`.
    Waldur,
}

/// A verified event with no booking action: `EVENT_CREATED`, `EVENT_UPDATED`, `RESOURCE_*`,
/// the `ALL` test ping, event types newer than this webhook, and Waldur events that neither
/// configure nor release.
#[derive(Debug, Clone, Copy)]
pub struct OtherEvent<'a> {
    /// Which sender it came from.
    pub source: Source,
    /// `eventType` (reservation system) or `event_type` (Waldur).
    pub event_type: &'a str,
    /// The raw body as received and verified: JSON.
    pub body: &'a [u8],
    /// The resource type this webhook handles for `source`.
    handled_type: &'a str,
}

impl<'a> OtherEvent<'a> {
    /// An event as the service hands it over; `handled_type` is this webhook's resource type.
    pub fn new(source: Source, event_type: &'a str, body: &'a [u8], handled_type: &'a str) -> Self {
        Self {
            source,
            event_type,
            body,
            handled_type,
        }
    }

    /// Parses the body into `T`, e.g. `serde_json::Value` or a struct of the fields needed.
    pub fn parse<T: Deserialize<'a>>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(self.body)
    }

    /// The resource type the event is about, if it names one: `data.resource.type.name` or
    /// `data.type.name` from the reservation system, `context.offering_name` or
    /// `context.offering_uuid` from Waldur. Parses the body.
    ///
    /// The reservation system's `EVENT_CREATED`, `EVENT_UPDATED` and `RESOURCE_*` events reach
    /// the hook for every resource type; this tells them apart.
    pub fn resource_type(&self) -> Option<String> {
        self.named_types().into_iter().next()
    }

    /// Whether the event is about this webhook's resource type (ignoring case and surrounding
    /// spaces); `None` when it names none, like the `ALL` ping. Parses the body.
    pub fn is_ours(&self) -> Option<bool> {
        let named = self.named_types();
        if named.is_empty() {
            return None;
        }
        Some(
            named
                .iter()
                .any(|t| super::same_name(t, self.handled_type) || self.same_uuid(t)),
        )
    }

    /// Waldur's offering UUID against one written with or without dashes.
    fn same_uuid(&self, uuid: &str) -> bool {
        let hex = |t: &str| t.trim().replace('-', "").to_ascii_lowercase();
        self.source == Source::Waldur && hex(uuid) == hex(self.handled_type)
    }

    fn named_types(&self) -> Vec<String> {
        let Ok(v) = self.parse::<serde_json::Value>() else {
            return Vec::new();
        };
        let pointers: &[&str] = match self.source {
            Source::ReservationSystem => &["/data/resource/type/name", "/data/type/name"],
            Source::Waldur => &["/context/offering_name", "/context/offering_uuid"],
        };
        pointers
            .iter()
            .filter_map(|p| v.pointer(p)?.as_str())
            .map(str::to_owned)
            .collect()
    }
}
