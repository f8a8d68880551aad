//! Recovery on a webhook's page: count what a recovery would resend, start it after a
//! confirmation, follow its progress, cancel it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zivio_app::AppError;
use zivio_app::recoveries::{self, RecoverRequest, Recovered};

use crate::AppState;
use crate::admin::{AdminForm, PageResult};

use super::webhook_pages::{WebhookQuery, webhook_page};
use super::{local_to_rfc3339, see_other, with_status};

/// What the recover form shows: what was typed, a dry run's count, or why it was refused.
#[derive(Default)]
pub struct RecoverForm {
    pub since: String,
    pub until: String,
    pub count: Option<i64>,
    pub error: Option<String>,
}

fn instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(&local_to_rfc3339(text.trim()), &Rfc3339).ok()
}

pub async fn recover(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    let AdminForm { admin, fields } = form;
    let mut shown = RecoverForm {
        since: fields.text("since"),
        until: fields.text("until"),
        ..RecoverForm::default()
    };
    let dry_run = fields.get("action") != Some("start");
    let until = match shown.until.trim() {
        "" => Ok(None),
        text => instant(text)
            .map(Some)
            .ok_or("Enter the end time as a date and time, or leave it empty."),
    };
    let outcome = match (instant(&shown.since), until) {
        (None, _) => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter the start time as a date and time (UTC).".to_owned(),
        )),
        (_, Err(message)) => Err((StatusCode::UNPROCESSABLE_ENTITY, message.to_owned())),
        (Some(_), Ok(_)) if !dry_run && fields.get("confirm").is_none() => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "Tick the box to confirm that every selected event is sent again.".to_owned(),
        )),
        (Some(since), Ok(until)) => {
            let request = RecoverRequest {
                since,
                until,
                dry_run,
            };
            match recoveries::recover(&state.services, &admin.caller, &id, request).await {
                Ok(recovered) => Ok(recovered),
                Err(AppError::BadRequest(errors)) => Err((
                    StatusCode::BAD_REQUEST,
                    errors
                        .into_iter()
                        .map(|e| e.message)
                        .collect::<Vec<_>>()
                        .join(" "),
                )),
                Err(AppError::Conflict(reason)) => Err((StatusCode::CONFLICT, reason)),
                Err(AppError::Forbidden(reason)) => Err((StatusCode::FORBIDDEN, reason)),
                Err(other) => return Err(other.into()),
            }
        }
    };
    let status = match outcome {
        Ok(Recovered::Started(_)) => {
            return Ok(see_other(&format!("/admin/webhooks/{id}#recover")));
        }
        Ok(Recovered::WouldResend(count)) => {
            shown.count = Some(count);
            StatusCode::OK
        }
        Err((status, message)) => {
            shown.error = Some(message);
            status
        }
    };
    let query = WebhookQuery {
        test: None,
        preview: None,
        n: None,
    };
    let mut page = webhook_page(&state, &admin, &id, query, Default::default()).await?;
    page.recover = shown;
    Ok(with_status(status, &page))
}

/// Open to every manager: cancelling is a safety valve.
pub async fn cancel(
    State(state): State<AppState>,
    Path((id, recovery_id)): Path<(String, String)>,
    form: AdminForm,
) -> PageResult {
    recoveries::cancel(&state.services, &form.admin.caller, &id, &recovery_id).await?;
    Ok(see_other(&format!("/admin/webhooks/{id}#recover")))
}
