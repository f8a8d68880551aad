//! The platform API (`Authorization: Bearer <platform key>`): the directory, passwords, API
//! keys and sign-in links. Handlers extract, call the use case, and map the answer.

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zivio_app::directory::{self, UserInput};
use zivio_app::events::{self, EventInput};
use zivio_core::directory::Placement;

use crate::error::ApiResult;
use crate::extract::{PlatformCaller, ValidJson};
use crate::openapi::{BodyErrors, PlatformErrors};
use crate::problem::Problem;
use crate::{AppState, no_store};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_tenant, delete_tenant))
        .routes(routes!(put_role, delete_role))
        .routes(routes!(put_user, delete_user))
        .routes(routes!(set_password))
        .routes(routes!(issue_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(issue_sign_in_link))
        .routes(routes!(publish_event))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(publish_batch))
                .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
}

/// Event batches may be larger than other bodies.
pub const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// An event as the platform publishes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEventRequest {
    /// Producer idempotency key: the same key with the same event returns the same id.
    key: Option<String>,
    /// An event type of the catalog.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    event_type: String,
    /// RFC 3339; defaults to now.
    occurred_at: Option<String>,
    resource: ResourceRequest,
}

/// The resource the event is about: its placement and owners decide who may see it and are
/// never part of a payload; `data` is its full v4 representation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequest {
    id: String,
    #[serde(default)]
    placement: PlacementRequest,
    #[serde(default)]
    owner_ids: Vec<String>,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatchRequest {
    /// 1 to 1,000 events; nothing of a refused batch is stored.
    events: Vec<PublishEventRequest>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PublishedEvent {
    id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PublishedBatch {
    /// In the order of the request.
    ids: Vec<String>,
}

impl PublishBatchRequest {
    pub fn into_inputs(self) -> Vec<EventInput> {
        self.events.into_iter().map(EventInput::from).collect()
    }
}

impl From<PublishEventRequest> for EventInput {
    fn from(request: PublishEventRequest) -> Self {
        EventInput {
            key: request.key,
            event_type: request.event_type,
            occurred_at: request.occurred_at,
            resource_id: request.resource.id,
            placement: request.resource.placement.into(),
            owner_ids: request.resource.owner_ids,
            data: request.resource.data,
        }
    }
}

impl From<PlacementRequest> for Placement {
    fn from(request: PlacementRequest) -> Self {
        Placement {
            business_unit: request.business_unit,
            division: request.division,
            department: request.department,
        }
    }
}

/// Publishes one event; 202 once it and its fan-out are durably stored.
#[utoipa::path(post, path = "/platform/v4/tenants/{tenant_id}/events", tag = "platform", security(("platform_key" = [])),
    params(("tenant_id" = String, Path)), request_body = PublishEventRequest,
    responses((status = 202, description = "Accepted: stored before this answer", body = PublishedEvent), (status = 409, description = "The producer key was used for a different event", body = Problem, content_type = "application/problem+json"), PlatformErrors, BodyErrors))]
async fn publish_event(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path(tenant): Path<String>,
    ValidJson(body): ValidJson<PublishEventRequest>,
) -> ApiResult<(StatusCode, Json<PublishedEvent>)> {
    let mut ids = events::publish(&state.services, &tenant, vec![body.into()], false).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishedEvent {
            id: ids.remove(0).to_string(),
        }),
    ))
}

/// Publishes up to 1,000 events atomically; 202 once all are durably stored.
#[utoipa::path(post, path = "/platform/v4/tenants/{tenant_id}/events/batch", tag = "platform", security(("platform_key" = [])),
    params(("tenant_id" = String, Path)), request_body = PublishBatchRequest,
    responses((status = 202, description = "Accepted: stored before this answer", body = PublishedBatch), (status = 409, description = "A producer key was used for a different event", body = Problem, content_type = "application/problem+json"), PlatformErrors, BodyErrors))]
async fn publish_batch(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path(tenant): Path<String>,
    ValidJson(body): ValidJson<PublishBatchRequest>,
) -> ApiResult<(StatusCode, Json<PublishedBatch>)> {
    let inputs = body.into_inputs();
    let ids = events::publish(&state.services, &tenant, inputs, true).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishedBatch {
            ids: ids.iter().map(ToString::to_string).collect(),
        }),
    ))
}

/// `201`: a new API key, shown once.
#[derive(Serialize, utoipa::ToSchema)]
struct IssuedApiKey {
    id: String,
    /// `zk_...`; only its digest is stored.
    key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ApiKeyList {
    api_keys: Vec<zivio_app::directory::ApiKeyView>,
}

/// `201`: a single-use sign-in link, valid for a few minutes.
#[derive(Serialize, utoipa::ToSchema)]
struct SignInLink {
    url: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    permissions: Vec<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    business_unit: Option<String>,
    division: Option<String>,
    department: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    email: String,
    name: String,
    active: bool,
    #[serde(default)]
    placement: PlacementRequest,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    password: String,
}

/// Creates or renames a tenant.
#[utoipa::path(put, path = "/platform/v4/tenants/{tenant_id}", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path)), request_body = TenantRequest,
    responses((status = 204, description = "Stored"), PlatformErrors, BodyErrors))]
async fn put_tenant(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path(tenant): Path<String>,
    ValidJson(body): ValidJson<TenantRequest>,
) -> ApiResult<StatusCode> {
    directory::put_tenant(&state.services, &tenant, &body.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a tenant and everything it owns.
#[utoipa::path(delete, path = "/platform/v4/tenants/{tenant_id}", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path)),
    responses((status = 204, description = "Deleted"), PlatformErrors))]
