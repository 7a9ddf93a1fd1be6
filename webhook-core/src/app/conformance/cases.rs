//! The cases, in the order they are sent, and what the wire contract expects of each reply:
//! every shape the senders send, every way a signature arrives (or should be refused), bad
//! bodies, and what the senders really do (duplicates, a lost START, a late one). A START
//! or END the event processor sends must also be answered within the latency budget, as it
//! waits for each reply before sending anything else.

use chrono::Utc;

use super::bodies::{self, Booking, Flat, Reservation};
use super::delivery::{Delivery, Signing};
use super::report::Expect;
use super::session::Session;
use crate::contract::signature::Preset;

/// A body over this is refused with 413: the senders' are 1–3 KB.
const OVERSIZED: usize = 1024 * 1024 + 1;

/// Runs every case, in order.
pub(super) async fn all(s: &mut Session<'_>) {
    shapes(s).await;
    signatures(s).await;
    bad_bodies(s).await;
    behaviour(s).await;
}

fn start(b: &Booking) -> Delivery {
    Delivery::json(&bodies::start(b, Utc::now()))
        .timed()
        .starting(b)
}

fn end(b: &Booking) -> Delivery {
    Delivery::json(&bodies::end(b, Utc::now()))
        .timed()
        .ending(b)
}

/// Every shape of every sender, each of which must be answered 2xx.
async fn shapes(s: &mut Session<'_>) {
    use Expect::{Ignored, Success};
    let b = s.booking(Flat::Full);
    s.send("flat EVENT_START", Success, start(&b)).await;
    s.send("flat EVENT_END", Success, end(&b)).await;
    let b = s.booking(Flat::Minimal);
    s.send("flat EVENT_START, required fields only", Success, start(&b))
        .await;
    s.send("flat EVENT_END of it", Success, end(&b)).await;

    let (ours, other, active) = (
        s.booking(Flat::Full),
        s.booking(Flat::OtherType),
        s.booking(Flat::Full),
    );
    for (event_type, name) in [
        ("EVENT_START", "batched EVENT_START"),
        ("EVENT_END", "batched EVENT_END"),
    ] {
        let body = bodies::batch(event_type, &[&ours, &other], &active, Utc::now());
        let mut d = Delivery::json(&body).timed();
        d = if event_type == "EVENT_START" {
            d.starting(&ours).starting(&other)
        } else {
            d.ending(&ours).ending(&other)
        };
        s.send(
            format!("{name} (event processor 0.1.12-0.1.17)"),
            Success,
            d,
        )
        .await;
    }

    let n = s.numbered();
    let now = Utc::now();
    for (kind, name, expect) in [
        (Reservation::Created, "nested EVENT_CREATED", Ignored),
        (
            Reservation::Updated,
            "nested EVENT_UPDATED of a booking not started",
            Success,
        ),
        (
            Reservation::Deleted,
            "nested EVENT_DELETED of a booking not started",
            Success,
        ),
    ] {
        let body = bodies::reservation(kind, &n, now);
        s.send(name, expect, Delivery::json(&body)).await;
    }
    let r = s.numbered();
    let status = bodies::resource(false, &r, Utc::now());
    s.send(
        "nested RESOURCE_STATUS_CHANGED",
        Ignored,
        Delivery::json(&status),
    )
    .await;
    let deleted = bodies::resource(true, &r, Utc::now());
    s.send(
        "nested RESOURCE_DELETED of a resource without bookings",
        Success,
        Delivery::json(&deleted),
    )
    .await;
    let ping = bodies::ping(Utc::now());
    s.send(
        "ALL (the admin's test ping)",
        Ignored,
        Delivery::json(&ping),
    )
    .await;
    let n = s.numbered();
    let future = bodies::future_event_type(&n, Utc::now());
    s.send("unknown event type", Ignored, Delivery::json(&future))
        .await;
    let broken = bodies::data_string(Utc::now());
    s.send(
        "nested event whose data is a string",
        Success,
        Delivery::json(&broken),
    )
    .await;
    let b = s.booking(Flat::OtherType);
    s.send(
        "flat EVENT_START of another resource type",
        Ignored,
        start(&b),
    )
    .await;
    s.send("flat EVENT_END of another resource type", Ignored, end(&b))
        .await;
}

