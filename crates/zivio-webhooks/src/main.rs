//! `zivio-webhooks`: the Zivio Webhooks service and its command-line tools.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod config;
mod keys;
mod listen;
mod platform_cli;
mod startup;
mod telemetry;
mod verify;

use config::Config;

/// glibc's allocator took a quarter of the service's CPU under load (many threads allocating
/// and freeing request, statement and body buffers); mimalloc keeps per-thread free lists.
/// Built without transparent huge pages, which added up to 17 MiB to the idle footprint.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "zivio-webhooks",
    version,
    about = "Signed, durable webhooks for the Zivio platform"
)]
struct Cli {
    /// A file of `ZIVIO_WEBHOOKS_*=value` lines; the environment overrides it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve {
        /// Development mode: webhooks may also point at loopback and plain http (for `listen`).
        /// Never in production.
        #[arg(long)]
        dev: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Check a captured request's signature (exit 0 valid, 1 invalid, 2 unreadable input).
    Verify(verify::VerifyArgs),
    /// A local receiver for development: verifies and prints every event it gets.
    Listen(listen::ListenArgs),
    /// Publish an event through the platform API: a catalog example or a file.
    Emit {
        #[command(flatten)]
        target: platform_cli::Target,
        #[command(flatten)]
        args: platform_cli::EmitArgs,
    },
    /// Tenants, roles and users, through the platform API.
    Directory {
        #[command(flatten)]
        target: platform_cli::Target,
        #[command(subcommand)]
        command: platform_cli::DirectoryCommand,
    },
    /// A user's API keys for the v4 API, through the platform API.
    ApiKey {
        #[command(flatten)]
        target: platform_cli::Target,
        #[command(subcommand)]
        command: platform_cli::ApiKeyCommand,
    },
    /// A user's admin UI password, through the platform API.
    Password {
        #[command(flatten)]
        target: platform_cli::Target,
        #[command(subcommand)]
        command: platform_cli::PasswordCommand,
    },
    /// Issue a single-use admin UI sign-in link for a user.
    SignInLink {
        #[command(flatten)]
        target: platform_cli::Target,
        #[command(flatten)]
        user: platform_cli::UserRef,
    },
}

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process (reqwest is built without a default).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // The tools need no service configuration (the platform tools talk to a running service).
    if let Some(command) = &cli.command
        && let Some(code) = run_tool(command)
    {
        return code;
    }
    let config = match load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("zivio-webhooks: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve { dev: false }) {
            Command::Serve { dev } => serve(&config, dev).await,
            Command::Migrate => migrate(&config).await,
            _ => unreachable!("tools run before the configuration is read"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "fatal");
            eprintln!("zivio-webhooks: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command-line tool; `None` for the service's own commands (`serve`, `migrate`).
fn run_tool(command: &Command) -> Option<ExitCode> {
    if let Command::Verify(args) = command {
        return Some(verify::run(args));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match command {
            Command::Listen(args) => listen::run(args).await,
            Command::Emit { target, args } => platform_cli::emit(target, args).await,
            Command::Directory { target, command } => {
                platform_cli::directory(target, command).await
            }
            Command::ApiKey { target, command } => platform_cli::api_key(target, command).await,
            Command::Password { target, command } => platform_cli::password(target, command).await,
            Command::SignInLink { target, user } => platform_cli::sign_in_link(target, user).await,
            Command::Serve { .. } | Command::Migrate | Command::Verify(_) => return None,
        }
        .into()
    });
    Some(match result? {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zivio-webhooks: {error:#}");
            ExitCode::FAILURE
        }
    })
}

/// Reads the configuration and starts logging; warnings are logged once logging is up.
fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let mut vars = BTreeMap::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read configuration file {}", file.display()))?;
        vars = config::parse_file(&text)
            .map_err(|error| anyhow::anyhow!("{}: {error}", file.display()))?;
    }
    vars.extend(
        std::env::vars().filter(|(key, _)| key.starts_with(config::PREFIX) || key == "RUST_LOG"),
    );
    let (config, warnings) = Config::from_vars(&vars)?;
    telemetry::init(config.log_format, &config.log_filter);
    config.log_summary();
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

async fn serve(config: &Config, dev: bool) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while starting must still shut down cleanly.
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    let mut config = config.clone();
    if dev {
        config.allow_http = true;
        config.allow_private_cidrs.extend(
            ["127.0.0.0/8", "::1/128"].map(|net| net.parse::<ipnet::IpNet>().expect("valid")),
        );
        tracing::warn!(
            "DEVELOPMENT MODE (--dev): webhooks may point at loopback and plain http. Never use this in production."
        );
    }
    let app = startup::App::build(&config).await?;
    app.run(shutdown).await
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = startup::open_store(config).await?;
    store.close().await;
    tracing::info!("migrations applied");
    Ok(())
}

/// Registers for SIGTERM and SIGINT now; the future resolves when either arrives.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
        }
    })
}