async fn delete_tenant(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path(tenant): Path<String>,
) -> ApiResult<StatusCode> {
    directory::delete_tenant(&state.services, &tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates or replaces a role; 422 names each unknown collection, scope or field group. Users
/// who lose `webhooks:manage` by it have their admin sessions ended and API keys revoked at
/// once (`permission_removed`), even if a later change gives it back.
#[utoipa::path(put, path = "/platform/v4/tenants/{tenant_id}/roles/{role}", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("role" = String, Path)), request_body = RoleRequest,
    responses((status = 204, description = "Stored"), PlatformErrors, BodyErrors))]
async fn put_role(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, role)): Path<(String, String)>,
    ValidJson(body): ValidJson<RoleRequest>,
) -> ApiResult<StatusCode> {
    directory::put_role(&state.services, &tenant, &role, &body.permissions).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a role; its permissions stop applying at once, and users who lose `webhooks:manage`
/// by it have their admin sessions ended and API keys revoked (`permission_removed`).
#[utoipa::path(delete, path = "/platform/v4/tenants/{tenant_id}/roles/{role}", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("role" = String, Path)),
    responses((status = 204, description = "Deleted"), PlatformErrors))]
async fn delete_role(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, role)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    directory::delete_role(&state.services, &tenant, &role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates or replaces a user. Deactivating them (`user_deactivated`) or taking
/// `webhooks:manage` from them (`permission_removed`) ends their admin sessions and revokes
/// their API keys at once; reactivating or granting it again needs a new sign-in and a new key.
#[utoipa::path(put, path = "/platform/v4/tenants/{tenant_id}/users/{user_id}", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("user_id" = String, Path)), request_body = UserRequest,
    responses((status = 204, description = "Stored"), PlatformErrors, BodyErrors))]
async fn put_user(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
    ValidJson(body): ValidJson<UserRequest>,
) -> ApiResult<StatusCode> {
    let input = UserInput {
        email: body.email,
        name: body.name,
        active: body.active,
        placement: body.placement.into(),
        roles: body.roles,
    };
    directory::put_user(&state.services, &tenant, &user, input).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a user; their admin sessions end and their API keys are revoked (`user_deleted`) at
/// once. The revoked keys stay on record: a user created later with the same id lists them
/// as revoked and cannot use them.
#[utoipa::path(delete, path = "/platform/v4/tenants/{tenant_id}/users/{user_id}", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 204, description = "Deleted"), PlatformErrors))]
async fn delete_user(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    directory::delete_user(&state.services, &tenant, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a user's admin UI password (stored as an Argon2id hash). When every password hashing
/// thread is busy and the queue is full, 503 with `Retry-After`.
#[utoipa::path(put, path = "/platform/v4/tenants/{tenant_id}/users/{user_id}/password", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("user_id" = String, Path)), request_body = PasswordRequest,
    responses((status = 204, description = "Stored"), PlatformErrors, BodyErrors))]
async fn set_password(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
    ValidJson(body): ValidJson<PasswordRequest>,
) -> ApiResult<StatusCode> {
    directory::set_password(&state.services, &tenant, &user, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues an API key for an active user; the key is in this answer only.
#[utoipa::path(post, path = "/platform/v4/tenants/{tenant_id}/users/{user_id}/api-keys", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 201, description = "Created", body = IssuedApiKey), (status = 409, description = "The user is inactive", body = Problem, content_type = "application/problem+json"), PlatformErrors))]
async fn issue_api_key(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let issued = directory::issue_api_key(&state.services, &tenant, &user).await?;
    Ok(no_store(
        StatusCode::CREATED,
        IssuedApiKey {
            id: issued.id,
            key: issued.key,
        },
    ))
}

/// A user's API keys: ids and hints, never keys. Revoked keys stay listed, with `revoked_at`
/// and `revoked_reason`.
#[utoipa::path(get, path = "/platform/v4/tenants/{tenant_id}/users/{user_id}/api-keys", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "Success", body = ApiKeyList), PlatformErrors))]
async fn list_api_keys(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let api_keys = directory::api_keys(&state.services, &tenant, &user).await?;
    Ok(Json(ApiKeyList { api_keys }).into_response())
}

/// Revokes an API key at once (`revoked_reason` `revoked`); it stays listed. 404 when the user
/// has no live key with this id (also when it was revoked already).
#[utoipa::path(delete, path = "/platform/v4/tenants/{tenant_id}/users/{user_id}/api-keys/{key_id}", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("user_id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204, description = "Revoked"), PlatformErrors))]
async fn revoke_api_key(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    directory::revoke_api_key(&state.services, &tenant, &user, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a single-use admin UI sign-in link for an active user, valid for minutes.
#[utoipa::path(post, path = "/platform/v4/tenants/{tenant_id}/users/{user_id}/sign-in-links", tag = "platform", security(("platform_key" = [])), params(("tenant_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 201, description = "Created", body = SignInLink), (status = 409, description = "The user is inactive", body = Problem, content_type = "application/problem+json"), PlatformErrors))]
async fn issue_sign_in_link(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let url = directory::issue_sign_in_link(&state.services, &tenant, &user).await?;
    Ok(no_store(StatusCode::CREATED, SignInLink { url }))
}
