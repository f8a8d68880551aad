//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/v4/openapi.json` without authentication.

use serde_json::{Value, json};
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use zivio_core::catalog::{Catalog, TEST_EVENT_TYPE};
use zivio_core::contract::{Contracts, Refs};

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
        (name = "recoveries", description = "Resending everything that failed to a webhook since a point in time"),
        (name = "audit log", description = "Who changed what"),
        (name = "platform", description = "Service-to-service API of the Zivio platform"),
    ),
    components(schemas(Problem)),
)]
struct Base;

/// The whole document: the generated endpoints, and a `webhooks` entry per event type whose
/// request body is that type's envelope schema (its resources under `components/schemas`).
pub(crate) fn document(generated: OpenApi, catalog: &Catalog) -> Value {
    let mut document = serde_json::to_value(finish(generated)).expect("the document serialises");
    let contracts = Contracts::of(catalog, Refs::Components);
    let schemas = &mut document["components"]["schemas"];
    for (name, schema) in contracts.definitions() {
        schemas[name] = schema;
    }
    let types = catalog
        .collections()
        .iter()
        .flat_map(|c| {
            c.event_types
                .iter()
                .map(|t| (t.name.as_str(), t.description.as_str()))
        })
        .chain([(
            TEST_EVENT_TYPE,
            "A test event, sent on demand to one webhook.",
        )]);
    let webhooks: serde_json::Map<String, Value> = types
        .map(|(event_type, description)| {
            let envelope = contracts
                .envelope(event_type)
                .expect("every type has a contract");
            (
                event_type.to_owned(),
                webhook(event_type, description, envelope),
            )
        })
        .collect();
    document["webhooks"] = Value::Object(webhooks);
    document
}

/// What a receiver gets for one event type: a signed `POST` of its envelope.
fn webhook(event_type: &str, description: &str, envelope: Value) -> Value {
    let header = |name: &str, description: &str, pattern: &str| {
        json!({"name": name, "in": "header", "required": true, "description": description,
               "schema": {"type": "string", "pattern": pattern}})
    };
    json!({"post": {
        "summary": event_type,
        "description": format!("{description} The body is signed (Standard Webhooks): verify `webhook-signature` over `webhook-id.webhook-timestamp.body` before trusting it."),
        "operationId": format!("receive_{}", event_type.replace('.', "_")),
        "parameters": [
            header("webhook-id", "The event id (`evt_...`): the same for every retry; deduplicate on it.", "^evt_"),
            header("webhook-timestamp", "Unix time of this attempt, in seconds.", "^[0-9]+$"),
            header("webhook-signature", "`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`; several, space-separated, during a rotation.", "^v1,"),
        ],
        "requestBody": {"required": true, "content": {"application/json": {"schema": envelope}}},
        "responses": {
            "2XX": {"description": "Received: nothing more is sent for this event."},
            "5XX": {"description": "Not received: the event is sent again on the retry schedule."},
        },
    }})
}

/// Adds the security schemes and the service version to the generated document.
fn finish(generated: OpenApi) -> OpenApi {
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
