//! The real `zivio-webhooks serve` as a child process on a fresh database, a client for its
//! platform and v4 APIs, and readings of its CPU time and memory from `/proc`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zivio_store::testing::TestDatabase;

const PLATFORM_KEY: &str = "zpk_benchmark_platform_key_0001";
const SECRETS_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// How to start a service: which binary, on which backend, trusting which receiver.
#[derive(Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub backend: Backend,
    /// The PostgreSQL server a fresh database is created on (`Backend::Postgres`).
    pub postgres_server: Option<String>,
    /// A PostgreSQL database every service uses as it is, instead of a fresh one.
    pub reuse_database: Option<String>,
    pub receiver_ca: PathBuf,
    /// Variables every service gets (before the scenario's own).
    pub env: Vec<(String, String)>,
}

pub struct Service {
    child: Child,
    pub base: String,
    pub pid: u32,
    pub database_url: String,
    /// The tenant this service's scenario works in: its own, so that a reused database holds
    /// earlier runs' data beside it without mixing it in.
    pub tenant: String,
    client: reqwest::Client,
    /// Log lines of `sqlx::query` (one per statement run) seen so far.
    statements: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

impl Service {
    /// Starts `serve` on a fresh database with the benchmark defaults plus `env`, and waits
    /// until it listens.
    pub async fn start(launch: &Launch, env: &[(&str, &str)]) -> anyhow::Result<Service> {
        let tenant = format!(
            "bench-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        if let (Backend::Postgres, Some(url)) = (launch.backend, &launch.reuse_database) {
            return Service::spawn(launch, None, Some(url.clone()), tenant, env).await;
        }
        let database = match launch.backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let server = launch
                    .postgres_server
                    .as_deref()
                    .context("PostgreSQL needs --database-url")?;
                Some(TestDatabase::postgres_on(server).await)
            }
        };
        Service::spawn(launch, database, None, tenant, env).await
    }

    /// Another instance on this one's PostgreSQL database.
    pub async fn another_instance(&self, launch: &Launch) -> anyhow::Result<Service> {
        let tenant = self.tenant.clone();
        Service::spawn(launch, None, Some(self.database_url.clone()), tenant, &[]).await
    }

    async fn spawn(
        launch: &Launch,
        database: Option<TestDatabase>,
        shared_database: Option<String>,
        tenant: String,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Service> {
        let dir = tempfile::tempdir()?;
        let database_url = match (&database, shared_database) {
            (Some(database), _) => database.url.clone(),
            (None, Some(url)) => url,
            (None, None) => format!("sqlite://{}", dir.path().join("zivio.db").display()),
        };
        let mut command = Command::new(&launch.binary);
        command
            .arg("serve")
            .env_clear()
            .env("ZIVIO_WEBHOOKS_LISTEN", "127.0.0.1:0")
            .env("ZIVIO_WEBHOOKS_DATA_DIR", dir.path())
            .env("ZIVIO_WEBHOOKS_DATABASE_URL", &database_url)
            .env("ZIVIO_WEBHOOKS_LOG_FORMAT", "json")
            .env("ZIVIO_WEBHOOKS_LOG", "info")
            .env("ZIVIO_WEBHOOKS_PLATFORM_KEY", PLATFORM_KEY)
            .env("ZIVIO_WEBHOOKS_SECRETS_KEY", SECRETS_KEY)
            .env("ZIVIO_WEBHOOKS_BOOTSTRAP", "false")
            .env("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8")
            .env("ZIVIO_WEBHOOKS_EXTRA_ROOT_CA", &launch.receiver_ca)
            .env("ZIVIO_WEBHOOKS_API_RATE_LIMIT", "100000")
            .envs(launch.env.iter().map(|(name, value)| (name, value)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", launch.binary.display()))?;
        let pid = child.id().context("the service's pid")?;
        let statements = Arc::new(AtomicU64::new(0));
        let listening = watch_log(child.stderr.take().context("stderr")?, statements.clone());
        let addr = match tokio::time::timeout(START_TIMEOUT, listening).await {
            Ok(Ok(Ok(addr))) => addr,
            Ok(Ok(Err(output))) => bail!("the service exited before listening:\n{output}"),
            _ => bail!("the service did not start within {START_TIMEOUT:?}"),
        };
        Ok(Service {
            child,
            base: format!("http://{addr}"),
            pid,
            database_url,
            tenant,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            statements,
            _dir: dir,
            _database: database,
        })
    }

    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Stops the service as an operator would (SIGTERM), killing it after 30 s.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: (&str, &str),
        tenant: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header(auth.0, auth.1);
        if let Some(tenant) = tenant {
            request = request.header("zivio-tenant-id", tenant);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn platform(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let auth = format!("Bearer {PLATFORM_KEY}");
        let path = format!("/platform/v4/tenants/{path}");
        self.call(method, &path, ("authorization", &auth), None, body)
            .await
    }

    /// A tenant whose role `admin` holds every permission, and `owners` users holding it, all
    /// in the same placement; returns their API keys.
    pub async fn tenant(&self, tenant: &str, owners: usize) -> anyhow::Result<Vec<String>> {
        use reqwest::Method;
        self.platform(Method::PUT, tenant, Some(&json!({"name": tenant})))
            .await?;
        let everything: Vec<String> = zivio_core::permission::Permission::all()
            .iter()
            .map(ToString::to_string)
            .collect();
        self.platform(
            Method::PUT,
            &format!("{tenant}/roles/admin"),
            Some(&json!({"permissions": everything})),
        )
        .await?;
        let mut keys = Vec::with_capacity(owners);
        for user in 0..owners {
            let body = json!({
                "email": format!("u{user}@{tenant}.example.com"),
                "name": format!("User {user}"),
                "active": true,
                "placement": {"business_unit": "emea", "division": "uk", "department": "finance"},
                "roles": ["admin"],
            });
            self.platform(Method::PUT, &format!("{tenant}/users/u{user}"), Some(&body))
                .await?;
            let issued = self
                .platform(
                    Method::POST,
                    &format!("{tenant}/users/u{user}/api-keys"),
                    None,
                )
                .await?;
            keys.push(issued["key"].as_str().context("an API key")?.to_owned());
        }
        Ok(keys)
    }

    /// A v4 API request as the holder of `key` in this service's tenant.
    pub async fn v4(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.call(
            method,
            path,
            ("x-api-key", key),
            Some(&self.tenant),
            Some(body),
        )
        .await
    }

    /// A webhook for every event type, to `url`; returns its id.
    pub async fn webhook(&self, tenant: &str, key: &str, url: &str) -> anyhow::Result<String> {
        let body = json!({"name": url, "url": url, "events": ["*"]});
        let created = self
            .call(
                reqwest::Method::POST,
                "/v4/webhooks",
                ("x-api-key", key),
                Some(tenant),
                Some(&body),
            )
            .await?;
        Ok(created["webhook"]["id"]
            .as_str()
            .context("a webhook id")?
            .to_owned())
    }

    /// Publishes one event; returns its id and when the service accepted it.
    pub async fn publish(&self, tenant: &str) -> anyhow::Result<(String, Instant)> {
        let accepted = self
            .platform(
                reqwest::Method::POST,
                &format!("{tenant}/events"),
                Some(example_event()),
            )
            .await?;
        let at = Instant::now();
        Ok((
            accepted["id"].as_str().context("an event id")?.to_owned(),
            at,
        ))
    }

    /// Publishes `count` events in one batch request; returns their ids.
    pub async fn publish_batch(&self, tenant: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let events = vec![example_event().clone(); count];
        let accepted = self
            .platform(
                reqwest::Method::POST,
                &format!("{tenant}/events/batch"),
                Some(&json!({ "events": events })),
            )
            .await?;
        Ok(accepted["ids"]
            .as_array()
            .context("event ids")?
            .iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect())
    }

    /// CPU time the process has used so far.
    pub fn cpu(&self) -> Duration {
        process_cpu(self.pid).unwrap_or_default()
    }

    /// (current, peak) resident memory in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// PostgreSQL's write-ahead log position, in bytes (all databases of the server).
    pub async fn wal_position(&self) -> anyhow::Result<u64> {
        use sqlx::Connection as _;
        let mut connection = sqlx::PgConnection::connect(&self.database_url).await?;
        let (position,): (i64,) =
            sqlx::query_as("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
                .fetch_one(&mut connection)
                .await?;
        Ok(u64::try_from(position)?)
    }

    /// Bytes the database takes now (SQLite: pages in use; PostgreSQL: the database's size).
    pub async fn database_bytes(&self) -> anyhow::Result<u64> {
        use sqlx::Connection as _;
        if self.database_url.starts_with("sqlite:") {
            let mut connection = sqlx::SqliteConnection::connect(&self.database_url).await?;
            let (pages, free, size): (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT page_count FROM pragma_page_count()), \
                 (SELECT freelist_count FROM pragma_freelist_count()), \
                 (SELECT page_size FROM pragma_page_size())",
            )
            .fetch_one(&mut connection)
            .await?;
            Ok(u64::try_from((pages - free) * size)?)
        } else {
            let mut connection = sqlx::PgConnection::connect(&self.database_url).await?;
            let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                .fetch_one(&mut connection)
                .await?;
            Ok(u64::try_from(size)?)
        }
    }
}

/// The catalog's `invoice.paid` example, as the platform publishes it.
pub fn example_event() -> &'static Value {
    static EVENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    EVENT.get_or_init(|| {
        let data = zivio_core::catalog::Catalog::builtin()
            .event_type("invoice.paid")
            .expect("in the catalog")
            .example
            .clone();
        json!({"type": "invoice.paid", "resource": {"id": data["id"], "data": data}})
    })
}

/// User plus system CPU time of a process, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain numbers.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// CPU time of every PostgreSQL server process on this machine.
pub fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.starts_with("postgres"))
        })
        .filter_map(process_cpu)
        .sum()
}

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ; 100 on every Linux this runs on).
const USER_HZ: u64 = 100;

