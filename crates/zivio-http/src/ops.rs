//! Operations endpoints: liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::problem::Problem;

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers; 503 while it does not.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.services.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed: database unreachable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database does not answer.",
            )
            .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.services.metrics.render(),
    )
        .into_response()
}

/// `GET /v4/openapi.json`: the API description, no authentication.
pub async fn openapi(document: std::sync::Arc<String>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str().to_owned(),
    )
        .into_response()
}
