//! `recovery`: 100,000 events (at scale 1) that failed for good to one webhook, resent by one
//! recovery to a healthy receiver while new events keep being published to the same webhook.

use serde_json::json;

use super::*;

/// New events published per second while the recovery runs.
const NEW_EVENTS_RATE: u32 = 50;

impl Bench {
    pub async fn recovery(&mut self) -> anyhow::Result<()> {
        let backend = self.backend();
        let service = Arc::new(self.start(&[]).await?);
        let keys = service.tenant(&service.tenant, 1).await?;
        // The receiver refuses `/refuse` with a 400: each event fails for good at once.
        let webhook = service
            .webhook(&service.tenant, &keys[0], &self.receiver.url("/refuse"))
            .await?;
        let events = self.count(100_000);
        self.publish_in_batches(&[&service], events, BATCH, 1)
            .await?;
        let recover = format!("/v4/webhooks/{webhook}/recover");
        let since =
            zivio_core::event::format_time(time::OffsetDateTime::now_utc() - time::Duration::HOUR);
        // Failures are recorded a moment after their answers: wait until all are.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let dry_run = json!({"since": since, "dry_run": true});
            let counted = service
                .v4(&keys[0], reqwest::Method::POST, &recover, &dry_run)
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
                &keys[0],
                reqwest::Method::PATCH,
                &format!("/v4/webhooks/{webhook}"),
                &healthy,
            )
            .await?;
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
        let mut resent = 0;
        while resent < events {
            anyhow::ensure!(
                started.elapsed() < DRAIN_TIMEOUT,
                "{resent} of {events} resent"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            for arrival in self.receiver.take() {
                arrivals.insert(arrival.event_id, arrival.at);
            }
            resent = arrivals.len();
        }
        let published = publishing.await??;
        let new: std::collections::HashSet<&str> =
            published.iter().map(|(id, _)| id.as_str()).collect();
        // Keep reading until the new events and every resend arrived.
        let expected = events + published.len();
        while arrivals.len() < expected {
            anyhow::ensure!(
                started.elapsed() < DRAIN_TIMEOUT,
                "{} of {expected} arrived",
                arrivals.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            for arrival in self.receiver.take() {
                arrivals.insert(arrival.event_id, arrival.at);
            }
        }
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
        self.report.add(
            "recovery",
            Some(backend),
            format!("recovery of {events} failed events to 1 webhook"),
            rate,
            "resends/s",
            None,
        );
        self.report.add(
            "recovery",
            Some(backend),
            format!("new events ({NEW_EVENTS_RATE}/s) during the recovery: p50"),
            p.p50,
            "ms",
            None,
        );
        self.report.add(
            "recovery",
            Some(backend),
            format!("new events ({NEW_EVENTS_RATE}/s) during the recovery: p99"),
            p.p99,
            "ms",
            Some(Target::AtMost(50.0)),
        );
        self.add_cost("recovery", events, &used);
        Arc::into_inner(service)
            .context("publishers done")?
            .stop()
            .await;
        Ok(())
    }
}
