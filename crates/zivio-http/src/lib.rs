//! The HTTP layer of Zivio Webhooks: axum routers for operations (and, as they arrive, the v4
//! API, the platform API and the admin UI), thin over the layers below. Handlers extract, call
//! and map; errors are RFC 9457 problem JSON.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use zivio_app::Services;
use zivio_core::keys::PlatformKeys;

pub mod admin;
mod api_v4;
mod error;
mod extract;
pub mod limits;
mod metrics;
mod openapi;
mod ops;
pub mod platform;
pub mod problem;

use problem::Problem;

/// Request bodies above this are refused with 413 (platform event batches get 16 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler may reach.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub platform_keys: PlatformKeys,
    /// Proxies whose `X-Forwarded-For` names the client (for sign-in rate limits).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub sign_in_limiter: Arc<admin::SignInLimiter>,
    /// v4 API requests per API key (429 with `Retry-After` beyond it).
    pub api_limiter: Arc<limits::RateLimiter>,
    /// Failed API key authentications per client address (429 before any lookup beyond it).
    pub api_key_failures: Arc<limits::FailedKeyLimiter>,
    /// How long a client may take to send a request body (408 after it).
    pub client_timeout: std::time::Duration,
}

/// A JSON answer that must never be cached anywhere: it shows a secret or key once.
fn no_store(status: axum::http::StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The routers to serve: everything on one listener, or the platform API and `/metrics`
/// split onto a listener of their own.
pub struct Routers {
    pub public: Router,
    pub platform: Option<Router>,
}

pub fn routers(state: AppState, separate_platform_listener: bool) -> Routers {
    let health = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    let (v4, v4_doc) = api_v4::routes().split_for_parts();
    let (platform_api, platform_doc) = platform::routes().split_for_parts();
    let mut document = v4_doc;
    document.merge(platform_doc);
    let document = Arc::new(openapi::document(document, state.services.catalog).to_string());
    let public = health.clone().merge(v4).merge(admin::routes()).route(
        "/v4/openapi.json",
        get(move || ops::openapi(document.clone())),
    );
    let platform = Router::new()
        .route("/metrics", get(ops::metrics))
        .merge(platform_api);
    if separate_platform_listener {
        Routers {
            public: finish(public, &state),
            platform: Some(finish(health.merge(platform), &state)),
        }
    } else {
        Routers {
            public: finish(public.merge(platform), &state),
            platform: None,
        }
    }
}

/// The middleware every router shares, outermost first: request id, tracing, metrics,
/// problem JSON for bare errors, body limits.
fn finish(router: Router<AppState>, state: &AppState) -> Router {
    router
        .fallback(|| async {
            Problem::new(
                axum::http::StatusCode::NOT_FOUND,
                problem::detail_for(axum::http::StatusCode::NOT_FOUND),
            )
        })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    metrics::track,
                ))
                .layer(middleware::from_fn(problem_for_bare_errors))
                // A panicking handler answers 500 (as problem JSON), never a dropped connection.
                .layer(CatchPanicLayer::new())
                .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
                // A slow client cannot hold a request open forever.
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                    state.client_timeout,
                ))
                // The hard cap; routes that take more (event batches) raise the default.
                .layer(RequestBodyLimitLayer::new(platform::BATCH_BODY_LIMIT)),
        )
        .with_state(state.clone())
}

/// One span per request: method, route template and request id; never the query string,
/// which may carry tokens.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        tenant = tracing::field::Empty
    )
}

/// Layers and axum itself answer some errors (413, 405, 408) with plain text; clients get the
/// same problem JSON from every error.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value == HeaderValue::from_static(problem::CONTENT_TYPE));
    // Admin pages answer errors with pages of their own.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if (status.is_client_error() || status.is_server_error()) && !is_problem && !is_page {
        let mut replaced = Problem::new(status, problem::detail_for(status)).into_response();
        if let Some(allow) = response.headers().get(header::ALLOW) {
            replaced.headers_mut().insert(header::ALLOW, allow.clone());
        }
        return replaced;
    }
    response
}
