//! `zivio-bench`: runs the scenarios of BENCHMARKS.md and writes their figures as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use zivio_bench::report::Report;
use zivio_bench::scenarios::Bench;
use zivio_bench::service::{Backend, Launch, service_binary};
use zivio_test_support::receiver::Receiver;

#[derive(Parser)]
#[command(about = "Benchmarks the real zivio-webhooks service end to end (see BENCHMARKS.md)")]
struct Args {
    /// What to run; `all` runs the ceiling and every scenario but `soak` on each backend
    /// (`scaleout` on PostgreSQL only).
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "both")]
    backend: Backends,
    /// PostgreSQL server on which a fresh database is created for each service (and dropped).
    #[arg(long, env = "ZIVIO_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// A PostgreSQL database that every service uses as it is (not created, not dropped), so
    /// that its tables grow from run to run; each service works in a tenant of its own.
    #[arg(long)]
    reuse_database: Option<String>,
    /// Multiplies the number of events of each scenario (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// How long `soak` runs, in seconds.
    #[arg(long, default_value_t = 600)]
    soak_seconds: u64,
    /// Where the figures are written as JSON.
    #[arg(long, default_value = "target/zivio-bench/results.json")]
    out: PathBuf,
    /// The service binary; by default the `zivio-webhooks` beside this one (built first when
    /// run through cargo).
    #[arg(long)]
    service_binary: Option<PathBuf>,
    /// A variable for every service started, as `NAME=VALUE` (repeatable), e.g.
    /// `ZIVIO_WEBHOOKS_EVENT_VALIDATION=off` to compare settings.
    #[arg(long = "service-env", value_parser = parse_variable)]
    service_env: Vec<(String, String)>,
}

fn parse_variable(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Ceiling,
    Throughput,
    Fanout,
    Wide,
    Latency,
    Isolation,
    Statements,
    /// The cost of the payload-contract check (in process; no service, no backend).
    Contracts,
    Scaleout,
    /// A recovery of 100,000 failed events (at scale 1) while new events arrive.
    Recovery,
    Soak,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backends {
    Sqlite,
    Postgres,
    Both,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = match args.service_binary {
        Some(binary) => binary,
        None => service_binary()?,
    };
    let backends = match (args.backend, &args.database_url) {
        (Backends::Sqlite, _) => vec![Backend::Sqlite],
        (Backends::Postgres, _) => vec![Backend::Postgres],
        (Backends::Both, Some(_)) => vec![Backend::Sqlite, Backend::Postgres],
        (Backends::Both, None) => {
            eprintln!("no --database-url (ZIVIO_BENCH_DATABASE_URL): PostgreSQL is skipped");
            vec![Backend::Sqlite]
        }
    };
    let dir = tempfile::tempdir()?;
    let receiver = Receiver::start(dir.path()).await?;
    let mut bench = Bench {
        launch: Launch {
            binary,
            backend: backends[0],
            postgres_server: args.database_url.clone(),
            reuse_database: args.reuse_database.clone(),
            receiver_ca: receiver.ca_path.clone(),
            env: args.service_env.clone(),
        },
        receiver,
        report: Report::default(),
        scale: args.scale,
        soak: Duration::from_secs(args.soak_seconds),
    };
    let all = args.scenario == Scenario::All;
    if all || args.scenario == Scenario::Contracts {
        zivio_bench::contracts::contracts(&mut bench.report);
    }
    if args.scenario == Scenario::Contracts {
        return write(&args.out, &bench.report);
    }
    bench.ceiling().await.context("ceiling")?;
    for backend in backends {
        bench.launch.backend = backend;
        if all || args.scenario == Scenario::Throughput {
            bench.throughput().await.context("throughput")?;
        }
        if all || args.scenario == Scenario::Fanout {
            bench.fanout().await.context("fanout")?;
        }
        if all || args.scenario == Scenario::Wide {
            bench.wide().await.context("wide")?;
        }
        if all || args.scenario == Scenario::Latency {
            bench.latency().await.context("latency")?;
        }
        if all || args.scenario == Scenario::Isolation {
            bench.isolation().await.context("isolation")?;
        }
        if all || args.scenario == Scenario::Statements {
            bench.statements().await.context("statements")?;
        }
        if (all || args.scenario == Scenario::Scaleout) && backend == Backend::Postgres {
            bench.scaleout().await.context("scale-out")?;
        }
        if args.scenario == Scenario::Recovery {
            bench.recovery().await.context("recovery")?;
        }
        if args.scenario == Scenario::Soak {
            bench.soak().await.context("soak")?;
        }
    }
    write(&args.out, &bench.report)
}

fn write(out: &std::path::Path, report: &zivio_bench::report::Report) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("write {}", out.display()))?;
    println!("figures written to {}", out.display());
    Ok(())
}
