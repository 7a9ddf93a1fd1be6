//! `GET /bookings/{id}`: a booking's state and history, for operators and `send --wait`.
//!
//! Protected by `ADMIN_TOKEN` as a bearer token, compared in constant time; without a token
//! configured the endpoint does not exist (404). It never shows the manager's outcome
//! message, which may hold credentials.

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Json, Path};
use poem::{IntoResponse, Request, Response, handler};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::contract::reply::Reply;
use crate::engine::ledger::{Booking, Event, time};
use crate::http::state::AppState;

/// What the endpoint shows of a booking.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub event_id: String,
    pub resource_id: i64,
    pub resource_name: String,
    pub user_id: String,
    pub start: String,
    pub end: String,
    /// `active` or `released`: what the deliveries asked for.
    pub desired: &'static str,
    /// Where the booking is: pending, configuring, active, releasing, released, failed.
    pub state: &'static str,
    /// Nothing more will happen until a new delivery (or the sweeper) asks.
    pub settled: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub execution_id: String,
    pub history: Vec<HistoryLine>,
}

#[derive(Debug, Serialize)]
pub struct HistoryLine {
    pub at: String,
    pub what: String,
}

impl Status {
    pub fn new(b: Booking, history: Vec<Event>) -> Self {
        let iso = |ms| time(ms).to_rfc3339();
        Self {
            settled: b.settled(),
            event_id: b.id,
            resource_id: b.resource_id,
            resource_name: b.resource_name,
            user_id: b.user_id,
            start: iso(b.start),
            end: iso(b.end),
            desired: b.desired.as_str(),
            state: b.state.as_str(),
            attempts: b.attempts,
            last_error: b.last_error,
            next_attempt_at: b.next_attempt_at.map(iso),
            execution_id: b.execution_id,
            history: history
                .into_iter()
                .map(|e| HistoryLine {
                    at: iso(e.at),
                    what: e.what,
                })
                .collect(),
        }
    }
}

#[handler]
pub async fn booking(
    req: &Request,
    Path(id): Path<String>,
    Data(state): Data<&Arc<AppState>>,
) -> Response {
    let Some(token) = &state.config.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !authorized(req, token.expose_secret()) {
        let mut response = Reply::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the ADMIN_TOKEN as Authorization: Bearer <token>",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let found = match state.store.booking(&id).await {
        Ok(found) => found,
        Err(e) => return unavailable(e),
    };
    let Some(b) = found else {
        return Reply::new(
            StatusCode::NOT_FOUND,
            "unknown",
            format!("booking {id} is not in the ledger"),
        )
        .into_response();
    };
    match state.store.history(&id).await {
        Ok(history) => Json(Status::new(b, history)).into_response(),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: crate::engine::ledger::StoreError) -> Response {
    tracing::error!(error = %e, "the ledger is unavailable");
    Reply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the booking ledger is unavailable",
    )
    .into_response()
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn authorized(req: &Request, token: &str) -> bool {
    let Some(presented) = req
        .header(header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    crate::http::access::same_secret(presented.trim().as_bytes(), token.as_bytes())
}
