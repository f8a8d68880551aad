//! Extractors: authenticated callers of the v4 and platform APIs, and JSON bodies whose errors
//! name the offending field.

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use zivio_app::{AppError, Caller};

use crate::AppState;
use crate::error::ApiError;
use crate::problem::{FieldError, Problem};

/// A v4 API caller: `X-API-Key` and `zivio-tenant-id`, checked against the directory now.
pub struct ApiCaller(pub Caller);

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let (Some(key), Some(tenant)) = (header("x-api-key"), header("zivio-tenant-id")) else {
            return Err(AppError::Unauthenticated(
                "Send an API key in X-API-Key and the tenant in zivio-tenant-id.",
            )
            .into());
        };
        // Limited per key before the key is looked up: a flood costs no database work.
        if let Err(wait) = state.api_limiter.take(key) {
            return Err(AppError::RateLimited(retry_after(wait)).into());
        }
        // An address that keeps presenting keys that do not authenticate is refused before any
        // lookup (keys that worked lately pass).
        let client = crate::admin::client_ip(
            &parts.headers,
            parts.extensions.get::<ConnectInfo<SocketAddr>>(),
            state,
        );
        let spent = match client.map(|ip| state.api_key_failures.admit(key, ip)) {
            Some(Err(wait)) => return Err(AppError::RateLimited(retry_after(wait)).into()),
            Some(Ok(spent)) => spent,
            None => false,
        };
        // Malformed keys are refused without a lookup, but count as failures all the same.
        let authenticated =
            zivio_app::caller::authenticate_api_key(&state.services, key, tenant).await;
        if let Some(ip) = client {
            let verdict = match &authenticated {
                Ok(_) => Some(true),
                Err(AppError::Unauthenticated(_)) => Some(false),
                Err(_) => None,
            };
            state.api_key_failures.settle(key, ip, spent, verdict);
        }
        let caller = authenticated?;
        tracing::Span::current().record("tenant", caller.tenant.as_str());
        Ok(ApiCaller(caller))
    }
}

/// Whole seconds for `Retry-After`, rounded up.
fn retry_after(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The Zivio platform: `Authorization: Bearer <platform key>`, any configured key.
pub struct PlatformCaller;

impl FromRequestParts<AppState> for PlatformCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key);
        match presented {
            Some(key) if state.platform_keys.accepts(key.trim()) => Ok(PlatformCaller),
            _ => {
                let mut response = Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "Send a platform key as Authorization: Bearer <key>.",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
                Err(response)
            }
        }
    }
}

/// A JSON body: 415 without a JSON content type, 400 for malformed JSON, 422 naming the field
/// whose value has the wrong shape.
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ValidJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                let essence = value.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")
            });
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "The request body must be JSON with Content-Type: application/json.",
            )
            .into_response());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_failure)?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(ValidJson(value)),
            Err(error) => Err(json_rejection::<T>(&bytes, &error)),
        }
    }
}

/// Why a body did not parse. The first parse tracks no field path (it costs much time on the
/// large event batches); a failed body is parsed again, tracking it, to name the field.
fn json_rejection<T: DeserializeOwned>(bytes: &[u8], error: &serde_json::Error) -> Response {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Err(error) => json_problem(&error).into_response(),
        // The value parsed: what failed is what follows it (`{...}garbage`).
        Ok(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            format!("The body is not valid JSON: {error}."),
        )
        .into_response(),
    }
}

fn json_problem(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = error.inner();
    if inner.is_syntax() || inner.is_eof() {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            format!("The body is not valid JSON: {inner}."),
        );
    }
    // serde's messages end with the position; the field path says more.
    let message = inner.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    let path = error.path().to_string();
    let field = match (path.as_str(), named_field(&message)) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        // serde reports a missing field at its parent, an unknown one at itself.
        (parent, Some(name)) if message.starts_with("missing") => format!("{parent}.{name}"),
        _ => path,
    };
    let mut problem = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("`{field}`: {message}."),
    );
    problem.errors = vec![FieldError { field, message }];
    problem
}

/// The field in serde's "missing field `x`" and "unknown field `x`, expected ..." messages.
fn named_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

/// A body that could not be read: too slow (408, `ZIVIO_WEBHOOKS_CLIENT_TIMEOUT`), too large
/// (413), or broken (400).
pub(crate) fn body_failure(rejection: axum::extract::rejection::BytesRejection) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(error) = source {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "The request body did not arrive in time.",
            )
            .into_response();
        }
        source = error.source();
    }
    rejection.into_response()
}
