//! Headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`), with a small client of our own on reqwest: the real browser renders the
//! real pages, runs the real script, enforces the real CSP and cookie rules.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::eventually;

/// How long the browser tests wait for a page to show what they expect.
const PATIENCE: Duration = Duration::from_secs(20);

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (with a note) when they are not
    /// installed (`.ci/run` installs them).
    pub async fn start() -> Option<Browser> {
        if !std::path::Path::new("/usr/bin/chromedriver").exists() {
            // CI installs the browser and sets this: there, a missing browser is a failure.
            assert!(
                std::env::var_os("ZIVIO_REQUIRE_BROWSER").is_none(),
                "ZIVIO_REQUIRE_BROWSER is set but /usr/bin/chromedriver is missing"
            );
            eprintln!(
                "chromedriver is not installed (apt-get install chromium chromium-driver): browser test skipped"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        // reqwest is built without a default TLS provider; the service installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        eventually(PATIENCE, "chromedriver answers", || async {
            let status = http.get(format!("{base}/status")).send().await;
            status.map(drop).map_err(|error| error.to_string())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Some(Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        })
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("WebDriver answers")
            .json()
            .await
            .unwrap();
        answer["value"].clone()
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let value = self.command(method, path, body).await;
        if let Some(error) = value.get("error") {
            panic!("WebDriver {path}: {error}: {}", value["message"]);
        }
        value
    }

    pub async fn open(&self, url: &str) {
        self.ok(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.ok(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.ok(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs a script in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.ok(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    pub async fn find(&self, css: &str) -> String {
        let value = self
            .ok(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        value[ELEMENT].as_str().unwrap().to_owned()
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let script = format!("return document.querySelector({}).innerText", json!(css));
        self.eval(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    pub async fn exists(&self, css: &str) -> bool {
        let value = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        value.as_array().is_some_and(|found| !found.is_empty())
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.ok(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Presses keys as a keyboard would, into whatever has the focus.
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|key| {
                [
                    json!({"type": "keyDown", "value": key.to_string()}),
                    json!({"type": "keyUp", "value": key.to_string()}),
                ]
            })
            .collect();
        self.ok(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    pub async fn dialog_open(&self) -> bool {
        self.command(reqwest::Method::GET, "/alert/text", None)
            .await
            .get("error")
            .is_none()
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.ok(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Waits until the current URL satisfies `wanted` (a click starts navigation; it may not
    /// have finished when the click returns); returns it.
    pub async fn wait_for_url(&self, wanted: impl Fn(&str) -> bool) -> String {
        eventually(PATIENCE, "the wanted page", || async {
            let url = self.url().await;
            if wanted(&url) { Ok(url) } else { Err(url) }
        })
        .await
    }

    /// Waits until the page's text contains `text`, reloading it when `reload` says so.
    pub async fn wait_for_text(&self, text: &str, reload: bool) -> String {
        let what = format!("`{text}` on the page");
        let mut first = true;
        eventually(PATIENCE, &what, || {
            let reload = reload && !std::mem::take(&mut first);
            async move {
                if reload {
                    self.ok(reqwest::Method::POST, "/refresh", Some(json!({})))
                        .await;
                }
                let body = self.eval("return document.body.innerText").await;
                let body = body.as_str().unwrap_or_default().to_owned();
                if body.contains(text) {
                    Ok(body)
                } else {
                    Err(body)
                }
            }
        })
        .await
    }

    /// Waits until the element at `selector` says exactly `text`, reloading the page meanwhile
    /// when `reload` says so.
    pub async fn wait_for_text_of(&self, selector: &str, text: &str, reload: bool) {
        let what = format!("`{text}` at {selector}");
        let mut first = true;
        eventually(PATIENCE, &what, || {
            let reload = reload && !std::mem::take(&mut first);
            async move {
                if reload {
                    self.ok(reqwest::Method::POST, "/refresh", Some(json!({})))
                        .await;
                }
                let shown = self.text_of(selector).await;
                if shown == text { Ok(()) } else { Err(shown) }
            }
        })
        .await;
    }

    /// Waits until a table row of the page holds `text`, reloading the page meanwhile.
    pub async fn wait_for_row(&self, text: &str) {
        let rows =
            "const body = document.querySelector('tbody'); return body ? body.textContent : ''";
        let what = format!("a row with `{text}`");
        let mut first = true;
        eventually(PATIENCE, &what, || {
            let reload = !std::mem::take(&mut first);
            async move {
                if reload {
                    self.ok(reqwest::Method::POST, "/refresh", Some(json!({})))
                        .await;
                }
                let body = self.eval(rows).await;
                let body = body.as_str().unwrap_or_default().to_owned();
                if body.contains(text) {
                    Ok(())
                } else {
                    Err(body)
                }
            }
        })
        .await;
    }

    /// Saves a screenshot when `ZIVIO_SCREENSHOTS` names a directory (never into the repo).
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("ZIVIO_SCREENSHOTS") else {
            return;
        };
        use base64::Engine as _;
        let png = self.ok(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}.png")),
            bytes,
        )
        .unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session first, so that chromedriver closes Chromium: killing chromedriver
        // alone leaves its browser running, orphaned, after the test.
        self.end_session();
        let _ = self.driver.start_kill();
    }
}

impl Browser {
    /// `DELETE /session/{id}`, blocking (drop cannot wait for the async client): a request
    /// written by hand on a plain socket, answered within a few seconds at most.
    fn end_session(&self) {
        use std::io::{Read as _, Write as _};
        let Some(address) = self.base.strip_prefix("http://") else {
            return;
        };
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read_to_end(&mut Vec::new());
        }
    }
}
