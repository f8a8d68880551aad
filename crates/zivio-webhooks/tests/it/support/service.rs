use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

const BINARY: &str = env!("CARGO_BIN_EXE_zivio-webhooks");
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or exited) service process.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    output: Output,
}

/// Lines the process printed, shared with the tasks that read them.
#[derive(Clone, Default)]
struct Output {
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

impl Output {
    fn capture(
        &self,
        stream: impl AsyncRead + Unpin + Send + 'static,
        into: Arc<Mutex<Vec<String>>>,
    ) {
        let changed = self.changed.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                into.lock().unwrap().push(line);
                changed.notify_waiters();
            }
            changed.notify_waiters();
        });
    }

    fn logs(&self) -> Vec<Value> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }
}

/// The environment every test service gets: JSON logs, port 0, the given data directory, and
/// nothing inherited from the caller's environment.
fn command(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("ZIVIO_WEBHOOKS_LISTEN", "127.0.0.1:0")
        .env("ZIVIO_WEBHOOKS_LOG_FORMAT", "json")
        .env("ZIVIO_WEBHOOKS_LOG", "info")
        .env("ZIVIO_WEBHOOKS_DATA_DIR", data_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// reqwest is built with rustls but without a default crypto provider (the service brings its
/// own); test clients use ring too.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Service {
    /// Starts `serve` and waits until it logs that it is listening.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Service {
        install_crypto_provider();
        let mut child = command(data_dir, env, &["serve"])
            .spawn()
            .expect("spawn the service");
        let output = Output::default();
        output.capture(child.stdout.take().unwrap(), output.stdout.clone());
        output.capture(child.stderr.take().unwrap(), output.stderr.clone());
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                let changed = output.changed.notified();
                if let Some(addr) = listening_addr(&output.logs(), "listening") {
                    return addr;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the service exited with {status} before listening\n{}",
                        output.describe()
                    );
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the service did not start listening\n{}", output.describe()));
        Service {
            child,
            addr,
            output,
        }
    }

    /// The process id (to read its memory use from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The address of a log line with this message, such as the platform listener's.
    pub fn logged_addr(&self, message: &str) -> Option<SocketAddr> {
        listening_addr(&self.output.logs(), message)
    }

    pub fn stdout(&self) -> String {
        self.output.stdout.lock().unwrap().join("\n")
    }

    /// The body of a plain `GET` of `path` (metrics, public documents).
    pub async fn text(&self, path: &str) -> String {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn stderr(&self) -> String {
        self.output.stderr.lock().unwrap().join("\n")
    }

    pub fn logs(&self) -> Vec<Value> {
        self.output.logs()
    }

    /// Kills the process outright (SIGKILL: no shutdown work at all) and waits for it.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(START_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit after SIGTERM\n{}", self.output.describe()))
            .unwrap()
    }
}

fn listening_addr(logs: &[Value], message: &str) -> Option<SocketAddr> {
    logs.iter()
        .find(|line| line["message"] == message)
        .and_then(|line| line["addr"].as_str())
        .and_then(|addr| addr.parse().ok())
}

/// Runs the binary to completion (a command, or a start that must fail).
pub async fn run(
    data_dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (ExitStatus, String, String) {
    let output = tokio::time::timeout(START_TIMEOUT, command(data_dir, env, args).output())
        .await
        .expect("the command finished")
        .expect("the binary ran");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
