//! The JSON reply every endpoint sends: `{"status": ..., "message": ..., "eventId": ...}`.
//!
//! `status` is one machine-readable word, `message` one sentence for a person reading
//! the sender's webhook log. Neither ever carries a secret or a manager's outcome text
//! (which may hold credentials and goes to the user's notification instead).

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP status with its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: StatusCode,
    pub body: ReplyBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyBody {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The work a 202 left running, to find it in logs and `GET /bookings/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    pub message: String,
    /// A batch (or a deleted resource's bookings): each booking's own result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ReplyBody>,
}

impl Reply {
    pub fn new(code: StatusCode, status: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            body: ReplyBody {
                status,
                event_id: None,
                execution_id: None,
                message: message.into(),
                results: Vec::new(),
            },
        }
    }

    /// A 200 with `status`.
    pub fn ok(status: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::OK, status, message)
    }

    pub fn for_event(mut self, event_id: &str) -> Self {
        self.body.event_id = Some(event_id.to_owned());
        self
    }

    pub fn with_execution(mut self, execution_id: &str) -> Self {
        self.body.execution_id = Some(execution_id.to_owned());
        self
    }

    /// The body as JSON text.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.body).expect("a reply serializes")
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        Response::builder()
            .status(self.code)
            .content_type("application/json")
            .body(self.json())
    }
}
