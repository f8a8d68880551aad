//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/v4/openapi.json` without authentication.

use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::problem::Problem;

/// Error answers every v4 endpoint may give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum V4Errors {
    /// Missing, malformed or invalid `X-API-Key`, a key of another tenant, or an inactive user.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The user lacks `webhooks:manage`, or the privilege boundary refuses the action.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such resource in this tenant.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Too many requests with this API key, or too many failed API keys from this client
    /// address; `Retry-After` says when to try again.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// The database is unavailable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Error answers of endpoints that take a JSON body.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum BodyErrors {
    /// Malformed JSON.
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// The body exceeds the size limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
    /// Invalid fields, listed in `errors`.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
}

/// Error answers every platform endpoint may give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum PlatformErrors {
    /// Missing or wrong platform key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// No such tenant, user, role or key.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Invalid path segment (tenant or user id).
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// The database is unavailable.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Zivio Webhooks",
        description = "Signed, durable webhooks for the Zivio platform: the v4 API for tenant admins \
                       (`X-API-Key` + `zivio-tenant-id`) and the platform API (`Authorization: Bearer`).",
    ),
    tags(
        (name = "event types", description = "The catalog of subscribable events"),
        (name = "webhooks", description = "Managing webhooks"),
        (name = "deliveries", description = "Every delivery attempt, and resending"),
        (name = "audit log", description = "Who changed what"),
        (name = "platform", description = "Service-to-service API of the Zivio platform"),
    ),
    components(schemas(Problem)),
)]
struct Base;

/// Adds the security schemes and the service version to the generated document.
pub(crate) fn finish(generated: OpenApi) -> OpenApi {
    let mut document = <Base as utoipa::OpenApi>::openapi();
    document.merge(generated);
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
    );
    components.add_security_scheme(
        "tenant",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "zivio-tenant-id",
            "The tenant the API key belongs to.",
        ))),
    );
    components.add_security_scheme(
        "platform_key",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    document
}
