//! The platform API (`Authorization: Bearer <platform key>`): the directory, passwords, API
//! keys and sign-in links. Handlers extract, call the use case, and map the answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, put};
use serde::Deserialize;
use serde_json::json;
use zivio_app::directory::{self, UserInput};
use zivio_core::directory::Placement;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{PlatformCaller, ValidJson};

pub fn routes() -> axum::Router<AppState> {
    let tenant = "/platform/v4/tenants/{tenant_id}";
    axum::Router::new()
        .route(tenant, put(put_tenant).delete(delete_tenant))
        .route(
            &format!("{tenant}/roles/{{role}}"),
            put(put_role).delete(delete_role),
        )
        .route(
            &format!("{tenant}/users/{{user_id}}"),
            put(put_user).delete(delete_user),
        )
        .route(
            &format!("{tenant}/users/{{user_id}}/password"),
            put(set_password),
        )
        .route(
            &format!("{tenant}/users/{{user_id}}/api-keys"),
            axum::routing::post(issue_api_key).get(list_api_keys),
        )
        .route(
            &format!("{tenant}/users/{{user_id}}/api-keys/{{key_id}}"),
            delete(revoke_api_key),
        )
        .route(
            &format!("{tenant}/users/{{user_id}}/sign-in-links"),
            axum::routing::post(issue_sign_in_link),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    permissions: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    business_unit: Option<String>,
    division: Option<String>,
    department: Option<String>,
}

#[derive(Deserialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    password: String,
}

/// `PUT /platform/v4/tenants/{tenant_id}`
async fn put_tenant(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path(tenant): Path<String>,
    ValidJson(body): ValidJson<TenantRequest>,
) -> ApiResult<StatusCode> {
    directory::put_tenant(&state.services, &tenant, &body.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /platform/v4/tenants/{tenant_id}`: the tenant and everything it owns.
async fn delete_tenant(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path(tenant): Path<String>,
) -> ApiResult<StatusCode> {
    directory::delete_tenant(&state.services, &tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../roles/{role}`: 422 names each unknown collection, scope or group.
async fn put_role(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, role)): Path<(String, String)>,
    ValidJson(body): ValidJson<RoleRequest>,
) -> ApiResult<StatusCode> {
    directory::put_role(&state.services, &tenant, &role, &body.permissions).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE .../roles/{role}`
async fn delete_role(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, role)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    directory::delete_role(&state.services, &tenant, &role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../users/{user_id}`: deactivating takes effect on the user's next request.
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
        placement: Placement {
            business_unit: body.placement.business_unit,
            division: body.placement.division,
            department: body.placement.department,
        },
        roles: body.roles,
    };
    directory::put_user(&state.services, &tenant, &user, input).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE .../users/{user_id}`: their API keys stop working at once.
async fn delete_user(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    directory::delete_user(&state.services, &tenant, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../users/{user_id}/password`: stored as an argon2id hash.
async fn set_password(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
    ValidJson(body): ValidJson<PasswordRequest>,
) -> ApiResult<StatusCode> {
    directory::set_password(&state.services, &tenant, &user, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../users/{user_id}/api-keys`: 201 with the key, shown once.
async fn issue_api_key(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let issued = directory::issue_api_key(&state.services, &tenant, &user).await?;
    Ok(no_store(
        StatusCode::CREATED,
        json!({"id": issued.id, "key": issued.key}),
    ))
}

/// `GET .../users/{user_id}/api-keys`: ids and hints, never keys.
async fn list_api_keys(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let keys = directory::api_keys(&state.services, &tenant, &user).await?;
    Ok(Json(json!({ "api_keys": keys })).into_response())
}

/// `DELETE .../users/{user_id}/api-keys/{key_id}`
async fn revoke_api_key(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    directory::revoke_api_key(&state.services, &tenant, &user, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../users/{user_id}/sign-in-links`: a single-use link, valid minutes.
async fn issue_sign_in_link(
    State(state): State<AppState>,
    _: PlatformCaller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let url = directory::issue_sign_in_link(&state.services, &tenant, &user).await?;
    Ok(no_store(StatusCode::CREATED, json!({ "url": url })))
}

fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
