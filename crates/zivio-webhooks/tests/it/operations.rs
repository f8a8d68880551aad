//! Health, readiness, metrics, request ids and problem JSON over real sockets.

use serde_json::{Value, json};

use crate::support::service::Service;

#[tokio::test]
async fn health_readiness_and_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]).await;
    let health = reqwest::get(service.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let client = reqwest::Client::new();
    let ready = client
        .get(service.url("/readyz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.headers()["x-request-id"],
        "trace-me-123",
        "a given request id is kept"
    );
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]).await;
    for _ in 0..3 {
        reqwest::get(service.url("/readyz")).await.unwrap();
    }
    reqwest::get(service.url("/no/such/4711")).await.unwrap();
    let text = reqwest::get(service.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"zivio_http_requests_total{method="GET",route="/readyz",status="200"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"zivio_http_request_duration_seconds_count{method="GET",route="/readyz",status="200"} 3"#), "{text}");
    assert!(!text.contains("4711"), "raw paths never become labels");
    assert!(
        text.contains(&format!(
            r#"zivio_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(service.terminate().await.success());
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

#[tokio::test]
async fn errors_are_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    problem(
        client.get(service.url("/nowhere")).send().await.unwrap(),
        404,
    )
    .await;
    let not_allowed = client.delete(service.url("/healthz")).send().await.unwrap();
    assert_eq!(not_allowed.headers()["allow"], "GET,HEAD");
    problem(not_allowed, 405).await;
    // Every endpoint: at most 16 MiB (the size of an event batch), refused before reading.
    // (Announced, not sent: the service answers before reading a byte of it.)
    let mut stream = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    let request = format!(
        "POST /healthz HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        service.addr,
        16 * 1024 * 1024 + 1
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut head = vec![0; 64];
    let read = tokio::io::AsyncReadExt::read(&mut stream, &mut head)
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&head[..read]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // JSON endpoints other than event batches: at most 1 MiB.
    let platform_key = std::fs::read_to_string(dir.path().join("platform.key")).unwrap();
    let too_large = client
        .put(service.url("/platform/v4/tenants/acme"))
        .bearer_auth(platform_key.trim())
        .header("content-type", "application/json")
        .body(format!(r#"{{"name": "{}"}}"#, "a".repeat(1024 * 1024)))
        .send()
        .await
        .unwrap();
    problem(too_large, 413).await;
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn a_separate_platform_listener_takes_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &[("ZIVIO_WEBHOOKS_PLATFORM_LISTEN", "127.0.0.1:0")],
    )
    .await;
    let platform = service
        .logged_addr("platform API and metrics listening")
        .expect("platform listener address logged");
    assert_ne!(platform, service.addr);
    assert_eq!(
        reqwest::get(service.url("/metrics"))
            .await
            .unwrap()
            .status(),
        404
    );
    let metrics = reqwest::get(format!("http://{platform}/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        reqwest::get(format!("http://{platform}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(service.terminate().await.success());
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]).await;
    let answer = reqwest::get(service.url("/v4/openapi.json")).await.unwrap();
    assert_eq!(answer.status(), 200, "served without authentication");
    let document: Value = answer.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("get", "/v4/event-types"),
        ("get", "/v4/event-types/{type}/schema"),
        ("get", "/v4/webhooks"),
        ("post", "/v4/webhooks"),
        ("get", "/v4/webhooks/{id}"),
        ("patch", "/v4/webhooks/{id}"),
        ("delete", "/v4/webhooks/{id}"),
        ("post", "/v4/webhooks/{id}/rotate-secret"),
        ("post", "/v4/webhooks/{id}/disable"),
        ("post", "/v4/webhooks/{id}/enable"),
        ("get", "/v4/audit-log"),
        ("put", "/platform/v4/tenants/{tenant_id}"),
        ("delete", "/platform/v4/tenants/{tenant_id}"),
        ("put", "/platform/v4/tenants/{tenant_id}/roles/{role}"),
        ("delete", "/platform/v4/tenants/{tenant_id}/roles/{role}"),
        ("put", "/platform/v4/tenants/{tenant_id}/users/{user_id}"),
        ("delete", "/platform/v4/tenants/{tenant_id}/users/{user_id}"),
        (
            "put",
            "/platform/v4/tenants/{tenant_id}/users/{user_id}/password",
        ),
        (
            "post",
            "/platform/v4/tenants/{tenant_id}/users/{user_id}/api-keys",
        ),
        (
            "get",
            "/platform/v4/tenants/{tenant_id}/users/{user_id}/api-keys",
        ),
        (
            "delete",
            "/platform/v4/tenants/{tenant_id}/users/{user_id}/api-keys/{key_id}",
        ),
        (
            "post",
            "/platform/v4/tenants/{tenant_id}/users/{user_id}/sign-in-links",
        ),
        ("post", "/platform/v4/tenants/{tenant_id}/events"),
        ("post", "/platform/v4/tenants/{tenant_id}/events/batch"),
        ("get", "/v4/webhooks/{id}/preview"),
        ("post", "/v4/webhooks/{id}/test"),
        ("get", "/v4/deliveries"),
        ("get", "/v4/deliveries/{id}"),
        ("post", "/v4/deliveries/{id}/resend"),
        ("post", "/v4/webhooks/{id}/recover"),
        ("get", "/v4/webhooks/{id}/recoveries"),
        ("get", "/v4/webhooks/{id}/recoveries/{recovery_id}"),
        ("post", "/v4/webhooks/{id}/recoveries/{recovery_id}/cancel"),
    ];
    let paths = document["paths"].as_object().unwrap();
    let operations: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        operations,
        expected.len(),
        "no undocumented and no phantom operations"
    );
    for (method, path) in expected {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        if path == "/v4/event-types/{type}/schema" {
            assert_eq!(
                operation["security"],
                json!([{}]),
                "public, like this document"
            );
            continue;
        }
        assert!(
            operation["security"].is_array(),
            "{method} {path} states its authentication"
        );
        let responses = operation["responses"].as_object().unwrap();
        let error = responses
            .get("401")
            .unwrap_or_else(|| panic!("{method} {path} documents 401"));
        assert!(
            error["content"]["application/problem+json"].is_object(),
            "{method} {path}: errors are problem JSON"
        );
        assert!(responses.keys().any(|status| status.starts_with('2')));
    }
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["tenant"]["name"], "zivio-tenant-id");
    assert_eq!(schemes["platform_key"]["scheme"], "bearer");
    let webhook = &document["components"]["schemas"]["Webhook"]["properties"];
    for field in [
        "id",
        "name",
        "url",
        "events",
        "owner_active",
        "disabled_reason",
        "secret_hint",
        "health",
    ] {
        assert!(webhook[field].is_object(), "Webhook.{field}");
    }
    assert!(webhook.get("secret").is_none());
    assert!(service.terminate().await.success());
}
