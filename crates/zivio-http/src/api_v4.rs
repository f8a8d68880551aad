//! The v4 API (`X-API-Key` + `zivio-tenant-id`): event types, webhooks, audit log. Handlers
//! extract, call the use case, and map the answer.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zivio_app::webhooks::{self, NewWebhook, WebhookChanges, WebhookView, WithSecret};
use zivio_app::{AppError, FieldError};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiCaller, ValidJson};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v4/event-types", get(list_event_types))
        .route("/v4/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/v4/webhooks/{id}",
            get(get_webhook)
                .patch(update_webhook)
                .delete(delete_webhook),
        )
        .route("/v4/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/v4/webhooks/{id}/disable", post(disable_webhook))
        .route("/v4/webhooks/{id}/enable", post(enable_webhook))
        .route("/v4/audit-log", get(list_audit_log))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    name: String,
    url: String,
    #[serde(default)]
    description: Option<String>,
    events: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    name: Option<String>,
    url: Option<String>,
    description: Option<String>,
    events: Option<Vec<String>>,
}

#[derive(Serialize)]
struct WebhookBody {
    webhook: WebhookView,
}

/// `GET /v4/event-types`: the catalog, subscribable types only.
async fn list_event_types(State(state): State<AppState>, _: ApiCaller) -> Json<Value> {
    let categories: Vec<Value> = state
        .services
        .catalog
        .collections()
        .iter()
        .map(|collection| {
            let types: Vec<Value> = collection
                .event_types
                .iter()
                .map(
                    |t| json!({"type": t.name, "description": t.description, "example": t.example}),
                )
                .collect();
            json!({
                "name": collection.category,
                "collection": collection.name,
                "wildcard": collection.wildcard(),
                "event_types": types,
            })
        })
        .collect();
    Json(json!({ "categories": categories }))
}

/// `GET /v4/webhooks`
async fn list_webhooks(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
) -> ApiResult<Json<Value>> {
    let views = webhooks::list(&state.services, &caller).await?;
    Ok(Json(json!({ "webhooks": views })))
}

/// `POST /v4/webhooks`: 201 with the secret, shown once.
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
    };
    let created = webhooks::create(&state.services, &caller, new).await?;
    Ok(with_secret(StatusCode::CREATED, created))
}

/// `GET /v4/webhooks/{id}`
async fn get_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = webhooks::get(&state.services, &caller, &id).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// `PATCH /v4/webhooks/{id}`: any of name, url, description, events.
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
    };
    let webhook = webhooks::update(&state.services, &caller, &id, changes).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// `DELETE /v4/webhooks/{id}`: 204.
async fn delete_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    webhooks::delete(&state.services, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v4/webhooks/{id}/rotate-secret`: the new secret, shown once.
async fn rotate_secret(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rotated = webhooks::rotate_secret(&state.services, &caller, &id).await?;
    Ok(with_secret(StatusCode::OK, rotated))
}

/// `POST /v4/webhooks/{id}/disable`
async fn disable_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = webhooks::disable(&state.services, &caller, &id).await?;
    Ok(Json(WebhookBody { webhook }))
}

/// `POST /v4/webhooks/{id}/enable`
async fn enable_webhook(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookBody>> {
    let webhook = webhooks::enable(&state.services, &caller, &id).await?;
    Ok(Json(WebhookBody { webhook }))
}

#[derive(Deserialize)]
struct AuditQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// `GET /v4/audit-log?cursor=&limit=`
async fn list_audit_log(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<zivio_app::audit::AuditPage>> {
    let limit = query
        .limit
        .map(|text| {
            text.parse::<u32>().map_err(|_| {
                AppError::InvalidParameter(FieldError::new("limit", "must be a whole number"))
            })
        })
        .transpose()?;
    let page =
        zivio_app::audit::list(&state.services, &caller, query.cursor.as_deref(), limit).await?;
    Ok(Json(page))
}

/// Answers that show a secret must never be cached.
fn with_secret(status: StatusCode, answer: WithSecret) -> Response {
    let body = json!({ "webhook": answer.webhook, "secret": answer.secret.expose() });
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
