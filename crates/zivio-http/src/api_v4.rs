//! The v4 API (`X-API-Key` + `zivio-tenant-id`): event types, webhooks, deliveries, audit log. Handlers
//! extract, call the use case, and map the answer.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zivio_app::webhooks::{self, NewWebhook, WebhookChanges, WebhookView, WithSecret};
use zivio_app::{AppError, FieldError};
use zivio_core::custom_header::HeaderInput;

use crate::error::ApiResult;
use crate::extract::{ApiCaller, ValidJson};
use crate::openapi::{BodyErrors, V4Errors};
use crate::problem::Problem;
use crate::{AppState, no_store};

mod recoveries;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_event_types))
        .routes(routes!(event_type_schema))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(disable_webhook))
        .routes(routes!(enable_webhook))
        .routes(routes!(preview_payload))
        .routes(routes!(send_test_event))
        .routes(routes!(recoveries::recover))
        .routes(routes!(recoveries::list_recoveries))
        .routes(routes!(recoveries::get_recovery))
        .routes(routes!(recoveries::cancel_recovery))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(resend_delivery))
        .routes(routes!(list_audit_log))
        // Answers show URLs and audit data, and X-API-Key is not a header shared caches know
        // to be private: never let anything store them.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// 1 to 100 characters.
    name: String,
    /// `https://` (public addresses only), at most 2,048 characters.
    url: String,
    /// At most 1,000 characters.
    #[serde(default)]
    description: Option<String>,
    /// At least one: an event type, `<collection>.*` (or the `<type prefix>.*` alias), or `*`.
    events: Vec<String>,
    /// Up to 10 custom request headers, `{"<name>": "<value>"}`, sent with every attempt;
    /// values are stored encrypted and never shown again.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    headers: Option<HeaderInput>,
    /// Requests per second the receiver takes at most, 1 to 10,000; null or absent: no limit.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    rate_limit: Option<i64>,
}

/// Any subset of the fields; changing `url`, `events` or `headers` needs access that covers
/// the owner's.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    name: Option<String>,
    /// A URL of another origin (scheme, host or port) removes the custom headers unless
    /// `headers` is given too.
    url: Option<String>,
    description: Option<String>,
    events: Option<Vec<String>>,
    /// Replaces every custom header (`{}` removes them all).
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    headers: Option<HeaderInput>,
    /// Requests per second, 1 to 10,000; null removes the limit. Needs access that covers the
    /// owner's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    rate_limit: Option<Option<i64>>,
}

/// A field that is present, even as `null` (`Some(None)`), as opposed to absent (`None`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(deserializer).map(Some)
}

#[derive(Serialize, utoipa::ToSchema)]
struct WebhookBody {
    webhook: WebhookView,
}

#[derive(Serialize, utoipa::ToSchema)]
struct WebhookList {
    webhooks: Vec<WebhookView>,
}

