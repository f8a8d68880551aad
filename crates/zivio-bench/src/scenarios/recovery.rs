//! `recovery`: 100,000 events (at scale 1) that failed for good to one webhook, resent by one
//! recovery to a healthy receiver while new events keep being published to the same webhook.

use serde_json::json;

use super::*;

/// New events published per second while the recovery runs.
const NEW_EVENTS_RATE: u32 = 50;

impl Bench {
    pub async fn recovery(&mut self) -> anyhow::Result<()> {
        let service = Arc::new(self.start(&[]).await?);
        let keys = service.tenant(&service.tenant, 1).await?;
        let events = self.count(100_000);
        let (webhook, since) = self.failed_backlog(&service, &keys[0], events).await?;
        let recover = format!("/v4/webhooks/{webhook}/recover");
        self.receiver.take();
        let base = self.receiver.count();
        let usage = Usage::now(&service);
        let started = Instant::now();
        let recovery = service
            .v4(
                &keys[0],
                reqwest::Method::POST,
                &recover,
                &json!({"since": since}),
            )
            .await?;
        anyhow::ensure!(recovery["recovery"]["selected"] == events, "{recovery}");

        // New events meanwhile, for as long as the recovery is expected to take at most.
        let seconds = (events as f64 / 1_000.0).max(5.0);
        let publishing = {
            let service = service.clone();
            tokio::spawn(async move { publish_at_rate(&service, NEW_EVENTS_RATE, seconds).await })
        };
        let mut arrivals: HashMap<String, Instant> = HashMap::new();
        let mut last_resend = started;
        self.arrive(&mut arrivals, events, started).await?;
        let published = publishing.await??;
        let new: std::collections::HashSet<&str> =
            published.iter().map(|(id, _)| id.as_str()).collect();
        // Keep reading until the new events and every resend arrived.
        let expected = events + published.len();
        self.arrive(&mut arrivals, expected, started).await?;
        for (id, at) in &arrivals {
            if !new.contains(id.as_str()) {
                last_resend = last_resend.max(*at);
            }
        }
        let used = usage.since(&service);
        anyhow::ensure!(self.receiver.count() >= base + expected, "arrivals missing");
        let latencies = published
            .iter()
            .filter_map(|(id, accepted)| {
                arrivals
                    .get(id)
                    .map(|at| at.saturating_duration_since(*accepted))
            })
            .collect();
        let p = Percentiles::of(latencies).context("samples")?;
        let rate = events as f64 / (last_resend - started).as_secs_f64().max(1e-3);
        self.report_recovery(events, rate, &p);
        self.add_cost("recovery", events, &used);
        Arc::into_inner(service)
            .context("publishers done")?
            .stop()
            .await;
        Ok(())
    }

    /// `events` events that failed for good (400) to one new webhook, every failure recorded,
    /// and the webhook pointed at a healthy path; returns the webhook and a `since` before them.
    async fn failed_backlog(
        &self,
        service: &Service,
        key: &str,
        events: usize,
    ) -> anyhow::Result<(String, String)> {
        // The receiver refuses `/refuse` with a 400: each event fails for good at once.
        let webhook = service
            .webhook(&service.tenant, key, &self.receiver.url("/refuse"))
            .await?;
        self.publish_in_batches(&[service], events, BATCH, 1)
            .await?;
        let recover = format!("/v4/webhooks/{webhook}/recover");
        let since =
            zivio_core::event::format_time(time::OffsetDateTime::now_utc() - time::Duration::HOUR);
        // Failures are recorded a moment after their answers: wait until all are.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let dry_run = json!({"since": since, "dry_run": true});
            let counted = service
                .v4(key, reqwest::Method::POST, &recover, &dry_run)
                .await?;
            if counted["events"].as_u64() == Some(events as u64) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "failures not recorded: {counted}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let healthy = json!({"url": self.receiver.url("/ok")});
        service
            .v4(
                key,
                reqwest::Method::PATCH,
                &format!("/v4/webhooks/{webhook}"),
                &healthy,
            )
            .await?;
        Ok((webhook, since))
    }

    /// Adds what arrived to `arrivals` until it holds `count` events.
    async fn arrive(
        &self,
        arrivals: &mut HashMap<String, Instant>,
        count: usize,
        started: Instant,
    ) -> anyhow::Result<()> {
        while arrivals.len() < count {
            anyhow::ensure!(
                started.elapsed() < DRAIN_TIMEOUT,
                "{} of {count} arrived",
                arrivals.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            for arrival in self.receiver.take() {
                arrivals.insert(arrival.event_id, arrival.at);
            }
        }
        Ok(())
    }

    fn report_recovery(&mut self, events: usize, rate: f64, new_events: &Percentiles) {
        let backend = Some(self.backend());
        let name = format!("recovery of {events} failed events to 1 webhook");
        self.report
            .add("recovery", backend, name, rate, "resends/s", None);
        for (quantile, value, target) in [
            ("p50", new_events.p50, None),
            ("p99", new_events.p99, Some(Target::AtMost(50.0))),
        ] {
            let name = format!("new events ({NEW_EVENTS_RATE}/s) during the recovery: {quantile}");
            self.report
                .add("recovery", backend, name, value, "ms", target);
        }
    }
}
