//! Prometheus metrics. Each service instance owns its registry (no global recorder), so tests
//! can run several instances in one process and read each one's numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use zivio_core::error_kind::ErrorKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventTypeLabels {
    /// The event type (the derive writes the raw identifier as `type`).
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    /// `delivered`, `retry` or `give_up`.
    outcome: &'static str,
    /// The error kind, or `none`.
    error_kind: String,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        30.0,
    ])
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_durations: Family<RequestLabels, Histogram>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_durations: Histogram,
    in_flight: Gauge,
    queue_depth: Gauge,
    due_lag: Gauge<f64, AtomicU64>,
    api_key_lookups: Counter,
    nonconforming: Family<EventTypeLabels, Counter>,
    control: DeliveryControl,
}

/// Rate limits and recoveries: totals without per-webhook labels (`/metrics` may be public).
struct DeliveryControl {
    rate_limit_waiting: Gauge,
    rate_limit_delay: Counter<f64, AtomicU64>,
    recoveries_running: Gauge,
}

impl DeliveryControl {
    fn register(registry: &mut Registry) -> Self {
        let rate_limit_waiting = Gauge::default();
        registry.register(
            "rate_limit_waiting",
            "Deliveries of this instance waiting for their webhook's rate limit",
            rate_limit_waiting.clone(),
        );
        let rate_limit_delay = Counter::<f64, AtomicU64>::default();
        registry.register(
            "rate_limit_delay_seconds",
            "Time deliveries of this instance spent waiting for their webhook's rate limit",
            rate_limit_delay.clone(),
        );
        let recoveries_running = Gauge::default();
        registry.register(
            "recoveries_running",
            "Recoveries running (all instances)",
            recoveries_running.clone(),
        );
        DeliveryControl {
            rate_limit_waiting,
            rate_limit_delay,
            recoveries_running,
        }
    }
}

impl Metrics {
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::with_prefix("zivio");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let request_durations =
            Family::<RequestLabels, Histogram>::new_with_constructor(latency_buckets);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route and status",
            request_durations.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: version.to_owned(),
            })
            .set(1);
        registry.register("build_info", "Build information; always 1", build);
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts by this instance, by outcome and error kind",
            attempts.clone(),
        );
        let attempt_durations = latency_buckets();
        registry.register(
            "delivery_attempt_duration_seconds",
            "Time from sending to the end of the answer",
            attempt_durations.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "delivery_in_flight",
            "Requests to receivers in flight from this instance",
            in_flight.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "delivery_queue_depth",
            "Pending deliveries (all instances)",
            queue_depth.clone(),
        );
        let due_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "delivery_due_lag_seconds",
            "Now minus the oldest due time of pending work",
            due_lag.clone(),
        );
        let api_key_lookups = Counter::default();
        registry.register(
            "api_key_lookups",
            "API keys looked up in the directory (well-formed ones only)",
            api_key_lookups.clone(),
        );
        let nonconforming = Family::<EventTypeLabels, Counter>::default();
        registry.register(
            "events_nonconforming",
            "Published events accepted although they do not conform to their type's schema (ZIVIO_WEBHOOKS_EVENT_VALIDATION=warn)",
            nonconforming.clone(),
        );
        let control = DeliveryControl::register(&mut registry);
        Self {
            control,
            nonconforming,
            registry,
            requests,
            request_durations,
            attempts,
            attempt_durations,
            in_flight,
            queue_depth,
            due_lag,
            api_key_lookups,
        }
    }

    /// Exposes when the client certificate presented to receivers expires, if there is one.
    #[must_use]
    pub fn with_client_certificate_expiry(mut self, unix_seconds: Option<i64>) -> Self {
        if let Some(seconds) = unix_seconds {
            let expiry = Gauge::<i64>::default();
            expiry.set(seconds);
            self.registry.register(
                "client_certificate_expiry_timestamp_seconds",
                "When the client certificate presented to receivers expires (Unix seconds)",
                expiry,
            );
        }
        self
    }

    /// An event accepted although it does not conform to its type's schema.
    pub fn record_nonconforming(&self, event_type: &str) {
        self.nonconforming
            .get_or_create(&EventTypeLabels {
                r#type: event_type.to_owned(),
            })
            .inc();
    }

    /// A presented API key is looked up in the directory.
    pub fn api_key_looked_up(&self) {
        self.api_key_lookups.inc();
    }

    /// One HTTP request answered, by route template (never the raw path).
    pub fn record_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.request_durations
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn record_attempt(
        &self,
        outcome: &'static str,
        error_kind: Option<ErrorKind>,
        seconds: f64,
    ) {
        let labels = AttemptLabels {
            outcome,
            error_kind: error_kind.map_or("none", ErrorKind::as_str).to_owned(),
        };
        self.attempts.get_or_create(&labels).inc();
        self.attempt_durations.observe(seconds);
    }

    /// Counts a request to a receiver as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts a delivery as waiting for its rate limit until the guard is dropped, and adds the
    /// time it waited to the throttle delay then.
    pub fn rate_limit_wait(&self) -> RateLimitWait {
        self.control.rate_limit_waiting.inc();
        RateLimitWait {
            waiting: self.control.rate_limit_waiting.clone(),
            delay: self.control.rate_limit_delay.clone(),
            since: std::time::Instant::now(),
        }
    }

    pub fn set_recoveries_running(&self, running: i64) {
        self.control.recoveries_running.set(running);
    }

    pub fn set_queue_depth(&self, depth: i64) {
        self.queue_depth.set(depth);
    }

    pub fn set_due_lag(&self, due_lag_seconds: f64) {
        self.due_lag.set(due_lag_seconds.max(0.0));
    }

    /// The registry in the OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

pub struct InFlight(Gauge);

pub struct RateLimitWait {
    waiting: Gauge,
    delay: Counter<f64, AtomicU64>,
    since: std::time::Instant,
}

impl Drop for RateLimitWait {
    fn drop(&mut self) {
        self.waiting.dec();
        self.delay.inc_by(self.since.elapsed().as_secs_f64());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