/// The signing secret is in this answer only; store it now.
#[derive(Serialize, utoipa::ToSchema)]
struct WebhookWithSecret {
    webhook: WebhookView,
    /// `whsec_` + base64 of 32 random bytes.
    secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventTypeBody {
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    name: String,
    description: String,
    /// The resource's v4 representation: the `data` of such an event.
    #[schema(value_type = Object)]
    example: Value,
    /// Where the JSON Schema of this type's envelope is (no authentication needed).
    schema: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CategoryBody {
    name: String,
    collection: String,
    /// `<collection>.*`, the subscription to the whole category.
    wildcard: String,
    event_types: Vec<EventTypeBody>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventTypes {
    categories: Vec<CategoryBody>,
}

/// The event catalog: every subscribable type with a description and an example payload.
#[utoipa::path(get, path = "/v4/event-types", tag = "event types", security(("api_key" = [], "tenant" = [])),
    responses((status = 200, description = "Success", body = EventTypes), V4Errors))]
async fn list_event_types(State(state): State<AppState>, _: ApiCaller) -> Json<EventTypes> {
    let categories = state
        .services
        .catalog
        .collections()
        .iter()
        .map(|collection| CategoryBody {
            name: collection.category.clone(),
            collection: collection.name.clone(),
            wildcard: collection.wildcard(),
            event_types: collection
                .event_types
                .iter()
                .map(|t| EventTypeBody {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    example: t.example.clone(),
                    schema: schema_path(&t.name),
                })
                .collect(),
        })
        .collect();
    Json(EventTypes { categories })
}

fn schema_path(event_type: &str) -> String {
    format!("/v4/event-types/{event_type}/schema")
}

/// The JSON Schema (draft 2020-12) of an event type's envelope, as receivers get it: for
/// generating types and validators. Public, like the OpenAPI document.
#[utoipa::path(get, path = "/v4/event-types/{type}/schema", tag = "event types", security(()),
    params(("type" = String, Path, description = "An event type of the catalog, or `webhook.test`")),
    responses((status = 200, description = "The schema", content_type = "application/schema+json", body = Object),
              (status = 404, description = "No such event type", body = Problem, content_type = "application/problem+json")))]
async fn event_type_schema(
    State(state): State<AppState>,
    Path(event_type): Path<String>,
) -> Response {
    let id = state
        .services
        .settings
        .public_url
        .join(schema_path(&event_type).trim_start_matches('/'))
        .map(String::from)
        .unwrap_or_default();
    match state.services.contracts.envelope_schema(&event_type, &id) {
        // Constant for a running version: caches may keep it (unlike the API's answers).
        Some(schema) => (
            [
                (header::CONTENT_TYPE, "application/schema+json"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            Json(schema),
        )
            .into_response(),
        None => Problem::new(StatusCode::NOT_FOUND, "No such event type.").into_response(),
    }
}

/// The tenant's webhooks, oldest first.
#[utoipa::path(get, path = "/v4/webhooks", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    responses((status = 200, description = "Success", body = WebhookList), V4Errors))]
async fn list_webhooks(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
) -> ApiResult<Json<WebhookList>> {
    let webhooks = webhooks::list(&state.services, &caller).await?;
    Ok(Json(WebhookList { webhooks }))
}

/// Creates a webhook owned by the caller; the answer holds the signing secret, shown once.
#[utoipa::path(post, path = "/v4/webhooks", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    request_body = CreateWebhookRequest,
    responses((status = 201, description = "Created", body = WebhookWithSecret), (status = 409, description = "The tenant's webhook limit is reached", body = Problem, content_type = "application/problem+json"), V4Errors, BodyErrors))]
async fn create_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    ValidJson(body): ValidJson<CreateWebhookRequest>,
) -> ApiResult<Response> {
    let new = NewWebhook {
        name: body.name,
        url: body.url,
        description: body.description,
        events: body.events,
        headers: body.headers,
        rate_limit: body.rate_limit,
    };
    let created = webhooks::create(&state.services, &caller, new).await?;
    Ok(with_secret(StatusCode::CREATED, created))
}

/// One webhook; the URL is scheme and host only unless the caller covers the owner.
#[utoipa::path(get, path = "/v4/webhooks/{id}", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")),
    responses((status = 200, description = "Success", body = WebhookBody), V4Errors))]
async fn get_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = webhooks::get(&state.services, &caller, &id).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// Edits a webhook; changing the URL or events needs access that covers the owner's.
#[utoipa::path(patch, path = "/v4/webhooks/{id}", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")), request_body = UpdateWebhookRequest,
    responses((status = 200, description = "Success", body = WebhookBody), V4Errors, BodyErrors))]
