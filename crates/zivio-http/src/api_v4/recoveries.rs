//! Recovery endpoints of the v4 API (docs/api.md): start (or dry-run), list, read, cancel.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zivio_app::recoveries::{self, RecoverRequest, Recovered, RecoveryView};
use zivio_app::{AppError, FieldError};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiCaller, ValidJson};
use crate::openapi::{BodyErrors, V4Errors};
use crate::problem::Problem;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    /// RFC 3339: events accepted at or after this time (within the retention window).
    since: String,
    /// RFC 3339: events accepted before this time; now when absent.
    #[serde(default)]
    until: Option<String>,
    /// Only count what would be resent.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RecoveryBody {
    recovery: RecoveryView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RecoveryList {
    recoveries: Vec<RecoveryView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct DryRun {
    /// How many events a recovery would resend now.
    events: i64,
}

fn instant(field: &str, text: &str) -> Result<OffsetDateTime, AppError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        AppError::BadRequest(vec![FieldError::new(
            field,
            "must be an RFC 3339 time such as 2026-12-01T09:00:00Z",
        )])
    })
}

/// Resends everything that failed to the webhook in `[since, until)`, each as a new event, in
/// the background; with `dry_run` only counts it. Needs access that covers the owner's.
#[utoipa::path(post, path = "/v4/webhooks/{id}/recover", tag = "recoveries", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")), request_body = RecoverBody,
    responses((status = 202, description = "Started", body = RecoveryBody),
              (status = 200, description = "Dry run: how many events would be resent", body = DryRun),
              (status = 409, description = "The webhook is disabled, its owner inactive, another of its recoveries runs, or the tenant runs 10", body = Problem, content_type = "application/problem+json"),
              V4Errors, BodyErrors))]
pub(super) async fn recover(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
    ValidJson(body): ValidJson<RecoverBody>,
) -> ApiResult<Response> {
    let request = RecoverRequest {
        since: instant("since", &body.since)?,
        until: body
            .until
            .as_deref()
            .map(|until| instant("until", until))
            .transpose()?,
        dry_run: body.dry_run,
    };
    Ok(
        match recoveries::recover(&state.services, &caller, &id, request).await? {
            Recovered::WouldResend(events) => Json(DryRun { events }).into_response(),
            Recovered::Started(recovery) => (
                StatusCode::ACCEPTED,
                Json(RecoveryBody {
                    recovery: *recovery,
                }),
            )
                .into_response(),
        },
    )
}

/// The webhook's recoveries, newest first.
#[utoipa::path(get, path = "/v4/webhooks/{id}/recoveries", tag = "recoveries", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`")),
    responses((status = 200, description = "Success", body = RecoveryList), V4Errors))]
pub(super) async fn list_recoveries(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<RecoveryList>> {
    let recoveries = recoveries::list(&state.services, &caller, &id).await?;
    Ok(Json(RecoveryList { recoveries }))
}

/// One recovery and its progress.
#[utoipa::path(get, path = "/v4/webhooks/{id}/recoveries/{recovery_id}", tag = "recoveries", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`"), ("recovery_id" = String, Path, description = "`rcv_...`")),
    responses((status = 200, description = "Success", body = RecoveryBody), V4Errors))]
pub(super) async fn get_recovery(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path((id, recovery_id)): Path<(String, String)>,
) -> ApiResult<Json<RecoveryBody>> {
    let recovery = recoveries::get(&state.services, &caller, &id, &recovery_id).await?;
    Ok(Json(RecoveryBody { recovery }))
}

/// Cancels a running recovery (any manager: a safety valve); an ended one is returned as it is.
#[utoipa::path(post, path = "/v4/webhooks/{id}/recoveries/{recovery_id}/cancel", tag = "recoveries", security(("api_key" = [], "tenant" = [])),
    params(("id" = String, Path, description = "`wh_...`"), ("recovery_id" = String, Path, description = "`rcv_...`")),
    responses((status = 200, description = "Success", body = RecoveryBody), V4Errors))]
pub(super) async fn cancel_recovery(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path((id, recovery_id)): Path<(String, String)>,
) -> ApiResult<Json<RecoveryBody>> {
    let recovery = recoveries::cancel(&state.services, &caller, &id, &recovery_id).await?;
    Ok(Json(RecoveryBody { recovery }))
}
