//! Load shapes: `fanout` (many webhooks), `wide` (1,000 webhooks, one event), `latency`
//! (publish-accepted to arrival, idle and open loop) and `isolation` (hanging receivers).

use super::*;

impl Bench {
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
}
