//! The HTTP surface: `POST /webhook`, `POST /waldur` when configured, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`, and `GET /bookings/{id}` ([`admin`](crate::http::admin)).
//!
//! A delivery goes through six gates in order, each with its own status: it must find one
//! of `MAX_CONCURRENT_REQUESTS` free (503), its body is read within the size limit (413)
//! and `BODY_TIMEOUT` (408), its signature is checked on the raw bytes (401), it is parsed
//! (400), its signed timestamp, if it has one (a booking event must), must be within
//! `REPLAY_TOLERANCE` (409), and only then does it reach [`dispatch`](crate::http::dispatch), or
//! the manager's [hook](crate::http::hook) for other events. With
//! `SIGNATURE_PRESET=standard-webhooks` the signed timestamp is `webhook-timestamp`, checked
//! with the signature (401), and the body's own `timestamp` is neither needed nor checked: a
//! sender retrying a message keeps its body, and the event's time in it, but signs the
//! attempt's time anew. A Waldur delivery is admitted by its address (403) and token (401)
//! before its body is read, and has no signature or timestamp to check. The health and
//! metrics endpoints take no permit, so they answer while the deliveries are saturated.
//!
//! Once parsed, a Waldur delivery is always answered 2xx: Waldur sends it once and ignores
//! the status.

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Json};
use poem::{Body, Endpoint, EndpointExt, Request, Route, get, handler, post};
use serde_json::json;
use tracing::{Instrument, field};

use crate::contract::event::Source;
use crate::contract::payload::{self, Delivery};
use crate::contract::reply::Reply;
use crate::http::dispatch::{self, BookingEvent};
use crate::http::hook;
use crate::http::state::AppState;
use crate::http::waldur;

/// The service's routes, with `state` available to every handler. `POST /waldur` exists only
/// when it is configured, so it is a 404 otherwise.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let mut route = Route::new()
        .at("/webhook", post(webhook))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics))
        .at("/bookings/:id", get(crate::http::admin::booking));
    if state.config.waldur.is_some() {
        route = route.at("/waldur", post(waldur_events));
    }
    route.data(state)
}

#[handler]
async fn webhook(req: &Request, body: Body, Data(state): Data<&Arc<AppState>>) -> Reply {
    let Some(_permit) = admit(state) else {
        return rejected(state, busy(state));
    };
    logged("reservation_system", receive(req, body, state.clone())).await
}

#[handler]
async fn waldur_events(req: &Request, body: Body, Data(state): Data<&Arc<AppState>>) -> Reply {
    let Some(_permit) = admit(state) else {
        return rejected(state, busy(state));
    };
    logged("waldur", receive_waldur(req, body, state.clone())).await
}

/// One of the `MAX_CONCURRENT_REQUESTS` permits, held until the delivery is answered.
fn admit(state: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    state.requests.clone().try_acquire_owned().ok()
}

fn busy(state: &AppState) -> Reply {
    tracing::warn!(
        limit = state.config.max_concurrent_requests,
        "delivery refused: MAX_CONCURRENT_REQUESTS are in flight"
    );
    Reply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!(
            "{} deliveries are already being handled (MAX_CONCURRENT_REQUESTS): try again later",
            state.config.max_concurrent_requests
        ),
    )
}

/// Runs a delivery from `source` in a span of its own and logs how it was answered.
async fn logged(source: &'static str, work: impl Future<Output = Reply>) -> Reply {
    let span = tracing::info_span!(
        "delivery",
        source,
        event_type = field::Empty,
        event_id = field::Empty,
        resource_id = field::Empty,
    );
    let reply = work.instrument(span.clone()).await;
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

/// Reads the body within `MAX_BODY_BYTES` (413 beyond it, whether declared or not) and
/// `BODY_TIMEOUT` (408).
async fn read_body(req: &Request, body: Body, state: &AppState) -> Result<bytes::Bytes, Reply> {
    let limit = state.config.max_body_bytes;
    let declared = req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let timeout = state.config.body_timeout;
    let expected = declared.map_or(0, |n| n as usize);
    let Ok(read) = tokio::time::timeout(timeout, read_limited(body, expected, limit)).await else {
        return Err(Reply::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "body not received within {} (BODY_TIMEOUT)",
                humantime::format_duration(timeout)
            ),
        ));
    };
    match read {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(too_large(limit)),
        Err(e) => Err(Reply::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("cannot read body: {e}"),
        )),
    }
}