async fn update_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<UpdateWebhookRequest>,
) -> ApiResult<Json<WebhookBody>> {
    let changes = WebhookChanges {
        name: body.name,
        url: body.url,
        description: body.description,
        events: body.events,
        headers: body.headers,
        rate_limit: body.rate_limit,
    };
    let webhook = webhooks::update(&state.services, &caller, &id, changes).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// Deletes a webhook and its history (the audit log keeps its entries); needs coverage.
#[utoipa::path(delete, path = "/v4/webhooks/{id}", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")),
    responses((status = 204, description = "Deleted"), V4Errors))]
async fn delete_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    webhooks::delete(&state.services, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the signing secret at once; the new one is in this answer only. Needs coverage.
#[utoipa::path(post, path = "/v4/webhooks/{id}/rotate-secret", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")),
    responses((status = 200, description = "Success", body = WebhookWithSecret), V4Errors))]
async fn rotate_secret(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rotated = webhooks::rotate_secret(&state.services, &caller, &id).await?;
    Ok(with_secret(StatusCode::OK, rotated))
}

/// Disables a webhook and cancels its queued deliveries; open to every manager.
#[utoipa::path(post, path = "/v4/webhooks/{id}/disable", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")),
    responses((status = 200, description = "Success", body = WebhookBody), V4Errors))]
async fn disable_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = webhooks::disable(&state.services, &caller, &id).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// Enables a webhook from the next event on; needs coverage.
#[utoipa::path(post, path = "/v4/webhooks/{id}/enable", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")),
    responses((status = 200, description = "Success", body = WebhookBody), V4Errors))]
async fn enable_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = webhooks::enable(&state.services, &caller, &id).await?;
    Ok(Json(WebhookBody { webhook }))
}

#[derive(Deserialize)]
struct PreviewQuery {
    event_type: Option<String>,
}

/// The catalog example of an event type, shaped as this webhook's owner would receive it;
/// needs access that covers the owner's.
#[utoipa::path(get, path = "/v4/webhooks/{id}/preview", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`"), ("event_type" = String, Query, description = "An event type of the catalog")),
    responses((status = 200, description = "Success", body = zivio_app::webhook_preview::Preview),
              (status = 400, description = "Missing or unknown event type", body = Problem, content_type = "application/problem+json"), V4Errors))]
async fn preview_payload(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
    Query(query): Query<PreviewQuery>,
) -> ApiResult<Json<zivio_app::webhook_preview::Preview>> {
    let preview = zivio_app::webhook_preview::preview(
        &state.services,
        &caller,
        &id,
        query.event_type.as_deref(),
    )
    .await?;
    Ok(Json(preview))
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventAccepted {
    /// The id of the new event (`evt_test_...` for a test event).
    event_id: String,
}

/// Sends a `webhook.test` event (`data` `{"test": true}`) through the normal delivery path,
/// whatever the subscriptions and even while the webhook is disabled; open to every manager.
#[utoipa::path(post, path = "/v4/webhooks/{id}/test", tag = "webhooks", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")),
    responses((status = 202, description = "Accepted: stored before this answer", body = EventAccepted),
              (status = 409, description = "The webhook's owner is inactive", body = Problem, content_type = "application/problem+json"), V4Errors))]
async fn send_test_event(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<EventAccepted>)> {
    let event_id = webhooks::send_test(&state.services, &caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAccepted {
            event_id: event_id.to_string(),
        }),
    ))
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    webhook_id: Option<String>,
    event_type: Option<String>,
    event_id: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// Delivery attempts, newest first, filtered and paged.
#[utoipa::path(get, path = "/v4/deliveries", tag = "deliveries", security(("api_key" = [], "tenant" = [])),
    params(("webhook_id" = Option<String>, Query, description = "`wh_...`"),
           ("event_type" = Option<String>, Query, description = "An event type, or `<collection>.*` for a category"),
           ("event_id" = Option<String>, Query, description = "An event id: `evt_` and up to 64 lowercase letters, digits or `_` (anything else is a 400)"),
           ("status" = Option<String>, Query, description = "`succeeded` or `failed`"),
           ("from" = Option<String>, Query, description = "RFC 3339; attempts at or after"),
           ("to" = Option<String>, Query, description = "RFC 3339; attempts at or before"),
           ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
           ("limit" = Option<u32>, Query, description = "1 to 100; default 50")),
    responses((status = 200, description = "Success", body = zivio_app::deliveries::DeliveryPage),
              (status = 400, description = "Invalid query parameter (named in `errors`)", body = Problem, content_type = "application/problem+json"), V4Errors))]
