//! The HTTP surface: `POST /webhook`, `GET /healthz`, `GET /readyz`, `GET /metrics`, and
//! `GET /bookings/{id}` ([`admin`](crate::admin)).
//!
//! A delivery goes through five gates in order, each with its own status: the body is read
//! within the size limit (413), its signature is checked on the raw bytes (401), it is
//! parsed (400), a booking event's signed timestamp must be within `REPLAY_TOLERANCE`
//! (409), and only then does it reach [`dispatch`](crate::dispatch).

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Json};
use poem::{Body, Endpoint, EndpointExt, Request, Route, get, handler, post};
use serde_json::json;
use tracing::{Instrument, field};

use crate::dispatch::{self, BookingEvent};
use crate::payload::{self, Delivery};
use crate::reply::Reply;
use crate::startup::AppState;

/// The service's routes, with `state` available to every handler.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    Route::new()
        .at("/webhook", post(webhook))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics))
        .at("/bookings/:id", get(crate::admin::booking))
        .data(state)
}

#[handler]
async fn webhook(req: &Request, body: Body, Data(state): Data<&Arc<AppState>>) -> Reply {
    let span = tracing::info_span!(
        "delivery",
        event_type = field::Empty,
        event_id = field::Empty,
        resource_id = field::Empty,
    );
    let reply = receive(req, body, state.clone())
        .instrument(span.clone())
        .await;
    span.in_scope(|| {
        tracing::info!(
            status = reply.code.as_u16(),
            result = reply.body.status,
            message = %reply.body.message,
            "delivery handled"
        )
    });
    reply
}

async fn receive(req: &Request, body: Body, state: Arc<AppState>) -> Reply {
    let limit = state.config.max_body_bytes;
    let declared = req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return rejected(&state, too_large(limit));
    }
    let bytes = match body.into_bytes_limit(limit).await {
        Ok(bytes) => bytes,
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            return rejected(&state, too_large(limit));
        }
        Err(e) => {
            return rejected(
                &state,
                Reply::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("cannot read body: {e}"),
                ),
            );
        }
    };

    if let Some(keys) = &state.config.keys
        && let Err(e) = keys.verify(req.headers(), &bytes)
    {
        tracing::warn!(error = %e, "signature refused");
        return rejected(
            &state,
            Reply::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
        );
    }

    let delivery = match payload::parse(&bytes, |kind| state.config.handles(kind)) {
        Ok(delivery) => delivery,
        Err(e) => {
            return rejected(
                &state,
                Reply::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
            );
        }
    };
    match delivery {
        Delivery::Ignored { event_type, reason } => {
            tracing::Span::current().record("event_type", event_type.as_str());
            state.metrics.delivery(&event_type, "ignored");
            Reply::ok("ignored", reason)
        }
        Delivery::Booking {
            action,
            reservation,
            webhook_id,
            start_notified,
            sent_at,
        } => {
            if let Err(reply) =
                dispatch::check_fresh(sent_at, state.config.replay_tolerance, chrono::Utc::now())
            {
                tracing::warn!(message = %reply.body.message, "replay refused");
                state.metrics.delivery(
                    match action {
                        payload::Action::Configure => "EVENT_START",
                        payload::Action::Release => "EVENT_END",
                        payload::Action::ReleaseIfActive => "EVENT_DELETED",
                    },
                    reply.body.status,
                );
                return reply.for_event(&reservation.event_id);
            }
            let span = tracing::Span::current();
            span.record("event_id", reservation.event_id.as_str());
            span.record("resource_id", reservation.resource.id);
            let event = BookingEvent {
                action,
                reservation,
                webhook_id,
                start_notified,
                body: bytes,
            };
            // The work runs in its own task so that it finishes even if the sender hangs
            // up; shutdown waits for it.
            let task = state
                .tasks
                .spawn(dispatch::booking(state.clone(), event).instrument(span));
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "booking task failed");
                Reply::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failed",
                    "internal error while handling the booking",
                )
            })
        }
    }
}

fn too_large(limit: usize) -> Reply {
    Reply::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("body exceeds {limit} bytes"),
    )
}

/// Counts a delivery refused before it was parsed, and logs why.
fn rejected(state: &AppState, reply: Reply) -> Reply {
    state.metrics.delivery("", reply.body.status);
    reply
}

#[handler]
fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "healthy", "service": env!("CARGO_PKG_NAME")}))
}

#[handler]
async fn readyz(Data(state): Data<&Arc<AppState>>) -> Reply {
    match state.manager.ready().await {
        Ok(()) => Reply::ok("ready", "ready to take events"),
        Err(e) => {
            tracing::warn!(error.message = %e, "not ready");
            Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                e.message().to_owned(),
            )
        }
    }
}

#[handler]
async fn metrics(Data(state): Data<&Arc<AppState>>) -> poem::Response {
    let (active, backlog) =
        tokio::join!(state.store.active_bookings(), state.store.outbox_backlog());
    if let Err(e) = active.as_ref().and(backlog.as_ref()) {
        tracing::warn!(error = %e, "gauges not updated: the ledger is unavailable");
    }
    poem::Response::builder()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode(active.ok(), backlog.ok()))
}