/// The `zivio-webhooks` binary beside this one, built first when run through cargo.
pub fn service_binary() -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let dir = here.parent().context("the benchmark's directory")?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.ends_with("release");
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "-p", "zivio-webhooks", "--bin", "zivio-webhooks"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().context("build zivio-webhooks")?;
        anyhow::ensure!(status.success(), "building zivio-webhooks failed");
    }
    let binary = dir.join("zivio-webhooks");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p zivio-webhooks`",
        binary.display()
    );
    Ok(binary)
}

/// Reads the service's log: counts the statements it logs into `statements`, and answers with
/// the address once it listens (or with what it logged before it exited without listening).
fn watch_log(
    stderr: tokio::process::ChildStderr,
    counted: Arc<AtomicU64>,
) -> tokio::sync::oneshot::Receiver<Result<String, String>> {
    let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
    let mut lines = BufReader::new(stderr).lines();
    tokio::spawn(async move {
        let mut listening = Some(listening_tx);
        let mut early = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"target\":\"sqlx::query\"") {
                counted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Ok(log) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if log["message"] == "listening"
                && let Some(sender) = listening.take()
            {
                let _ = sender.send(Ok(log["addr"].as_str().unwrap_or_default().to_owned()));
            } else if listening.is_some() {
                early.push(line);
            } else if log["level"] == "ERROR" {
                eprintln!("service: {line}");
            }
        }
        if let Some(sender) = listening {
            let _ = sender.send(Err(early.join("\n")));
        }
    });
    listening_rx
}
