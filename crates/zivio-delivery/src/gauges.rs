//! The queue gauges (`zivio_delivery_queue_depth`, `zivio_delivery_due_lag_seconds`), refreshed
//! by the engine's loop at a cost that does not grow with the backlog.

use super::*;

/// How often the queue gauges are refreshed: the due lag always, the depth at most.
const QUEUE_GAUGE_INTERVAL: Duration = Duration::from_secs(5);
/// The longest the queue depth goes without a refresh, however long counting takes.
const MAX_COUNT_SPACING: Duration = Duration::from_secs(120);

/// When the queue gauges are refreshed next. The due lag (one index lookup) comes every
/// `QUEUE_GAUGE_INTERVAL`; the depth (a count of every pending delivery) as often, but spaced so
/// that counting takes at most a fiftieth of the time, and never more than `MAX_COUNT_SPACING`
/// apart.
pub(crate) struct GaugeSchedule {
    lag_due: tokio::time::Instant,
    count_due: tokio::time::Instant,
}

impl GaugeSchedule {
    pub(crate) fn now() -> Self {
        let now = tokio::time::Instant::now();
        GaugeSchedule {
            lag_due: now,
            count_due: now,
        }
    }
}

impl Engine {
    /// Refreshes the queue gauges that are due (see `GaugeSchedule`).
    pub(crate) async fn refresh_queue_gauges(&self, schedule: &mut GaugeSchedule) {
        let store = &self.services.store;
        let now = tokio::time::Instant::now();
        if now >= schedule.lag_due {
            schedule.lag_due = now + QUEUE_GAUGE_INTERVAL;
            if let Ok(due) = store.next_due().await {
                let lag = due.map_or(0.0, |due| (self.services.now() - due).as_seconds_f64());
                self.services.metrics.set_due_lag(lag);
            }
        }
        if now >= schedule.count_due {
            let spacing = match store.pending_deliveries().await {
                Ok(depth) => {
                    self.services.metrics.set_queue_depth(depth);
                    (now.elapsed() * 50).clamp(QUEUE_GAUGE_INTERVAL, MAX_COUNT_SPACING)
                }
                Err(_) => QUEUE_GAUGE_INTERVAL,
            };
            schedule.count_due = now + spacing;
        }
    }
}
