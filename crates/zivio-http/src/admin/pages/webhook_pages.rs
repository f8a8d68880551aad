//! The webhooks pages: the list, adding, one webhook (edit, rotate, disable, enable, delete, test).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use std::collections::HashMap;
use zivio_app::deliveries::{self, DeliveryQuery, DeliveryView};
use zivio_app::sessions::{self};
use zivio_app::webhooks::{self, WebhookView};
use zivio_app::{AppError, audit};

use crate::AppState;
use crate::admin::{Admin, AdminForm, PageResult};

use super::webhook_forms::{Picker, picker, rate_limit_text};
use super::{Layout, error_page, pretty, render, see_other};

/// One bar of the 24-hour chart: successes stacked on failures.
pub struct Bar {
    pub x: u32,
    pub ok_y: u32,
    pub ok_height: u32,
    pub failed_y: u32,
    pub failed_height: u32,
    pub label: String,
}

pub struct WebhookRow {
    pub webhook: WebhookView,
    pub events: String,
    pub bars: Vec<Bar>,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    rows: Vec<WebhookRow>,
}

const CHART_HEIGHT: u32 = 24;

pub async fn webhooks(State(state): State<AppState>, admin: Admin) -> PageResult {
    let services = &state.services;
    let list = webhooks::list(services, &admin.caller).await?;
    let now = services.now();
    let this_hour = now
        - time::Duration::seconds(now.unix_timestamp().rem_euclid(3600))
        - time::Duration::nanoseconds(i64::from(now.nanosecond()));
    let since = this_hour - time::Duration::hours(23);
    let mut hours: HashMap<String, Vec<(i64, i64, i64)>> = HashMap::new();
    for counts in services
        .store
        .webhook_hours(&admin.caller.tenant, since)
        .await
        .map_err(AppError::from)?
    {
        let slot = (counts.hour - since).whole_hours();
        hours
            .entry(counts.webhook_id.to_string())
            .or_default()
            .push((slot, counts.succeeded, counts.failed));
    }
    let rows = list
        .into_iter()
        .map(|webhook| {
            let counts = hours.remove(&webhook.id).unwrap_or_default();
            WebhookRow {
                events: summarise(&webhook.events),
                bars: bars(&counts),
                webhook,
            }
        })
        .collect();
    Ok(render(&WebhooksPage {
        layout: Layout::of(&admin, "Webhooks", "webhooks"),
        rows,
    }))
}

fn bars(counts: &[(i64, i64, i64)]) -> Vec<Bar> {
    let max = counts
        .iter()
        .map(|(_, ok, failed)| ok + failed)
        .max()
        .unwrap_or(0)
        .max(1);
    counts
        .iter()
        .filter(|(slot, _, _)| (0..24).contains(slot))
        .map(|&(slot, ok, failed)| {
            let scale = |n: i64| {
                u32::try_from((n * i64::from(CHART_HEIGHT) + max - 1) / max).unwrap_or(CHART_HEIGHT)
            };
            let (ok_height, failed_height) = (scale(ok), scale(failed));
            let failed_y = CHART_HEIGHT - failed_height;
            Bar {
                x: u32::try_from(slot).unwrap_or(0) * 4,
                ok_y: failed_y.saturating_sub(ok_height),
                ok_height: ok_height.min(failed_y),
                failed_y,
                failed_height,
                label: format!("{ok} succeeded, {failed} failed"),
            }
        })
        .collect()
}

fn summarise(events: &[String]) -> String {
    match events {
        [one] if one == "*" => "All events".to_owned(),
        [first, second, third, rest @ ..] if !rest.is_empty() => {
            format!("{first}, {second}, {third} and {} more", rest.len())
        }
        _ => events.join(", "),
    }
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    layout: Layout,
    webhook: WebhookView,
    secret: String,
}