async fn list_deliveries(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Query(query): Query<DeliveriesQuery>,
) -> ApiResult<Json<zivio_app::deliveries::DeliveryPage>> {
    // An empty parameter (`?webhook_id=&status=`, as filter forms send) means no filter.
    let given = |value: Option<String>| value.filter(|text| !text.is_empty());
    let query = zivio_app::deliveries::DeliveryQuery {
        webhook_id: given(query.webhook_id),
        event_type: given(query.event_type),
        event_id: given(query.event_id),
        status: given(query.status),
        from: given(query.from),
        to: given(query.to),
        cursor: given(query.cursor),
        limit: parse_limit(given(query.limit))?,
    };
    let page = zivio_app::deliveries::list(&state.services, &caller, &query).await?;
    Ok(Json(page))
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryBody {
    delivery: zivio_app::deliveries::DeliveryDetailView,
}

/// One attempt with its request and response; bodies and the URL's path and query are withheld
/// (`bodies_hidden` says why) unless the caller covers the webhook owner's access.
#[utoipa::path(get, path = "/v4/deliveries/{id}", tag = "deliveries", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`dlv_...`")),
    responses((status = 200, description = "Success", body = DeliveryBody), V4Errors))]
async fn get_delivery(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryBody>> {
    let delivery = zivio_app::deliveries::get(&state.services, &caller, &id).await?;
    Ok(Json(DeliveryBody { delivery }))
}

/// Sends the attempt's event again to its webhook as a new event (new id, same type and
/// `occurred_at`), shaped with the owner's access now; needs coverage.
#[utoipa::path(post, path = "/v4/deliveries/{id}/resend", tag = "deliveries", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`dlv_...`")),
    responses((status = 202, description = "Accepted: stored before this answer", body = EventAccepted),
              (status = 409, description = "The webhook is disabled, its owner inactive, or the owner can no longer see the resource", body = Problem, content_type = "application/problem+json"), V4Errors))]
async fn resend_delivery(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<EventAccepted>)> {
    let event_id = zivio_app::deliveries::resend(&state.services, &caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAccepted {
            event_id: event_id.to_string(),
        }),
    ))
}

fn parse_limit(text: Option<String>) -> Result<Option<u32>, AppError> {
    text.map(|text| {
        text.parse::<u32>().map_err(|_| {
            AppError::InvalidParameter(FieldError::new("limit", "must be a whole number"))
        })
    })
    .transpose()
}

#[derive(Deserialize)]
struct AuditQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// The tenant's audit log, newest first.
#[utoipa::path(get, path = "/v4/audit-log", tag = "audit log", security(("api_key" = [], "tenant" = [])),
    params(("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
           ("limit" = Option<u32>, Query, description = "1 to 100; default 50")),
    responses((status = 200, description = "Success", body = zivio_app::audit::AuditPage),
              (status = 400, description = "Invalid query parameter", body = Problem, content_type = "application/problem+json"), V4Errors))]
async fn list_audit_log(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<zivio_app::audit::AuditPage>> {
    let limit = parse_limit(query.limit)?;
    let page =
        zivio_app::audit::list(&state.services, &caller, query.cursor.as_deref(), limit).await?;
    Ok(Json(page))
}

/// Answers that show a secret must never be cached.
fn with_secret(status: StatusCode, answer: WithSecret) -> Response {
    let body = WebhookWithSecret {
        webhook: answer.webhook,
        secret: answer.secret.expose().to_owned(),
    };
    no_store(status, body)
}