/// The forms a good signature takes, each accepted, and bad ones, each refused with 401
/// before anything is done.
async fn signatures(s: &mut Session<'_>) {
    let (good, bad) = if s.preset() == Preset::StandardWebhooks {
        (
            vec![
                ("v1 in webhook-signature", Signing::Base64),
                (
                    "two v1 entries, one valid (a key rotation)",
                    Signing::Rotation,
                ),
            ],
            vec![
                ("without webhook-id", Some(Signing::MissingId)),
                ("with a webhook-timestamp a day old", Some(Signing::Stale)),
            ],
        )
    } else {
        (
            vec![
                ("Base64 in X-Webhook-Signature", Signing::Base64),
                ("hex in X-Webhook-Signature", Signing::Hex),
                ("sha256=<hex> in X-Hub-Signature-256", Signing::Hub),
            ],
            Vec::new(),
        )
    };
    for (name, signing) in good {
        let b = s.booking(Flat::Full);
        let first = start(&b).signed(signing.clone());
        s.send(format!("signature {name}: START"), Expect::Success, first)
            .await;
        let last = end(&b).signed(signing);
        s.send(format!("signature {name}: END"), Expect::Success, last)
            .await;
    }
    for (name, signing) in [
        ("signed with another secret", Some(Signing::WrongSecret)),
        ("signature missing", Some(Signing::Missing)),
        ("body changed after signing", None),
        ("signature garbage", Some(Signing::Garbage)),
    ]
    .into_iter()
    .chain(bad)
    {
        let b = s.booking(Flat::Full);
        let d = match signing {
            Some(signing) => start(&b).signed(signing),
            None => {
                let mut body = bodies::start(&b, Utc::now());
                let signed = Delivery::json(&body).body().to_vec();
                body["resourceName"] = format!("{}-changed", b.resource_name).into();
                Delivery::json(&body)
                    .timed()
                    .starting(&b)
                    .signed(Signing::Over(signed))
            }
        };
        s.send(format!("START {name}"), Expect::Status(401), d)
            .await;
    }
}

/// Bodies no sender should send, refused with 4xx (413 when too large), and the user's
/// mistake the sender does send, which must not be refused.
async fn bad_bodies(s: &mut Session<'_>) {
    let b = s.booking(Flat::Full);
    let body = start(&b).body().to_vec();
    let truncated = Delivery::raw(body[..body.len() / 2].to_vec()).starting(&b);
    s.send("truncated JSON", Expect::ClientError, truncated)
        .await;
    let mut array = b"[".to_vec();
    array.extend_from_slice(&body);
    array.push(b']');
    let array = Delivery::raw(array).starting(&b);
    s.send("a JSON array", Expect::ClientError, array).await;

    let b = s.booking(Flat::Full);
    let mut start_body = bodies::start(&b, Utc::now());
    start_body["customParameters"] = "{vlan_id: 100".into();
    let d = Delivery::json(&start_body).timed().starting(&b);
    s.send(
        "START whose customParameters is not JSON",
        Expect::Success,
        d,
    )
    .await;
    s.send("END of it", Expect::Success, end(&b)).await;

    let b = s.booking(Flat::Full);
    let mut big = bodies::start(&b, Utc::now());
    big["eventDescription"] = "x".repeat(OVERSIZED).into();
    let d = Delivery::json(&big).paced().starting(&b);
    s.send("START over 1 MiB", Expect::Status(413), d).await;
    let d = Delivery::json(&big).chunked().starting(&b);
    s.send(
        "START over 1 MiB, chunked (no Content-Length)",
        Expect::Status(413),
        d,
    )
    .await;
}

/// What the senders really do: deliver twice, lose a START, send one late.
async fn behaviour(s: &mut Session<'_>) {
    let b = s.booking(Flat::Full);
    s.send("duplicate: START", Expect::Success, start(&b)).await;
    s.send(
        "duplicate: the same START again",
        Expect::Success,
        start(&b),
    )
    .await;
    s.send("duplicate: END", Expect::Success, end(&b)).await;

    let b = s.booking(Flat::Full);
    s.send(
        "lost START: END of a booking never started",
        Expect::Success,
        end(&b),
    )
    .await;

    let b = s.booking(Flat::Full);
    s.send("late START: START", Expect::Success, start(&b))
        .await;
    s.send("late START: END", Expect::Success, end(&b)).await;
    s.send(
        "late START: START of the booking already released",
        Expect::NotConfigured,
        start(&b),
    )
    .await;
    s.send(
        "late START: END again (END can come twice)",
        Expect::Success,
        end(&b),
    )
    .await;
}
