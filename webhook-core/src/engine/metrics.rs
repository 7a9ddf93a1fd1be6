//! Prometheus metrics served on `GET /metrics`.
//!
//! Labels take values from small fixed sets (event types outside the contract count as
//! `other`), so a sender cannot grow the number of series.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    event_type: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    endpoint: &'static str,
    result: &'static str,
}

/// The service's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    calls: Family<CallLabels, Histogram>,
    reports: Family<ReportLabels, Counter>,
    retries: Family<OperationLabel, Counter>,
    active: Gauge,
    failing: Gauge,
    backlog: Gauge,
    overdue: Gauge,
    oldest: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// A new metric of type `M`, registered as `name` with `help`.
fn register<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("webhook");
        let deliveries: Family<DeliveryLabels, Counter> = register(
            &mut registry,
            "deliveries",
            "Deliveries received, by event type and result",
        );
        let calls = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            // 5 ms to about 80 s.
            Histogram::new(exponential_buckets(0.005, 2.0, 15))
        });
        registry.register(
            "manager_call_duration_seconds",
            "Duration of configure and release calls, by result",
            calls.clone(),
        );
        let reports: Family<ReportLabels, Counter> = register(
            &mut registry,
            "reports",
            "Report-back requests, by endpoint and result",
        );
        let retries: Family<OperationLabel, Counter> = register(
            &mut registry,
            "manager_retries",
            "Manager calls that failed transiently and were scheduled again",
        );
        let active: Gauge = register(
            &mut registry,
            "active_bookings",
            "Bookings configured and not yet released, from the ledger",
        );
        let failing: Gauge = register(
            &mut registry,
            "failing_releases",
            "Releases that failed past MAX_ATTEMPTS and are still being tried: users who keep a resource after their booking ended",
        );
        let backlog: Gauge = register(
            &mut registry,
            "outbox_backlog",
            "Reports stored and not yet delivered (failed ones not counted)",
        );
        let overdue: Gauge = register(
            &mut registry,
            "overdue_bookings",
            "Bookings still configured though their end plus RELEASE_GRACE has passed: access that outlives a booking",
        );
        let oldest = Gauge::default();
        registry.register_with_unit(
            "outbox_oldest_age",
            "Age of the oldest report stored and not yet delivered (failed ones not counted), 0 when there is none",
            Unit::Seconds,
            oldest.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            deliveries,
            calls,
            reports,
            retries,
            active,
            failing,
            backlog,
            overdue,
            oldest,
        }))
    }
}

impl Metrics {
    /// Counts one delivery. `event_type` is mapped onto the contract's names or `other`.
    pub fn delivery(&self, event_type: &str, result: &'static str) {
        self.0
            .deliveries
            .get_or_create(&DeliveryLabels {
                event_type: event_type_label(event_type),
                result,
            })
            .inc();
    }

    /// Records how long a manager call took.
    pub fn call(&self, operation: &'static str, started: Instant, ok: bool) {
        self.0
            .calls
            .get_or_create(&CallLabels {
                operation,
                result: if ok { "success" } else { "error" },
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts one report-back request.
    pub fn report(&self, endpoint: &'static str, ok: bool) {
        self.0
            .reports
            .get_or_create(&ReportLabels {
                endpoint,
                result: if ok { "success" } else { "error" },
            })
            .inc();
    }

    /// Counts a transient failure that will be retried.
    pub fn retry(&self, operation: &'static str) {
        self.0
            .retries
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    /// The metrics in the Prometheus text format, with the gauges read from the ledger as of
    /// now (kept as they were when it could not be read). `oldest` is the age in seconds of
    /// the oldest report not yet delivered, `Some(0)` when there is none.
    pub fn encode(
        &self,
        active: Option<u64>,
        failing: Option<u64>,
        backlog: Option<u64>,
        overdue: Option<u64>,
        oldest: Option<u64>,
    ) -> String {
        if let Some(overdue) = overdue {
            self.0.overdue.set(overdue as i64);
        }
        if let Some(oldest) = oldest {
            self.0.oldest.set(oldest as i64);
        }
        if let Some(active) = active {
            self.0.active.set(active as i64);
        }
        if let Some(failing) = failing {
            self.0.failing.set(failing as i64);
        }
        if let Some(backlog) = backlog {
            self.0.backlog.set(backlog as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The contract's event types, `waldur` for every Waldur event, `unknown` before the body was
/// read, `other` for anything else.
pub fn event_type_label(event_type: &str) -> &'static str {
    if event_type.is_empty() {
        return "unknown";
    }
    const KNOWN: [&str; 11] = [
        "EVENT_START",
        "EVENT_END",
        "EVENT_DELETED",
        "EVENT_CREATED",
        "EVENT_UPDATED",
        "RESOURCE_CREATED",
        "RESOURCE_UPDATED",
        "RESOURCE_STATUS_CHANGED",
        "RESOURCE_DELETED",
        "ALL",
        "waldur",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == event_type)
        .unwrap_or("other")
}
