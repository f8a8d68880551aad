//! The command-line tools against the real service: `verify` checks a request the service
//! really sent, and says which check failed when it does not verify.

use std::process::Command;

use serde_json::json;

use crate::support::api::Backend;
use crate::support::eventually;
use crate::support::sending::{WAIT, setup};

/// Runs `zivio-webhooks verify` on a capture; returns the exit code and what it printed.
fn verify(dir: &std::path::Path, headers: &str, body: &[u8], secret: &str) -> (i32, String) {
    std::fs::write(dir.join("headers.txt"), headers).unwrap();
    std::fs::write(dir.join("body.json"), body).unwrap();
    std::fs::write(dir.join("secret"), secret).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_zivio-webhooks"))
        .args(["verify", "--headers"])
        .arg(dir.join("headers.txt"))
        .arg("--body")
        .arg(dir.join("body.json"))
        .arg("--secret-file")
        .arg(dir.join("secret"))
        .env_remove("ZIVIO_WEBHOOK_SECRET")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn verify_accepts_a_real_request_and_names_what_fails() {
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let body = json!({"name": "cli", "url": setup.receiver.url("/cli"), "events": ["*"]});
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let (id, secret) = (
        created["webhook"]["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    let sent = setup
        .api
        .v4(
            &setup.key,
            "acme",
            reqwest::Method::POST,
            &format!("/v4/webhooks/{id}/test"),
            None,
        )
        .await;
    assert_eq!(sent.status, 202);
    let request = setup.receiver.wait_for("/cli", 1, WAIT).await.remove(0);
    let headers: String = request
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();

    let (code, out) = verify(dir.path(), &headers, &request.body, secret);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("valid: evt_test_") && out.contains("webhook.test"),
        "{out}"
    );

    let mut tampered = request.body.clone();
    tampered.extend_from_slice(b" ");
    let (code, out) = verify(dir.path(), &headers, &tampered, secret);
    assert_eq!(
        (code, out.trim()),
        (
            1,
            "invalid: no `v1` signature in `webhook-signature` matches this secret and body"
        )
    );

    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (code, out) = verify(dir.path(), &headers, &request.body, other);
    assert_eq!(code, 1);
    assert!(out.contains("no `v1` signature"), "{out}");

    let stale = headers
        .lines()
        .map(|line| {
            if line.starts_with("webhook-timestamp") {
                "webhook-timestamp: 1000000000".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (code, out) = verify(dir.path(), &stale, &request.body, secret);
    assert_eq!(code, 1);
    assert!(
        out.contains("invalid: the timestamp is") && out.contains("more than the 300 s allowed"),
        "{out}"
    );

    let unsigned: String = headers
        .lines()
        .filter(|line| !line.starts_with("webhook-signature"))
        .map(|line| format!("{line}\n"))
        .collect();
    let (code, out) = verify(dir.path(), &unsigned, &request.body, secret);
    assert_eq!(
        (code, out.trim()),
        (1, "invalid: the `webhook-signature` header is missing")
    );

    let (code, out) = verify(dir.path(), &headers, &request.body, "not-a-secret");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the secret is not valid"), "{out}");
}

/// Runs a platform tool of `zivio-webhooks` against the service; returns exit code, stdout and
/// stderr.
fn tool(
    api: &crate::support::api::Api,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zivio-webhooks"));
    command
        .args(args)
        .env("ZIVIO_WEBHOOKS_URL", api.service.url(""))
        .env(
            "ZIVIO_WEBHOOKS_PLATFORM_KEY",
            api.var("ZIVIO_WEBHOOKS_PLATFORM_KEY").unwrap(),
        );
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn platform_tools_publish_and_manage_the_directory() {
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let api = &setup.api;
    let body =
        json!({"name": "emit", "url": setup.receiver.url("/emit"), "events": ["invoices.*"]});
    api.create_webhook(&setup.key, "acme", body).await;

    // emit: a catalog example, delivered.
    let (code, id, err) = tool(
        api,
        &[
            "emit",
            "invoice.paid",
            "--tenant",
            "acme",
            "--division",
            "uk",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(id.starts_with("evt_"), "{id}");
    let received = setup.receiver.wait_for("/emit", 1, WAIT).await;
    assert_eq!(received[0].headers["webhook-id"], id.as_str());
    let (code, _, err) = tool(api, &["emit", "nothing.real", "--tenant", "acme"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not an event type of the catalog"), "{err}");

    // directory apply, twice: the second run changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("directory.json");
    std::fs::write(
        &file,
        json!({"tenants": [{"id": "globex", "name": "Globex", "roles": [
        {"name": "hooks", "permissions": ["webhooks:manage", "invoices:read:tenant"]}],
        "users": [{"id": "g1", "email": "g1@globex.example", "name": "G One", "active": true,
                   "placement": {"business_unit": "emea"}, "roles": ["hooks"]}]}]})
        .to_string(),
    )
    .unwrap();
    let store = api.store().await;
    let globex = zivio_core::ids::TenantId::parse("globex").unwrap();
    let g1 = zivio_core::ids::UserId::parse("g1").unwrap();
    let mut states = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = tool(api, &["directory", "apply", file.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "applied 1 tenant(s), 1 role(s), 1 user(s)");
        states.push(store.user_with_roles(&globex, &g1).await.unwrap().unwrap());
    }
    assert_eq!(states[0], states[1], "applying again changes nothing");
    assert_eq!(states[0].user.email, "g1@globex.example");

    // API keys: create (works at once), list, revoke (stops working).
    let user = ["--tenant", "globex", "--user", "g1"];
    let (code, key, err) = tool(api, &[&["api-key", "create"][..], &user].concat(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        api.v4(&key, "globex", reqwest::Method::GET, "/v4/webhooks", None)
            .await
            .status,
        200
    );
    let (_, listed, _) = tool(api, &[&["api-key", "list"][..], &user].concat(), &[]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let key_id = listed["api_keys"][0]["id"].as_str().unwrap().to_owned();
    let (code, _, err) = tool(
        api,
        &[&["api-key", "revoke"][..], &user, &[key_id.as_str()]].concat(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        api.v4(&key, "globex", reqwest::Method::GET, "/v4/webhooks", None)
            .await
            .status,
        401
    );

    // A password from the environment, then signing in with it; a sign-in link.
    let (code, _, err) = tool(
        api,
        &[&["password", "set"][..], &user].concat(),
        &[("ZIVIO_WEBHOOKS_NEW_PASSWORD", "a long passphrase here")],
    );
    assert_eq!(code, 0, "{err}");
    api.sign_in("globex", "g1@globex.example", "a long passphrase here")
        .await;
    let (code, link, err) = tool(api, &[&["sign-in-link"][..], &user].concat(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(link.contains("/admin/sign-in/link/"), "{link}");

    // Without a key the tools say where to find one.
    let mut command = Command::new(env!("CARGO_BIN_EXE_zivio-webhooks"));
    let output = command
        .args([
            "emit",
            "invoice.paid",
            "--tenant",
            "acme",
            "--data-dir",
            "/nonexistent",
        ])
        .env_remove("ZIVIO_WEBHOOKS_PLATFORM_KEY")
        .env("ZIVIO_WEBHOOKS_URL", api.service.url(""))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ZIVIO_WEBHOOKS_PLATFORM_KEY"));
}

/// A `zivio-webhooks listen` process and every line it printed so far.
struct Listening {
    _child: tokio::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Listening {
    fn start(args: &[&str], secret: &str) -> Listening {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_zivio-webhooks"))
            .arg("listen")
            .args(args)
            .env("ZIVIO_WEBHOOK_SECRET", secret)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let collected = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Listening {
            _child: child,
            lines,
        }
    }

    /// The output so far, once a line containing every one of `parts` has been printed.
    async fn wait_for(&self, parts: &[&str]) -> String {
        let what = format!("a line with {parts:?}");
        eventually(WAIT, &what, || async {
            let lines = self.lines.lock().unwrap().join("\n");
            if lines
                .lines()
                .any(|line| parts.iter().all(|part| line.contains(part)))
            {
                Ok(lines)
            } else {
                Err(lines)
            }
        })
        .await
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn listen_verifies_what_the_service_sends_and_passes_it_on() {
    let Some(mut api) = crate::support::api::Api::start(
        Backend::Sqlite,
        &[
            ("ZIVIO_WEBHOOKS_ALLOW_PRIVATE_CIDRS", "127.0.0.0/8"),
            ("ZIVIO_WEBHOOKS_RETRY_SCHEDULE", "1h"),
        ],
    )
    .await
    else {
        return;
    };
    let key = api.tenant_with_admin("acme", "u1").await;
    let (port, downstream_port) = (free_port(), free_port());
    let body =
        json!({"name": "listen", "url": format!("https://127.0.0.1:{port}/hook"), "events": ["*"]});
    let created = api.create_webhook(&key, "acme", body).await;
    let (id, secret) = (
        created["webhook"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    // A plain-HTTP listener plays the local app the first one passes verified events on to.
    let downstream = Listening::start(
        &["--http", "--addr", &format!("127.0.0.1:{downstream_port}")],
        &secret,
    );
    downstream.wait_for(&["listening on http://"]).await;
    let listening = Listening::start(
        &[
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--ca-file",
            ca.to_str().unwrap(),
            "--forward",
            &format!("http://127.0.0.1:{downstream_port}/app"),
        ],
        &secret,
    );
    listening
        .wait_for(&["listening on https://", "ZIVIO_WEBHOOKS_EXTRA_ROOT_CA"])
        .await;
    api.restart_with(&[("ZIVIO_WEBHOOKS_EXTRA_ROOT_CA", ca.to_str().unwrap())])
        .await;

    let sent = api
        .v4(
            &key,
            "acme",
            reqwest::Method::POST,
            &format!("/v4/webhooks/{id}/test"),
            None,
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let event = sent.body["event_id"].as_str().unwrap();
    let out = listening
        .wait_for(&[event, "webhook.test", "signature valid"])
        .await;
    assert!(out.contains("\"test\": true"), "the body, pretty: {out}");
    listening.wait_for(&["passed on to", "204"]).await;
    downstream
        .wait_for(&["POST /app", event, "signature valid"])
        .await;

    // A request that does not verify is answered 503 and the reason printed.
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{downstream_port}/app"))
        .header("webhook-id", "evt_forged")
        .header(
            "webhook-timestamp",
            time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
        )
        .header("webhook-signature", "v1,Zm9yZ2Vk")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    downstream
        .wait_for(&["evt_forged", "INVALID: no `v1` signature"])
        .await;
}

/// The receiver guide's manual verification (Python, standard library only) checks a request
/// the service really sent: the code block is taken from `docs/receiving-webhooks.md` as it is.
#[tokio::test]
async fn the_guides_python_example_verifies_a_real_request() {
    let guide = include_str!("../../../../docs/receiving-webhooks.md");
    let start = guide.find("Without a library").expect("the manual example");
    let code = guide[start..]
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block");
    let Some(setup) = setup(Backend::Sqlite, "1h", true).await else {
        return;
    };
    let body = json!({"name": "guide", "url": setup.receiver.url("/guide"), "events": ["*"]});
    let created = setup.api.create_webhook(&setup.key, "acme", body).await;
    let (id, secret) = (
        created["webhook"]["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    setup
        .api
        .v4(
            &setup.key,
            "acme",
            reqwest::Method::POST,
            &format!("/v4/webhooks/{id}/test"),
            None,
        )
        .await;
    let request = setup.receiver.wait_for("/guide", 1, WAIT).await.remove(0);
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap())))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body"), &request.body).unwrap();
    std::fs::write(
        dir.path().join("headers.json"),
        serde_json::Value::Object(headers).to_string(),
    )
    .unwrap();
    let script = format!(
        "{code}\nimport json, sys\nheaders = json.load(open(sys.argv[1]))\nbody = open(sys.argv[2], 'rb').read()\n\
         print(verify(sys.argv[3], headers, body), verify(sys.argv[3], headers, body + b' '))\n"
    );
    std::fs::write(dir.path().join("verify.py"), script).unwrap();
    let output = Command::new("python3")
        .arg(dir.path().join("verify.py"))
        .arg(dir.path().join("headers.json"))
        .arg(dir.path().join("body"))
        .arg(secret)
        .output()
        .expect("python3 runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        printed.trim(),
        "True False",
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