/// Reads a body of at most `limit` bytes (`None` beyond it) into a buffer sized for the
/// `expected` length, growing it no further than `limit`: every request in flight holds
/// at most its own body, read straight into that buffer.
async fn read_limited(
    body: Body,
    expected: usize,
    limit: usize,
) -> std::io::Result<Option<bytes::Bytes>> {
    use tokio::io::AsyncReadExt as _;
    let mut reader = body.into_async_read();
    let mut data = Vec::with_capacity(expected.clamp(1024, limit));
    loop {
        if data.len() == data.capacity() {
            if data.len() >= limit {
                // Full: one byte more and the body is too large.
                let mut probe = [0u8; 1];
                let more = reader.read(&mut probe).await?;
                return Ok((more == 0).then(|| data.into()));
            }
            let grown = (data.capacity() * 2).min(limit);
            data.reserve_exact(grown - data.len());
        }
        // Reads into the spare capacity only, so the buffer never grows here.
        if reader.read_buf(&mut data).await? == 0 {
            return Ok(Some(data.into()));
        }
    }
}

async fn receive_waldur(req: &Request, body: Body, state: Arc<AppState>) -> Reply {
    let settings = state
        .config
        .waldur
        .as_ref()
        .expect("the route exists only when Waldur is configured");
    if let Err(reply) = settings.admit(req) {
        tracing::warn!(peer = %req.remote_addr(), uri = %waldur::redacted(req.uri()), message = %reply.body.message, "Waldur delivery refused");
        return rejected(&state, reply);
    }
    let bytes = match read_body(req, body, &state).await {
        Ok(bytes) => bytes,
        Err(reply) => return rejected(&state, reply),
    };
    let delivery = match waldur::parse(req.content_type(), &bytes, settings) {
        Ok(delivery) => delivery,
        Err(e) => {
            return rejected(
                &state,
                Reply::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
            );
        }
    };
    let span = tracing::Span::current();
    // Waldur sends each event once and ignores the status: from here on, always 2xx.
    waldur::acknowledged(match delivery {
        waldur::Delivery::Ignored { event_type, reason } => {
            span.record("event_type", event_type.as_str());
            state.metrics.delivery("waldur", "ignored");
            Reply::ok("ignored", reason)
        }
        waldur::Delivery::Other { event_type, reason } => {
            span.record("event_type", event_type.as_str());
            hook::offer(state, Source::Waldur, event_type, reason, bytes, None).await
        }
        waldur::Delivery::Booking {
            action,
            event_type,
            reservation,
        } => {
            span.record("event_type", event_type);
            let event = BookingEvent {
                action,
                event_type,
                source: Source::Waldur,
                reservation,
                webhook_id: None,
                key_id: None,
                start_notified: false,
                body: bytes,
            };
            run_booking(state, event).await
        }
    })
}

async fn receive(req: &Request, body: Body, state: Arc<AppState>) -> Reply {
    let bytes = match read_body(req, body, &state).await {
        Ok(bytes) => bytes,
        Err(reply) => return rejected(&state, reply),
    };

    let (key_id, message) = match state
        .config
        .keys
        .as_ref()
        .map(|k| k.verify_delivery(req.headers(), &bytes))
    {
        None => (None, None),
        Some(Ok(verified)) => (Some(verified.key_id), verified.message),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "signature refused");
            return rejected(
                &state,
                Reply::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
            );
        }
    };

    // The replay check, when the signature did not already make it (Standard Webhooks).
    let replays = match message {
        None => Replays::ByBody,
        Some(_) => Replays::Checked,
    };

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
            if let Err(reply) = fresh_if_dated(&state, replays, &event_type, &bytes) {
                return reply;
            }
            state.metrics.delivery(&event_type, "ignored");
            Reply::ok("ignored", reason)
        }
        Delivery::Batch {
            action,
            webhook_id,
            sent_at,
            items,
        } => {
            if let Err(reply) = fresh(&state, replays, action.event_type(), sent_at) {
                return reply;
            }
            tracing::Span::current().record("event_type", action.event_type());
            let sender = sender(action.event_type(), webhook_id, key_id, bytes);
            in_task(
                &state,
                dispatch::batch(state.clone(), action, sender, items),
            )
            .await
        }
        Delivery::ResourceDeleted {
            resource_id,
            webhook_id,
            sent_at,
        } => {
            const EVENT: &str = "RESOURCE_DELETED";
            if let Err(reply) = fresh(&state, replays, EVENT, sent_at) {
                return reply;
            }
            let span = tracing::Span::current();
            span.record("event_type", EVENT);
            span.record("resource_id", resource_id);
            let sender = sender(EVENT, webhook_id, key_id, bytes);
            in_task(
                &state,
                dispatch::resource_deleted(state.clone(), resource_id, sender),
            )
            .await
        }
        Delivery::Other { event_type, reason } => {
            tracing::Span::current().record("event_type", event_type.as_str());
            if let Err(reply) = fresh_if_dated(&state, replays, &event_type, &bytes) {
                return reply;
            }
            hook::offer(
                state,
                Source::ReservationSystem,
                event_type,
                reason,
                bytes,
                message.as_ref(),
            )
            .await
        }
        Delivery::Booking {
            action,
            reservation,
            webhook_id,
            start_notified,
            sent_at,
        } => {
            if let Err(reply) = fresh(&state, replays, action.event_type(), sent_at) {
                return reply.for_event(&reservation.event_id);
            }
            tracing::Span::current().record("event_type", action.event_type());
            let event = BookingEvent {
                action,
                event_type: action.event_type(),
                source: Source::ReservationSystem,
                reservation,
                webhook_id,
                key_id,
                start_notified,
                body: bytes,
            };
            run_booking(state, event).await
        }
    }
}

