//! `soak` (memory over time), `statements` (SQL per delivery) and `scaleout` (two PostgreSQL
//! instances sharing one backlog).

use super::*;

impl Bench {
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
