//! Figures as they are measured: one printed line each, all of them written out as JSON, each
//! with its target and, for rates, its ratio to the raw ceiling measured in the same run.

use std::time::Duration;

use serde::Serialize;

use crate::service::Backend;

/// What a figure should reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(bound) => value >= bound,
            Target::AtMost(bound) => value <= bound,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub backend: Option<Backend>,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: Option<Target>,
    pub met: Option<bool>,
    /// For rates (deliveries/s; requests/s of the ceiling's runs measured after it): the value
    /// divided by the raw ceiling.
    pub ratio_to_ceiling: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ceiling: Option<f64>,
    pub figures: Vec<Figure>,
}

impl Report {
    /// Records and prints one figure.
    pub fn add(
        &mut self,
        scenario: &'static str,
        backend: Option<Backend>,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Option<Target>,
    ) {
        // Rates of requests sent: deliveries, and the ceiling's own runs once it is known.
        let ratio_to_ceiling = matches!(unit, "deliveries/s" | "requests/s")
            .then_some(self.ceiling)
            .flatten()
            .map(|ceiling| value / ceiling);
        let figure = Figure {
            scenario,
            backend,
            name: name.into(),
            value,
            unit,
            target,
            met: target.map(|target| target.met(value)),
            ratio_to_ceiling,
        };
        println!("{}", figure.line());
        self.figures.push(figure);
    }
}

impl Figure {
    fn line(&self) -> String {
        let backend = self.backend.map_or("-".to_owned(), |b| b.to_string());
        let mut line = format!(
            "{:<11} {:<8} {:<44} {:>12.1} {}",
            self.scenario, backend, self.name, self.value, self.unit
        );
        if let Some(ratio) = self.ratio_to_ceiling {
            line.push_str(&format!("  ({:.1}% of ceiling)", ratio * 100.0));
        }
        match (self.target, self.met) {
            (Some(Target::AtLeast(bound)), Some(met)) => {
                line.push_str(&format!("  [target >= {bound}: {}]", verdict(met)));
            }
            (Some(Target::AtMost(bound)), Some(met)) => {
                line.push_str(&format!("  [target <= {bound}: {}]", verdict(met)));
            }
            _ => {}
        }
        line
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Percentiles of a set of durations, in milliseconds.
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |quantile: f64| {
            // Nearest rank: the smallest sample with at least `quantile` of them at or below it.
            let rank = (quantile * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1000.0
        };
        Some(Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(samples).unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        let one = Percentiles::of(vec![Duration::from_millis(7)]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(Percentiles::of(Vec::new()).is_none());
    }

    #[test]
    fn targets_decide_met() {
        assert!(Target::AtLeast(10.0).met(10.0) && !Target::AtLeast(10.0).met(9.9));
        assert!(Target::AtMost(3.0).met(2.0) && !Target::AtMost(3.0).met(3.1));
    }
}
