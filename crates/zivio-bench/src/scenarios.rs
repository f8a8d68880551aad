//! The scenarios of BENCHMARKS.md. Each starts a fresh service on the chosen backend, sets up a
//! tenant and webhooks through the real APIs, drives it over loopback and adds its figures to the
//! report. Event counts scale with `--scale`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::receiver::Receiver;
use crate::report::{Percentiles, Report, Target};
use crate::service::{Backend, Launch, Service, postgres_cpu};

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

    /// (1) Sustained throughput to one webhook, published in batches and one event per request,
    /// with the cost per delivery and the database bytes per recorded attempt.
    pub async fn throughput(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let service = Arc::new(self.start(&[]).await?);
        let keys = service.tenant(&service.tenant, 1).await?;
        service
            .webhook(&service.tenant, &keys[0], &self.receiver.url("/one"))
            .await?;
        let (idle_rss, _) = service.memory();
        self.report.add(
            "memory",
            Some(backend),
            "idle RSS after start",
            mib(idle_rss),
            "MiB",
            Some(Target::AtMost(50.0)),
        );

        let events = self.count(20_000);
        let database_before = service.database_bytes().await?;
        let wal_before = match backend {
            Backend::Postgres => Some(service.wal_position().await?),
            Backend::Sqlite => None,
        };
        let usage = Usage::now(&service);
        let drained = self
            .publish_in_batches(&[&service], events, BATCH, 1)
            .await?;
        let used = usage.since(&service);
        let target = match backend {
            Backend::Sqlite => 15_000.0,
            Backend::Postgres => 8_000.0,
        };
        self.report.add(
            "throughput",
            Some(backend),
            format!("1 webhook, batches of {BATCH}, {events} events"),
            drained.rate,
            "deliveries/s",
            Some(Target::AtLeast(target)),
        );
        self.report.add(
            "throughput",
            Some(backend),
            "deliveries/s once every batch was accepted",
            drained.after_accepted,
            "deliveries/s",
            None,
        );
        self.report.add(
            "throughput",
            Some(backend),
            "events accepted/s (batches)",
            drained.accepted,
            "events/s",
            None,
        );
        self.add_cost("throughput", events, &used);
        if let Some(before) = wal_before {
            self.report.add(
                "cost",
                Some(backend),
                "WAL bytes per delivered event (1 attempt)",
                service.wal_position().await?.saturating_sub(before) as f64 / events as f64,
                "bytes",
                None,
            );
        }
        let database_after = service.database_bytes().await?;
        self.report.add(
            "cost",
            Some(backend),
            "database bytes per delivered event (1 attempt)",
            database_after.saturating_sub(database_before) as f64 / events as f64,
            "bytes",
            None,
        );
        let (_, peak) = service.memory();
        self.receiver.take();

        let events = self.count(10_000);
        let publishers = 64;
        let base = self.receiver.count();
        let started = Instant::now();
        let mut publishing = JoinSet::new();
        for publisher in 0..publishers {
            let service = service.clone();
            let share = events / publishers + usize::from(publisher < events % publishers);
            publishing.spawn(async move {
                for _ in 0..share {
                    service.publish(&service.tenant).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = publishing.join_next().await {
            done??;
        }
        let accepted = started.elapsed();
        let last = self.receiver.wait_for(base + events, DRAIN_TIMEOUT).await?;
        self.report.add(
            "throughput",
            Some(backend),
            format!("1 webhook, 1 event per request ({publishers} clients)"),
            events as f64 / (last - started).as_secs_f64(),
            "deliveries/s",
            Some(Target::AtLeast(target)),
        );
        self.report.add(
            "throughput",
            Some(backend),
            "events accepted/s (1 per request)",
            events as f64 / accepted.as_secs_f64(),
            "events/s",
            None,
        );
        self.receiver.take();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (after_rss, later_peak) = service.memory();
        self.report.add(
            "memory",
            Some(backend),
            "peak RSS, throughput runs",
            mib(peak.max(later_peak)),
            "MiB",
            Some(Target::AtMost(200.0)),
        );
        self.report.add(
            "memory",
            Some(backend),
            "RSS 2 s after the throughput runs",
            mib(after_rss),
            "MiB",
            None,
        );
        Arc::into_inner(service)
            .context("publishers done")?
            .stop()
            .await;

        // What the per-webhook bound costs: the same batches with 4 times the bound.
        let service = self
            .start(&[("ZIVIO_WEBHOOKS_MAX_IN_FLIGHT_PER_WEBHOOK", "64")])
            .await?;
        let keys = service.tenant(&service.tenant, 1).await?;
        service
            .webhook(&service.tenant, &keys[0], &self.receiver.url("/wider"))
            .await?;
        let events = self.count(20_000);
        let drained = self
            .publish_in_batches(&[&service], events, BATCH, 1)
            .await?;
        self.report.add(
            "throughput",
            Some(backend),
            "1 webhook, batches, MAX_IN_FLIGHT_PER_WEBHOOK=64",
            drained.rate,
            "deliveries/s",
            None,
        );
        self.receiver.take();
        service.stop().await;
        Ok(())
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

    /// (2) Fan-out: 100 webhooks subscribed to every event.
    pub async fn fanout(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let service = self.start(&[]).await?;
        let keys = service.tenant(&service.tenant, 1).await?;
        for webhook in 0..100 {
            service
                .webhook(
                    &service.tenant,
                    &keys[0],
                    &self.receiver.url(&format!("/fan/{webhook}")),
                )
                .await?;
        }
        let events = self.count(300);
        let deliveries = events * 100;
        let usage = Usage::now(&service);
        let drained = self
            .publish_in_batches(&[&service], events, 100, 100)
            .await?;
        self.report.add(
            "fanout",
            Some(backend),
            format!("100 webhooks, {events} events"),
            drained.rate,
            "deliveries/s",
            Some(Target::AtLeast(20_000.0)),
        );
        self.add_cost("fanout", deliveries, &usage.since(&service));
        self.receiver.take();
        service.stop().await;
        Ok(())
    }

    /// (3) One event to 1,000 webhooks of 100 owners: time until every one arrived.
    pub async fn wide(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let service = self
            .start(&[("ZIVIO_WEBHOOKS_MAX_WEBHOOKS_PER_TENANT", "1000")])
            .await?;
        let keys = service.tenant(&service.tenant, 100).await?;
        for (owner, key) in keys.iter().enumerate() {
            for webhook in 0..10 {
                let url = self.receiver.url(&format!("/wide/{owner}/{webhook}"));
                service.webhook(&service.tenant, key, &url).await?;
            }
        }
        let mut times = Vec::new();
        for _ in 0..3 {
            let base = self.receiver.count();
            let sent = Instant::now();
            service.publish(&service.tenant).await?;
            let last = self.receiver.wait_for(base + 1000, DRAIN_TIMEOUT).await?;
            times.push(last - sent);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.receiver.take();
        times.sort();
        self.report.add(
            "wide",
            Some(backend),
            "1 event to 1000 webhooks, median of 3",
            times[1].as_secs_f64() * 1000.0,
            "ms",
            Some(Target::AtMost(1000.0)),
        );
        self.report.add(
            "wide",
            Some(backend),
            "1 event to 1000 webhooks, slowest of 3",
            times[2].as_secs_f64() * 1000.0,
            "ms",
            Some(Target::AtMost(1000.0)),
        );
        service.stop().await;
        Ok(())
    }

    /// (4) Publish-accepted to arrival: a single event on an idle service, then fixed rates.
    pub async fn latency(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let service = Arc::new(self.start(&[]).await?);
        let keys = service.tenant(&service.tenant, 1).await?;
        service
            .webhook(&service.tenant, &keys[0], &self.receiver.url("/latency"))
            .await?;
        let mut idle = Vec::new();
        for _ in 0..20 {
            let base = self.receiver.count();
            let (_, accepted) = service.publish(&service.tenant).await?;
            let arrived = self.receiver.wait_for(base + 1, DRAIN_TIMEOUT).await?;
            idle.push(arrived.saturating_duration_since(accepted));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.receiver.take();
        let idle = Percentiles::of(idle).context("samples")?;
        self.report.add(
            "latency",
            Some(backend),
            "idle pick-up, p50 of 20",
            idle.p50,
            "ms",
            Some(Target::AtMost(5.0)),
        );
        for (rate, p99_target) in [(200, 3.0), (1000, 15.0)] {
            let seconds = (10.0 * self.scale).max(2.0);
            self.receiver.take();
            let published = publish_at_rate(&service, rate, seconds).await?;
            let arrivals = self.wait_arrivals(published.len()).await?;
            let latencies = published
                .iter()
                .filter_map(|(id, accepted)| {
                    arrivals
                        .get(id)
                        .map(|arrived| arrived.saturating_duration_since(*accepted))
                })
                .collect();
            let p = Percentiles::of(latencies).context("samples")?;
            let name = format!("{rate} events/s for {seconds:.0} s");
            self.report.add(
                "latency",
                Some(backend),
                format!("{name}: p50"),
                p.p50,
                "ms",
                None,
            );
            self.report.add(
                "latency",
                Some(backend),
                format!("{name}: p95"),
                p.p95,
                "ms",
                None,
            );
            self.report.add(
                "latency",
                Some(backend),
                format!("{name}: p99"),
                p.p99,
                "ms",
                Some(Target::AtMost(p99_target)),
            );
            self.report.add(
                "latency",
                Some(backend),
                format!("{name}: max"),
                p.max,
                "ms",
                None,
            );
        }
        Arc::into_inner(service)
            .context("publishers done")?
            .stop()
            .await;
        Ok(())
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

    /// (5) Isolation: healthy webhooks' p99 while 10% of webhooks hang until the timeout,
    /// against the same load with every webhook healthy.
    pub async fn isolation(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let mut p99 = Vec::new();
        for hanging in [false, true] {
            let service = Arc::new(
                self.start(&[("ZIVIO_WEBHOOKS_REQUEST_TIMEOUT", "2s")])
                    .await?,
            );
            let keys = service.tenant(&service.tenant, 1).await?;
            for webhook in 0..20 {
                let path = match (webhook < 2, hanging) {
                    (true, true) => format!("/hang/{webhook}"),
                    (true, false) => format!("/spare/{webhook}"),
                    (false, _) => format!("/healthy/{webhook}"),
                };
                service
                    .webhook(&service.tenant, &keys[0], &self.receiver.url(&path))
                    .await?;
            }
            // 400 deliveries/s: well within what either backend sustains, so that only the
            // hanging webhooks can make a difference.
            let seconds = (15.0 * self.scale).max(4.0);
            let published = publish_at_rate(&service, 20, seconds).await?;
            let accepted: HashMap<String, Instant> = published.into_iter().collect();
            let expected = accepted.len() * 18;
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            let mut latencies = Vec::with_capacity(expected);
            while latencies.len() < expected {
                anyhow::ensure!(Instant::now() < deadline, "healthy deliveries missing");
                tokio::time::sleep(Duration::from_millis(10)).await;
                for arrival in self.receiver.take() {
                    if !arrival.path.starts_with("/healthy/") {
                        continue;
                    }
                    if let Some(at) = accepted.get(&arrival.event_id) {
                        latencies.push(arrival.at.saturating_duration_since(*at));
                    }
                }
            }
            let p = Percentiles::of(latencies).context("samples")?;
            let name = match hanging {
                false => "healthy p99, every webhook healthy (baseline)",
                true => "healthy p99, 10% of webhooks hanging",
            };
            self.report
                .add("isolation", Some(backend), name, p.p99, "ms", None);
            p99.push(p.p99);
            Arc::into_inner(service)
                .context("publishers done")?
                .stop()
                .await;
        }
        self.report.add(
            "isolation",
            Some(backend),
            "p99 with hanging / baseline p99",
            p99[1] / p99[0],
            "x",
            Some(Target::AtMost(2.0)),
        );
        Ok(())
    }

    /// (6) Memory over a long run at a steady 200 events/s (within both backends' capacity),
    /// sampled every 5 s.
    pub async fn soak(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let service = Arc::new(self.start(&[]).await?);
        let keys = service.tenant(&service.tenant, 1).await?;
        service
            .webhook(&service.tenant, &keys[0], &self.receiver.url("/soak"))
            .await?;
        let publishing = {
            let service = service.clone();
            let seconds = self.soak.as_secs_f64();
            tokio::spawn(async move { publish_at_rate(&service, SOAK_RATE, seconds).await })
        };
        let mut samples = Vec::new();
        while !publishing.is_finished() {
            tokio::time::sleep(Duration::from_secs(5)).await;
            samples.push(service.memory().0);
            self.receiver.take();
        }
        publishing.await??;
        let first_minute = samples.iter().take(12).copied().max().unwrap_or_default();
        let last_minute = samples
            .iter()
            .rev()
            .take(12)
            .copied()
            .max()
            .unwrap_or_default();
        let minutes = self.soak.as_secs() / 60;
        self.report.add(
            "memory",
            Some(backend),
            format!("RSS, first minute of {minutes} min at {SOAK_RATE} events/s"),
            mib(first_minute),
            "MiB",
            Some(Target::AtMost(200.0)),
        );
        self.report.add(
            "memory",
            Some(backend),
            format!("RSS, last minute of {minutes} min at {SOAK_RATE} events/s"),
            mib(last_minute),
            "MiB",
            Some(Target::AtMost(200.0)),
        );
        Arc::into_inner(service)
            .context("publisher done")?
            .stop()
            .await;
        Ok(())
    }

    /// Database statements per delivery, counted from the service's own statement log
    /// (`sqlx::query` at debug) in a run of its own, since logging every statement costs time.
    pub async fn statements(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let service = self
            .start(&[("ZIVIO_WEBHOOKS_LOG", "info,sqlx::query=debug")])
            .await?;
        let keys = service.tenant(&service.tenant, 1).await?;
        service
            .webhook(&service.tenant, &keys[0], &self.receiver.url("/statements"))
            .await?;
        // Let start-up work (gauges, maintenance) pass before counting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (name, batch) in [("batches of 1000", true), ("1 event per request", false)] {
            let events = 1000;
            let base = self.receiver.count();
            let before = service.statements();
            if batch {
                service.publish_batch(&service.tenant, events).await?;
            } else {
                for _ in 0..events {
                    service.publish(&service.tenant).await?;
                }
            }
            self.receiver.wait_for(base + events, DRAIN_TIMEOUT).await?;
            // The last attempts are recorded just after their requests arrive.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let statements = service.statements() - before;
            anyhow::ensure!(statements > 0, "no statement log seen from the service");
            self.report.add(
                "cost",
                Some(backend),
                format!("statements per delivery, publishing included ({name})"),
                statements as f64 / events as f64,
                "statements",
                Some(Target::AtMost(3.0)),
            );
        }
        self.receiver.take();
        service.stop().await;
        Ok(())
    }
}

impl Bench {
    /// Scale-out on PostgreSQL: the same backlog drained by one instance, then by two sharing
    /// the database; every event must arrive exactly once (no receiver failures, so any second
    /// arrival would be a double claim).
    pub async fn scaleout(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.backend() == Backend::Postgres,
            "scale-out needs PostgreSQL"
        );
        let backend = self.backend();
        for instances in [1, 2] {
            let first = self.start(&[]).await?;
            let keys = first.tenant(&first.tenant, 1).await?;
            first
                .webhook(&first.tenant, &keys[0], &self.receiver.url("/scaleout"))
                .await?;
            let mut services = vec![first];
            if instances == 2 {
                let second = services[0].another_instance(&self.launch).await?;
                services.push(second);
            }
            let events = self.count(10_000);
            let cpu_before: Duration = services.iter().map(Service::cpu).sum();
            let postgres_before = postgres_cpu();
            // Spread over the instances, as a load balancer would.
            let publishers: Vec<&Service> = services.iter().collect();
            let drained = self
                .publish_in_batches(&publishers, events, BATCH, 1)
                .await?;
            let cpu: Duration = services.iter().map(Service::cpu).sum();
            // A second send of some event would come after the first: give it time to show.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let arrivals = self.receiver.take();
            let distinct: std::collections::HashSet<&str> =
                arrivals.iter().map(|a| a.event_id.as_str()).collect();
            anyhow::ensure!(
                distinct.len() == events && arrivals.len() == events,
                "{} arrivals of {} distinct events, {events} published",
                arrivals.len(),
                distinct.len()
            );
            let name = format!("{instances} instance(s), {events} events, each once");
            self.report.add(
                "scaleout",
                Some(backend),
                name,
                drained.rate,
                "deliveries/s",
                None,
            );
            let per = |total: Duration| total.as_secs_f64() * 1e6 / events as f64;
            self.report.add(
                "scaleout",
                Some(backend),
                format!("{instances} instance(s): service CPU per delivery"),
                per(cpu.saturating_sub(cpu_before)),
                "µs",
                None,
            );
            self.report.add(
                "scaleout",
                Some(backend),
                format!("{instances} instance(s): PostgreSQL CPU per delivery"),
                per(postgres_cpu().saturating_sub(postgres_before)),
                "µs",
                None,
            );
            // The first instance owns the database (dropped when it stops): it stops last.
            for service in services.into_iter().rev() {
                service.stop().await;
            }
        }
        Ok(())
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