/// Where a delivery's replay check is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replays {
    /// On the body's signed `timestamp`.
    ByBody,
    /// Already, on the signature's own timestamp.
    Checked,
}

/// Refuses a booking event whose signed timestamp is too old or too new (a replay).
fn fresh(
    state: &AppState,
    replays: Replays,
    event_type: &str,
    sent_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), Reply> {
    if replays == Replays::Checked {
        return Ok(());
    }
    dispatch::check_fresh(sent_at, state.config.replay_tolerance, chrono::Utc::now()).inspect_err(
        |reply| {
            tracing::warn!(message = %reply.body.message, "replay refused");
            state.metrics.delivery(event_type, reply.body.status);
        },
    )
}

fn sender(
    event_type: &'static str,
    webhook_id: Option<String>,
    key_id: Option<crate::contract::signature::KeyId>,
    body: bytes::Bytes,
) -> dispatch::Sender {
    dispatch::Sender {
        event_type,
        source: Source::ReservationSystem,
        webhook_id,
        key_id,
        body,
    }
}

/// The replay check for a body other than a booking event: one that carries a signed
/// `timestamp` is refused outside `REPLAY_TOLERANCE` as a booking event is, so a recorded
/// ping or update cannot be played back to the manager's hook either.
fn fresh_if_dated(
    state: &AppState,
    replays: Replays,
    event_type: &str,
    body: &[u8],
) -> Result<(), Reply> {
    #[derive(serde::Deserialize)]
    struct Dated {
        timestamp: Option<chrono::DateTime<chrono::Utc>>,
    }
    if state.config.replay_tolerance.is_none() || replays == Replays::Checked {
        return Ok(());
    }
    let sent_at = serde_json::from_slice::<Dated>(body)
        .map_err(|e| {
            let reply = Reply::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("field timestamp: {e}"),
            );
            state.metrics.delivery(event_type, reply.body.status);
            reply
        })?
        .timestamp;
    match sent_at {
        None => Ok(()),
        Some(_) => fresh(state, replays, event_type, sent_at),
    }
}

/// Hands a booking event to [`dispatch`] in a task of its own, so that its work finishes
/// even if the sender hangs up; shutdown waits for it.
async fn run_booking(state: Arc<AppState>, event: BookingEvent) -> Reply {
    let span = tracing::Span::current();
    span.record("event_id", event.reservation.event_id.as_str());
    span.record("resource_id", event.reservation.resource.id);
    in_task(&state, dispatch::booking(state.clone(), event)).await
}

/// Runs a delivery's work in a task of its own, in the delivery's span.
async fn in_task(state: &AppState, work: impl Future<Output = Reply> + Send + 'static) -> Reply {
    let task = state.tasks.spawn(work.instrument(tracing::Span::current()));
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "booking task failed");
        Reply::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            "internal error while handling the booking",
        )
    })
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
fn healthz(Data(state): Data<&Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({"status": "healthy", "service": state.config.service.name}))
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
    let now = crate::engine::ledger::now();
    let grace = state.config.release_grace.as_millis() as i64;
    let (active, failing, backlog, overdue, oldest) = tokio::join!(
        state.store.active_bookings(),
        state.store.failing_releases(),
        state.store.outbox_backlog(),
        state.store.overdue_bookings(now.saturating_sub(grace)),
        state.store.outbox_oldest()
    );
    let oldest = oldest.map(|at| at.map_or(0, |at| (now.saturating_sub(at) / 1000).max(0) as u64));
    if let Err(e) = (active.as_ref().and(failing.as_ref()).and(backlog.as_ref()))
        .and(overdue.as_ref())
        .and(oldest.as_ref())
    {
        tracing::warn!(error = %e, "gauges not updated: the ledger is unavailable");
    }
    poem::Response::builder()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode(
            active.ok(),
            failing.ok(),
            backlog.ok(),
            overdue.ok(),
            oldest.ok(),
        ))
}
