//! The booking a [`ResourceManager`](crate::manager::ResourceManager) acts on.
//!
//! Both wire shapes (the flat START/END events and the nested DELETED event) are turned
//! into this one type by [`payload`](crate::contract::payload), so an implementation never sees
//! which shape a booking arrived in.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One booking of one resource, as the reservation system describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// The reservation's id (`eventId` on START/END, `data.id` on DELETED). The same
    /// booking keeps the same id from START to END, so it is the natural key for
    /// anything the manager creates.
    pub event_id: String,
    /// Who booked it.
    pub user: User,
    /// What was booked.
    pub resource: Resource,
    /// Site of the resource, when the reservation system has sites.
    pub site: Option<Site>,
    /// The booking's title and description, as the user typed them.
    pub title: Option<String>,
    /// The booking's description, as the user wrote it.
    pub description: Option<String>,
    /// When the booking starts and ends. START arrives a few minutes before `start`;
    /// END up to about a minute after `end`, or never.
    pub start: DateTime<Utc>,
    /// When the booking ends.
    pub end: DateTime<Utc>,
    /// The booking's custom parameters. This is user input: validate every value.
    pub parameters: Parameters,
}

/// The user who made the booking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Identity-provider subject id (`userId`, or `keycloakId` on DELETED).
    pub id: String,
    /// The user's name, if the sender gave it.
    pub username: Option<String>,
    /// The user's e-mail address, if the sender gave it.
    pub email: Option<String>,
    /// An OpenSSH public key the user registered, for managers that give shell access.
    pub ssh_public_key: Option<String>,
}

/// The booked resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// The resource's id in the reservation system.
    pub id: i64,
    /// The resource's name in the reservation system, e.g. `sw1-port-3`.
    pub name: String,
    /// The resource type's display name, e.g. `Switch Port`.
    pub kind: String,
    /// What the resource is, as the reservation system describes it.
    pub specs: Option<String>,
    /// Where the resource is.
    pub location: Option<String>,
}

/// The site a resource belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// The site's id.
    pub id: String,
    /// The site's name.
    pub name: Option<String>,
}

/// A booking's custom parameters: a JSON object the sender delivers as JSON text.
///
/// Values are usually strings (`{"vlan_id":"100"}`); [`Parameters::get`] also reads
/// numbers and booleans as text, so `"100"` and `100` mean the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    values: Map<String, Value>,
    raw: Option<String>,
    /// Why the sender's text could not be read, when it could not: the booking is then
    /// refused with this message before any manager call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Parameters {
    /// Parses the sender's `customParameters`: JSON text of an object, an object
    /// itself, or nothing. An empty or whitespace-only string means no parameters.
    pub fn parse(value: Option<&Value>) -> Result<Self, String> {
        match value {
            None | Some(Value::Null) => Ok(Self::default()),
            Some(Value::Object(values)) => Ok(Self {
                values: values.clone(),
                raw: Some(Value::Object(values.clone()).to_string()),
                error: None,
            }),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(Self {
                values: Map::new(),
                raw: Some(text.clone()),
                error: None,
            }),
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(values)) => Ok(Self {
                    values,
                    raw: Some(text.clone()),
                    error: None,
                }),
                Ok(other) => Err(format!(
                    "customParameters must be a JSON object, got {}",
                    json_kind(&other)
                )),
                Err(e) => Err(format!("customParameters is not valid JSON: {e}")),
            },
            Some(other) => Err(format!(
                "customParameters must be a JSON object or JSON text, got {}",
                json_kind(other)
            )),
        }
    }

    /// Like [`Parameters::parse`], but text that is not a JSON object is kept as it came,
    /// with the reason in [`Parameters::error`], instead of refusing the whole event: the
    /// mistake is the user's, and it is the user who must hear of it.
    pub fn parse_or_keep(value: Option<&Value>) -> Self {
        Self::parse(value).unwrap_or_else(|error| Self {
            values: Map::new(),
            raw: match value {
                Some(Value::String(text)) => Some(text.clone()),
                other => other.map(Value::to_string),
            },
            error: Some(error),
        })
    }

    /// Why the sender's `customParameters` could not be read, if they could not.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Builds parameters from key/value pairs, for tests and the `send` command.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let values: Map<String, Value> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        let raw = Value::Object(values.clone()).to_string();
        Self {
            values,
            raw: Some(raw),
            error: None,
        }
    }

    /// The value of `key` as text: strings as they are, numbers and booleans written
    /// out, objects and arrays as JSON text. `None` when absent or `null`.
    pub fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        match self.values.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(Cow::Borrowed(s)),
            other => Some(Cow::Owned(other.to_string())),
        }
    }

    /// The value of `key` as the sender wrote it.
    pub fn get_json(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// All parameters.
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// The parameters exactly as the sender sent them, if it sent any.
    pub fn raw(&self) -> Option<&str> {
        self.raw.as_deref()
    }

    /// Whether the user chose no parameter.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_from_json_text_read_strings_and_numbers_alike() {
        let p = Parameters::parse(Some(&json!("{\"vlan_id\":\"100\",\"cpus\":2}"))).unwrap();
        assert_eq!(p.get("vlan_id").as_deref(), Some("100"));
        assert_eq!(p.get("cpus").as_deref(), Some("2"));
        assert_eq!(p.get("missing"), None);
        assert_eq!(p.raw(), Some("{\"vlan_id\":\"100\",\"cpus\":2}"));
    }

    #[test]
    fn parameters_accept_an_object_empty_text_or_nothing() {
        assert_eq!(
            Parameters::parse(Some(&json!({"a": "b"})))
                .unwrap()
                .get("a")
                .as_deref(),
            Some("b")
        );
        assert!(Parameters::parse(Some(&json!("  "))).unwrap().is_empty());
        assert!(Parameters::parse(None).unwrap().is_empty());
        assert!(Parameters::parse(Some(&Value::Null)).unwrap().is_empty());
    }

    #[test]
    fn parameters_that_cannot_be_read_are_kept_with_the_reason() {
        let p = Parameters::parse_or_keep(Some(&json!("{vlan_id: 100")));
        assert!(p.is_empty());
        assert_eq!(p.raw(), Some("{vlan_id: 100"));
        assert!(
            p.error()
                .unwrap()
                .starts_with("customParameters is not valid JSON"),
            "{p:?}"
        );
        let back: Parameters = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(Parameters::parse_or_keep(Some(&json!("{}"))).error(), None);
    }

    #[test]
    fn parameters_that_are_not_an_object_are_refused_with_the_reason() {
        let err = Parameters::parse(Some(&json!("{not json"))).unwrap_err();
        assert!(
            err.starts_with("customParameters is not valid JSON"),
            "{err}"
        );
        let err = Parameters::parse(Some(&json!("[1,2]"))).unwrap_err();
        assert_eq!(err, "customParameters must be a JSON object, got an array");
        let err = Parameters::parse(Some(&json!(7))).unwrap_err();
        assert!(err.ends_with("got a number"), "{err}");
    }
}
