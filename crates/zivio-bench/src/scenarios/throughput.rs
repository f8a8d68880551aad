//! `throughput`: one webhook, batches then single events, with the cost per delivery.

use super::*;

impl Bench {
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

        let target = match backend {
            Backend::Sqlite => 15_000.0,
            Backend::Postgres => 8_000.0,
        };
        self.batches_to_one_webhook(&service, target).await?;
        let (_, peak) = service.memory();
        self.receiver.take();
        self.one_event_per_request(&service, target).await?;
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

        self.batches_with_a_wider_bound().await
    }

    /// Batches to one webhook: deliveries/s against `target`, the cost per delivery, and the
    /// database bytes (and PostgreSQL WAL) per delivered event.
    async fn batches_to_one_webhook(
        &mut self,
        service: &Service,
        target: f64,
    ) -> anyhow::Result<()> {
        let backend = self.backend();
        let events = self.count(20_000);
        let database_before = service.database_bytes().await?;
        let wal_before = match backend {
            Backend::Postgres => Some(service.wal_position().await?),
            Backend::Sqlite => None,
        };
        let usage = Usage::now(service);
        let drained = self
            .publish_in_batches(&[service], events, BATCH, 1)
            .await?;
        let used = usage.since(service);
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
        Ok(())
    }

    /// One event per request from 64 publishers at once: deliveries/s against `target`.
    async fn one_event_per_request(
        &mut self,
        service: &Arc<Service>,
        target: f64,
    ) -> anyhow::Result<()> {
        let backend = self.backend();

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
        Ok(())
    }

    /// What the per-webhook bound costs: the same batches with 4 times the bound.
    async fn batches_with_a_wider_bound(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
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
}