/// The signing secret, once: reading it from the session removes it, so a reload or the back
/// button finds only the webhook page.
pub async fn secret(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> PageResult {
    let id = zivio_core::webhook::WebhookId::parse(&id)
        .ok_or(AppError::NotFound("webhook"))?
        .to_string();
    let Some(secret) = sessions::take_secret(&state.services, &admin.session, &id).await? else {
        return Ok(see_other(&format!("/admin/webhooks/{id}")));
    };
    let webhook = webhooks::get(&state.services, &admin.caller, &id).await?;
    let mut response = render(&SecretPage {
        layout: Layout::of(&admin, "Signing secret", "webhooks"),
        webhook,
        secret: secret.expose().to_owned(),
    });
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
pub struct WebhookQuery {
    pub(super) test: Option<String>,
    pub(super) preview: Option<String>,
    /// How often the page has refreshed while waiting for a test event's outcome.
    pub(super) n: Option<u32>,
}

/// A test event's outcome is waited for this many refreshes (2 s apart) at most.
const MAX_TEST_REFRESHES: u32 = 15;

/// What became of a test event sent from the webhook page.
pub struct TestOutcome {
    pub event_id: String,
    pub delivery: Option<DeliveryView>,
}

pub struct Preview {
    pub event_type: String,
    pub body: Option<String>,
    pub note: String,
}

#[derive(Template)]
#[template(path = "webhook.html")]
pub(super) struct WebhookPage {
    layout: Layout,
    webhook: WebhookView,
    covers_owner: bool,
    pub(super) picker: Picker,
    recent: Vec<DeliveryView>,
    test: Option<TestOutcome>,
    preview: Preview,
    event_types: Vec<String>,
    audit: Vec<audit::AuditEntryView>,
    errors: HashMap<String, String>,
    names: HashMap<String, String>,
    /// What the edit form shows: the stored values, or what was typed when it was refused.
    pub(super) edit: EditValues,
    /// The webhook's recoveries, newest first (the last ten).
    recoveries: Vec<zivio_app::recoveries::RecoveryView>,
    pub(super) recover: super::recovery_pages::RecoverForm,
}

pub struct EditValues {
    pub name: String,
    pub description: String,
    pub url: String,
    pub rate_limit: String,
}

pub async fn webhook(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Query(query): Query<WebhookQuery>,
) -> PageResult {
    let waited = query.n.unwrap_or(0).min(MAX_TEST_REFRESHES);
    let page = webhook_page(&state, &admin, &id, query, HashMap::new()).await?;
    // While a test event is on its way, look again shortly, a limited number of times.
    let pending = page
        .test
        .as_ref()
        .filter(|test| test.delivery.is_none() && waited < MAX_TEST_REFRESHES);
    let mut response = render(&page);
    if let Some(test) = pending
        && let Ok(value) = HeaderValue::from_str(&format!(
            "2; url=/admin/webhooks/{}?test={}&n={}",
            page.webhook.id,
            test.event_id,
            waited + 1
        ))
    {
        response.headers_mut().insert("refresh", value);
    } else if page
        .recoveries
        .iter()
        .any(|recovery| recovery.state == "running")
    {
        // Progress moves on its own: show it.
        response
            .headers_mut()
            .insert("refresh", HeaderValue::from_static("3"));
    }
    Ok(response)
}

pub(super) async fn webhook_page(
    state: &AppState,
    admin: &Admin,
    id: &str,
    query: WebhookQuery,
    errors: HashMap<String, String>,
) -> PageResult<WebhookPage> {
    let services = &state.services;
    let webhook = webhooks::get(services, &admin.caller, id).await?;
    let recent = deliveries::list(
        services,
        &admin.caller,
        &DeliveryQuery {
            webhook_id: Some(webhook.id.clone()),
            limit: Some(10),
            ..DeliveryQuery::default()
        },
    )
    .await?
    .deliveries;
    let test = match query.test {
        Some(event_id) if event_id.starts_with("evt_test_") => {
            Some(test_outcome(services, admin, &webhook.id, event_id).await?)
        }
        _ => None,
    };
    let event_types: Vec<String> = services
        .catalog
        .collections()
        .iter()
        .flat_map(|c| c.event_types.iter().map(|t| t.name.clone()))
        .collect();
    let preview_type = query
        .preview
        .unwrap_or_else(|| event_types.first().cloned().unwrap_or_default());
    let preview = preview_of(services, admin, id, preview_type).await?;
    let audit = audit::of_webhook(services, &admin.caller, &webhook.id, 10).await?;
    let mut recoveries = zivio_app::recoveries::list(services, &admin.caller, &webhook.id).await?;
    recoveries.truncate(10);
    let owner = zivio_core::ids::UserId::parse(&webhook.owner_id)
        .map_err(|_| AppError::NotFound("webhook owner"))?;
    let (owner_access, _) =
        zivio_app::caller::owner_access(services, &admin.caller.tenant, &owner).await?;
    Ok(WebhookPage {
        layout: Layout::of(admin, &webhook.name, "webhooks"),
        names: HashMap::from([(webhook.id.clone(), webhook.name.clone())]),
        edit: EditValues {
            name: webhook.name.clone(),
            description: webhook.description.clone(),
            url: webhook.url.clone(),
            rate_limit: rate_limit_text(webhook.rate_limit),
        },
        picker: picker(services.catalog, &webhook.events),
        covers_owner: admin.caller.access.covers(&owner_access),
        webhook,
        recent,
        test,
        preview,
        event_types,
        audit,
        errors,
        recoveries,
        recover: super::recovery_pages::RecoverForm::default(),
    })
}

/// How the test event sent from this page fared (its delivery, once there is one).
async fn test_outcome(
    services: &zivio_app::Services,
    admin: &Admin,
    webhook_id: &str,
    event_id: String,
) -> PageResult<TestOutcome> {
    let found = deliveries::list(
        services,
        &admin.caller,
        &DeliveryQuery {
            event_id: Some(event_id.clone()),
            webhook_id: Some(webhook_id.to_owned()),
            ..DeliveryQuery::default()
        },
    )
    .await?;
    Ok(TestOutcome {
        event_id,
        delivery: found.deliveries.into_iter().next(),
    })
}

/// What the webhook would receive for an event of `event_type`, or why nothing can be shown.
async fn preview_of(
    services: &zivio_app::Services,
    admin: &Admin,
    id: &str,
    event_type: String,
) -> PageResult<Preview> {
    match zivio_app::webhook_preview::preview(services, &admin.caller, id, Some(&event_type)).await
    {
        Ok(preview) => Ok(Preview {
            event_type: preview.event_type,
            body: preview.payload.map(|payload| pretty(&payload)),
            note: preview.note,
        }),
        Err(AppError::Forbidden(reason)) => Ok(Preview {
            event_type,
            body: None,
            note: reason,
        }),
        Err(AppError::InvalidParameter(error)) => Ok(Preview {
            event_type,
            body: None,
            note: error.message,
        }),
        Err(error) => Err(error.into()),
    }
}

pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    if form.fields.get("confirm") != Some("rotate") {
        return Ok(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Confirm that the current secret stops working immediately; the secret was not rotated.",
        ));
    }
    let rotated = webhooks::rotate_secret(&state.services, &form.admin.caller, &id).await?;
    sessions::keep_secret(&state.services, &form.admin.session, &id, &rotated.secret).await?;
    Ok(see_other(&format!("/admin/webhooks/{id}/secret")))
}

pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    webhooks::disable(&state.services, &form.admin.caller, &id).await?;
    Ok(see_other(&format!("/admin/webhooks/{id}")))
}

pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    webhooks::enable(&state.services, &form.admin.caller, &id).await?;
    Ok(see_other(&format!("/admin/webhooks/{id}")))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    let webhook = webhooks::get(&state.services, &form.admin.caller, &id).await?;
    if form.fields.text("confirm").trim() != webhook.name {
        return Ok(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "To delete the webhook, type its name exactly. Nothing was deleted.",
        ));
    }
    webhooks::delete(&state.services, &form.admin.caller, &id).await?;
    Ok(see_other("/admin/webhooks"))
}

pub async fn send_test(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    let event = webhooks::send_test(&state.services, &form.admin.caller, &id).await?;
    Ok(see_other(&format!("/admin/webhooks/{id}?test={event}")))
}
