//! The scenarios of BENCHMARKS.md. Each starts a fresh service on the chosen backend, sets up a
//! tenant and webhooks through the real APIs, drives it over loopback and adds its figures to the
//! report. Event counts scale with `--scale`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::report::{Percentiles, Report, Target};
use crate::service::{Backend, Launch, Service, postgres_cpu};
use zivio_test_support::receiver::Receiver;

mod load;
mod long_runs;
mod recovery;
mod throughput;

/// Nothing in a scenario may take longer than this to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const BATCH: usize = 1000;
const SOAK_RATE: u32 = 200;

pub struct Bench {
    pub launch: Launch,
    pub receiver: Receiver,
    pub report: Report,
    pub scale: f64,
    pub soak: Duration,
}

/// How a backlog published in batches was delivered (per second).
struct Drained {
    /// Deliveries from the first publish to the last arrival.
    rate: f64,
    /// Deliveries once every batch was accepted (delivery alone).
    after_accepted: f64,
    /// Events accepted.
    accepted: f64,
}

/// What the service used while a scenario ran.
struct Usage {
    service_cpu: Duration,
    postgres_cpu: Duration,
    statements: u64,
}

impl Usage {
    fn now(service: &Service) -> Usage {
        Usage {
            service_cpu: service.cpu(),
            postgres_cpu: postgres_cpu(),
            statements: service.statements(),
        }
    }

    fn since(&self, service: &Service) -> Usage {
        let now = Usage::now(service);
        Usage {
            service_cpu: now.service_cpu.saturating_sub(self.service_cpu),
            postgres_cpu: now.postgres_cpu.saturating_sub(self.postgres_cpu),
            statements: now.statements - self.statements,
        }
    }
}

impl Bench {
    fn count(&self, base: usize) -> usize {
        ((base as f64 * self.scale).round() as usize).max(1)
    }

    fn backend(&self) -> Backend {
        self.launch.backend
    }

    async fn start(&self, env: &[(&str, &str)]) -> anyhow::Result<Service> {
        Service::start(&self.launch, env).await
    }

    /// The raw ceiling of this machine, against which rates are reported (`crate::ceiling`).
    pub async fn ceiling(&mut self) -> anyhow::Result<()> {
        crate::ceiling::measure(&self.receiver, &mut self.report).await
    }

    /// Publishes `events` in batches of `batch` (spread over `services` in turn) to webhooks
    /// that each get every event (`fan_out` of them), and waits until every delivery arrived.
    async fn publish_in_batches(
        &self,
        services: &[&Service],
        events: usize,
        batch: usize,
        fan_out: usize,
    ) -> anyhow::Result<Drained> {
        let deliveries = events * fan_out;
        let base = self.receiver.count();
        let started = Instant::now();
        let mut published = 0;
        while published < events {
            let size = batch.min(events - published);
            let service = services[published / batch % services.len()];
            service.publish_batch(&service.tenant, size).await?;
            published += size;
        }
        let accepted_at = Instant::now();
        let delivered_meanwhile = self.receiver.count() - base;
        let last = self
            .receiver
            .wait_for(base + deliveries, DRAIN_TIMEOUT)
            .await?;
        let seconds = |from: Instant, to: Instant| (to - from).as_secs_f64().max(1e-3);
        Ok(Drained {
            rate: deliveries as f64 / seconds(started, last),
            after_accepted: (deliveries - delivered_meanwhile.min(deliveries)) as f64
                / seconds(accepted_at, last.max(accepted_at)),
            accepted: events as f64 / seconds(started, accepted_at),
        })
    }

    fn add_cost(&mut self, scenario: &'static str, deliveries: usize, used: &Usage) {
        let backend = self.backend();
        let per = |total: Duration| total.as_secs_f64() * 1e6 / deliveries as f64;
        self.report.add(
            "cost",
            Some(backend),
            format!("service CPU per delivery ({scenario})"),
            per(used.service_cpu),
            "µs",
            None,
        );
        if backend == Backend::Postgres {
            self.report.add(
                "cost",
                Some(backend),
                format!("PostgreSQL CPU per delivery ({scenario})"),
                per(used.postgres_cpu),
                "µs",
                None,
            );
        }
    }

    /// Waits for `count` arrivals recorded since the last `take` and returns them by event id.
    async fn wait_arrivals(&self, count: usize) -> anyhow::Result<HashMap<String, Instant>> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut arrivals = HashMap::new();
        while arrivals.len() < count {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {count} arrived",
                arrivals.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            arrivals.extend(
                self.receiver
                    .take()
                    .into_iter()
                    .map(|arrival| (arrival.event_id, arrival.at)),
            );
        }
        Ok(arrivals)
    }
}

/// Publishes single events at a fixed rate (open loop: a late answer does not delay the next
/// event) for `seconds`; returns each event's id and when it was accepted.
async fn publish_at_rate(
    service: &Arc<Service>,
    rate: u32,
    seconds: f64,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let total = (f64::from(rate) * seconds).round() as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut publishing = JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let service = service.clone();
        publishing.spawn(async move { service.publish(&service.tenant).await });
    }
    let mut published = Vec::with_capacity(total);
    while let Some(done) = publishing.join_next().await {
        published.push(done??);
    }
    Ok(published)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
