//! The admin pages: each handler calls the use cases and renders a template.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use zivio_app::deliveries::{self, DeliveryDetailView, DeliveryQuery, DeliveryView};
use zivio_app::sessions::{self, Signed};
use zivio_app::webhooks::{self, NewWebhook, WebhookChanges, WebhookView};
use zivio_app::{AppError, FieldError, audit};
use zivio_core::catalog::Catalog;
use zivio_core::custom_header::HeaderInput;

use super::{
    Admin, AdminForm, PageError, PageResult, PublicForm, SessionForm, cleared_cookie,
    session_cookie, session_id, sign_in_cookie, sign_in_nonce,
};
use crate::AppState;

/// What every page's frame needs: the title, and for a signed-in manager the navigation.
pub struct Layout {
    pub title: String,
    pub section: &'static str,
    /// The form token for the sign-out button; `None` on pages without a manager.
    pub token: Option<String>,
}

impl Layout {
    fn public(title: &str) -> Self {
        Layout {
            title: title.to_owned(),
            section: "",
            token: None,
        }
    }

    fn of(admin: &Admin, title: &str, section: &'static str) -> Self {
        Layout {
            title: title.to_owned(),
            section,
            token: Some(admin.form_token()),
        }
    }
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "a template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("Something went wrong on our side."),
            )
                .into_response()
        }
    }
}

fn with_status(status: StatusCode, template: &impl Template) -> Response {
    let mut response = render(template);
    *response.status_mut() = status;
    response
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    with_status(
        status,
        &ErrorPage {
            layout: Layout::public("Something is not right"),
            status: status.as_u16(),
            message: message.to_owned(),
        },
    )
}

#[derive(Template)]
#[template(path = "no_permission.html")]
struct NoPermissionPage {
    layout: Layout,
    /// For the sign-out button.
    token: String,
}

pub(crate) fn no_permission(token: &str) -> Response {
    with_status(
        StatusCode::FORBIDDEN,
        &NoPermissionPage {
            layout: Layout::public("No access to Webhooks"),
            token: token.to_owned(),
        },
    )
}

// --- Signing in ---------------------------------------------------------------------------------

pub async fn home(_: Admin) -> Response {
    see_other("/admin/webhooks")
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    layout: Layout,
    tenant: String,
    email: String,
    error: Option<String>,
    token: String,
}

/// The sign-in form with the token of the browser's pre-session value (`nonce`), or of a new
/// one that the answer sets.
fn sign_in_form(
    state: &AppState,
    nonce: Option<String>,
    status: StatusCode,
    tenant: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    let (nonce, is_new) = match nonce {
        Some(nonce) => (nonce, false),
        None => (sessions::new_sign_in_nonce(), true),
    };
    let mut page = with_status(
        status,
        &SignInPage {
            layout: Layout::public("Sign in"),
            tenant: tenant.to_owned(),
            email: email.to_owned(),
            error: error.map(str::to_owned),
            token: sessions::sign_in_token(&nonce),
        },
    );
    if is_new {
        page.headers_mut()
            .append(header::SET_COOKIE, sign_in_cookie(state, &nonce));
    }
    page
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(id) = session_id(&headers)
        && let Ok(Some(Signed::Manager(_))) = sessions::resume(&state.services, &id).await
    {
        return see_other("/admin/webhooks");
    }
    sign_in_form(
        &state,
        sign_in_nonce(&state, &headers),
        StatusCode::OK,
        "",
        "",
        None,
    )
}

pub async fn sign_in(
    State(state): State<AppState>,
    PublicForm {
        fields,
        client,
        nonce,
    }: PublicForm,
) -> Response {
    let (tenant, email) = (fields.text("tenant"), fields.text("email"));
    let again = |status: StatusCode, error: &str| {
        sign_in_form(
            &state,
            Some(nonce.clone()),
            status,
            &tenant,
            &email,
            Some(error),
        )
    };
    // The account as sign-in reads it: spaces and case cannot buy fresh attempts.
    let account = format!("{}/{}", tenant.trim(), email.trim()).to_lowercase();
    if !state.sign_in_limiter.allow(&account, client) {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a few minutes and try again.",
        );
    }
    match sessions::sign_in_with_password(
        &state.services,
        &tenant,
        &email,
        &fields.text("password"),
    )
    .await
    {
        Ok(id) => signed_in(&state, &id),
        Err(AppError::Unauthenticated(message)) => again(StatusCode::UNAUTHORIZED, message),
        // The password hashing threads are all busy: nothing was checked, nothing is counted.
        Err(AppError::Busy(seconds)) => {
            state.sign_in_limiter.refund(&account, client);
            let mut page = again(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "Too many sign-ins are being checked right now. Try again in {seconds} seconds."
                ),
            );
            page.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            page
        }
        Err(error) => PageError::from(error).into_response(),
    }
}

/// Opening a link signs in and moves on at once to a URL without the token; the token is
/// never sent on as a referrer.
pub async fn sign_in_link(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let mut response = match sessions::sign_in_with_link(&state.services, &token).await {
        Ok(id) => signed_in(&state, &id),
        Err(AppError::Unauthenticated(message)) => sign_in_form(
            &state,
            sign_in_nonce(&state, &headers),
            StatusCode::UNAUTHORIZED,
            "",
            "",
            Some(message),
        ),
        Err(error) => PageError::from(error).into_response(),
    };
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn signed_in(state: &AppState, id: &str) -> Response {
    let mut response = see_other("/admin");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(state, id));
    response
}

pub async fn sign_out(State(state): State<AppState>, form: SessionForm) -> PageResult {
    sessions::sign_out(&state.services, &form.session).await?;
    let mut response = see_other("/admin/sign-in");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_cookie());
    Ok(response)
}

// --- Webhooks ------------------------------------------------------------------------------------

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
    for (webhook, hour, ok, failed) in services
        .store
        .webhook_hours(&admin.caller.tenant, since)
        .await
        .map_err(AppError::from)?
    {
        let slot = (hour - since).whole_hours();
        hours
            .entry(webhook.to_string())
            .or_default()
            .push((slot, ok, failed));
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

/// The event picker: every category with its types, and which are chosen.
pub struct Picker {
    pub all: bool,
    pub categories: Vec<PickerCategory>,
}

pub struct PickerCategory {
    pub name: String,
    pub wildcard: String,
    pub chosen: bool,
    pub types: Vec<(String, String, bool)>,
}

fn picker(catalog: &Catalog, chosen: &[String]) -> Picker {
    let chosen: BTreeSet<&str> = chosen.iter().map(String::as_str).collect();
    Picker {
        all: chosen.contains("*"),
        categories: catalog
            .collections()
            .iter()
            .map(|collection| {
                let wildcard = collection.wildcard();
                PickerCategory {
                    name: collection.category.clone(),
                    chosen: chosen.contains(wildcard.as_str()),
                    wildcard,
                    types: collection
                        .event_types
                        .iter()
                        .map(|t| {
                            (
                                t.name.clone(),
                                t.description.clone(),
                                chosen.contains(t.name.as_str()),
                            )
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "webhook_form.html")]
struct WebhookFormPage {
    layout: Layout,
    name: String,
    url: String,
    description: String,
    picker: Picker,
    errors: HashMap<String, String>,
}

pub async fn new_webhook(State(state): State<AppState>, admin: Admin) -> Response {
    render(&WebhookFormPage {
        layout: Layout::of(&admin, "Add webhook", "webhooks"),
        name: String::new(),
        url: String::new(),
        description: String::new(),
        picker: picker(state.services.catalog, &[]),
        errors: HashMap::new(),
    })
}

fn field_errors(errors: Vec<FieldError>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for error in errors {
        // `events[3]` is about the picker as a whole, `headers.X-Api-Key` about the header box.
        let field = error
            .field
            .split(['[', '.'])
            .next()
            .unwrap_or_default()
            .to_owned();
        map.entry(field).or_insert(error.message);
    }
    map
}

/// The custom headers box: one `Name: value` per line; `None` when it is empty.
fn header_lines(text: &str) -> Result<Option<HeaderInput>, FieldError> {
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| {
            FieldError::new(
                "headers",
                format!("line {}: expected `Name: value`", index + 1),
            )
        })?;
        pairs.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok((!pairs.is_empty()).then_some(HeaderInput(pairs)))
}

pub async fn create_webhook(State(state): State<AppState>, form: AdminForm) -> PageResult {
    let AdminForm { admin, fields } = form;
    let mut new = NewWebhook {
        name: fields.text("name"),
        url: fields.text("url"),
        description: Some(fields.text("description")),
        events: fields.all("events"),
        headers: None,
    };
    let created = match header_lines(&fields.text("headers")) {
        Ok(headers) => {
            new.headers = headers;
            webhooks::create(&state.services, &admin.caller, new.clone()).await
        }
        Err(error) => Err(AppError::Validation(vec![error])),
    };
    match created {
        Ok(created) => {
            sessions::keep_secret(
                &state.services,
                &admin.session,
                &created.webhook.id,
                &created.secret,
            )
            .await?;
            Ok(see_other(&format!(
                "/admin/webhooks/{}/secret",
                created.webhook.id
            )))
        }
        Err(AppError::Validation(errors) | AppError::BadRequest(errors)) => Ok(with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &WebhookFormPage {
                layout: Layout::of(&admin, "Add webhook", "webhooks"),
                picker: picker(state.services.catalog, &new.events),
                name: new.name,
                url: new.url,
                description: new.description.unwrap_or_default(),
                errors: field_errors(errors),
            },
        )),
        Err(error) => Err(error.into()),
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
    test: Option<String>,
    preview: Option<String>,
    /// How often the page has refreshed while waiting for a test event's outcome.
    n: Option<u32>,
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
struct WebhookPage {
    layout: Layout,
    webhook: WebhookView,
    covers_owner: bool,
    picker: Picker,
    recent: Vec<DeliveryView>,
    test: Option<TestOutcome>,
    preview: Preview,
    event_types: Vec<String>,
    audit: Vec<audit::AuditEntryView>,
    errors: HashMap<String, String>,
    names: HashMap<String, String>,
    /// What the edit form shows: the stored values, or what was typed when it was refused.
    edit: EditValues,
}

pub struct EditValues {
    pub name: String,
    pub description: String,
    pub url: String,
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
    }
    Ok(response)
}

async fn webhook_page(
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
            let found = deliveries::list(
                services,
                &admin.caller,
                &DeliveryQuery {
                    event_id: Some(event_id.clone()),
                    webhook_id: Some(webhook.id.clone()),
                    ..DeliveryQuery::default()
                },
            )
            .await?;
            Some(TestOutcome {
                event_id,
                delivery: found.deliveries.into_iter().next(),
            })
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
    let preview = match webhooks::preview(services, &admin.caller, id, Some(&preview_type)).await {
        Ok(preview) => Preview {
            event_type: preview.event_type,
            body: preview.payload.map(|payload| pretty(&payload)),
            note: preview.note,
        },
        Err(AppError::Forbidden(reason)) => Preview {
            event_type: preview_type,
            body: None,
            note: reason,
        },
        Err(AppError::InvalidParameter(error)) => Preview {
            event_type: preview_type,
            body: None,
            note: error.message,
        },
        Err(error) => return Err(error.into()),
    };
    let audit = audit::of_webhook(services, &admin.caller, &webhook.id, 10).await?;
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
    })
}

pub async fn update_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    let AdminForm { admin, fields } = form;
    let current = webhooks::get(&state.services, &admin.caller, &id).await?;
    let mut events = fields.all("events");
    events.sort();
    let mut current_events = current.events.clone();
    current_events.sort();
    let mut changes = WebhookChanges {
        name: Some(fields.text("name")).filter(|name| *name != current.name),
        url: fields
            .get("url")
            .map(str::to_owned)
            .filter(|url| *url != current.url),
        description: Some(fields.text("description")).filter(|text| *text != current.description),
        // Only managers who cover the owner get the picker; others send no events at all.
        events: (fields.get("events_shown").is_some() && events != current_events)
            .then_some(events),
        headers: None,
    };
    let clear = fields.get("clear_headers").is_some();
    let updated = match header_lines(&fields.text("headers")) {
        Ok(Some(_)) if clear => Err(AppError::Validation(vec![FieldError::new(
            "headers",
            "enter new headers or tick “Remove all custom headers”, not both",
        )])),
        Ok(headers) => {
            changes.headers = headers.or_else(|| clear.then(HeaderInput::default));
            webhooks::update(&state.services, &admin.caller, &id, changes).await
        }
        Err(error) => Err(AppError::Validation(vec![error])),
    };
    match updated {
        Ok(_) => Ok(see_other(&format!("/admin/webhooks/{id}"))),
        Err(AppError::Validation(errors) | AppError::BadRequest(errors)) => {
            let page = webhook_page(
                &state,
                &admin,
                &id,
                WebhookQuery {
                    test: None,
                    preview: None,
                    n: None,
                },
                field_errors(errors),
            )
            .await?;
            // Keep what was typed, so that only the refused part needs fixing.
            let mut page = page;
            page.edit = EditValues {
                name: fields.text("name"),
                description: fields.text("description"),
                url: fields
                    .get("url")
                    .map_or(page.edit.url.clone(), str::to_owned),
            };
            if fields.get("events_shown").is_some() {
                page.picker = picker(state.services.catalog, &fields.all("events"));
            }
            Ok(with_status(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
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

// --- Deliveries ----------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct DeliveriesFilter {
    #[serde(default)]
    webhook_id: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    layout: Layout,
    filter: DeliveriesFilter,
    webhooks: Vec<(String, String)>,
    categories: Vec<(String, Vec<String>)>,
    deliveries: Vec<DeliveryView>,
    names: HashMap<String, String>,
    next: Option<String>,
    error: Option<String>,
}

pub async fn deliveries(
    State(state): State<AppState>,
    admin: Admin,
    Query(filter): Query<DeliveriesFilter>,
) -> PageResult {
    let services = &state.services;
    let some = |text: &str| Some(text.trim().to_owned()).filter(|text| !text.is_empty());
    let query = DeliveryQuery {
        webhook_id: some(&filter.webhook_id),
        event_type: some(&filter.event_type),
        event_id: some(&filter.event_id),
        status: some(&filter.status),
        from: some(&filter.from).map(|from| local_to_rfc3339(&from)),
        to: some(&filter.to).map(|to| local_to_rfc3339(&to)),
        cursor: some(&filter.cursor),
        limit: Some(50),
    };
    let (deliveries, next, error) = match deliveries::list(services, &admin.caller, &query).await {
        Ok(page) => (page.deliveries, page.next_cursor, None),
        Err(AppError::InvalidParameter(error)) => (
            Vec::new(),
            None,
            Some(format!("{}: {}", error.field, error.message)),
        ),
        Err(error) => return Err(error.into()),
    };
    let hooks = webhooks::list(services, &admin.caller).await?;
    let names = hooks
        .iter()
        .map(|w| (w.id.clone(), w.name.clone()))
        .collect();
    let next = next.map(|cursor| {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("webhook_id", &filter.webhook_id),
            ("event_type", &filter.event_type),
            ("event_id", &filter.event_id),
            ("status", &filter.status),
            ("from", &filter.from),
            ("to", &filter.to),
        ] {
            if !value.is_empty() {
                url.append_pair(key, value);
            }
        }
        url.append_pair("cursor", &cursor);
        format!("/admin/deliveries?{}", url.finish())
    });
    Ok(render(&DeliveriesPage {
        layout: Layout::of(&admin, "Deliveries", "deliveries"),
        webhooks: hooks.into_iter().map(|w| (w.id, w.name)).collect(),
        categories: services
            .catalog
            .collections()
            .iter()
            .map(|c| {
                (
                    c.wildcard(),
                    c.event_types.iter().map(|t| t.name.clone()).collect(),
                )
            })
            .collect(),
        filter,
        deliveries,
        names,
        next,
        error,
    }))
}

/// `datetime-local` inputs send `2026-03-14T09:30`; the API takes RFC 3339 (times are UTC).
fn local_to_rfc3339(text: &str) -> String {
    if text.len() == 16 && !text.ends_with('Z') {
        format!("{text}:00Z")
    } else {
        text.to_owned()
    }
}

#[derive(Template)]
#[template(path = "delivery.html")]
struct DeliveryPage {
    layout: Layout,
    delivery: DeliveryDetailView,
    webhook_name: String,
    request_body: Option<String>,
    response_body: Option<String>,
    request_headers: Vec<(String, String)>,
    response_headers: Vec<(String, String)>,
    timeline: Vec<DeliveryView>,
    error_words: Option<&'static str>,
}

pub async fn delivery(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> PageResult {
    let services = &state.services;
    let delivery = deliveries::get(services, &admin.caller, &id).await?;
    let webhook = webhooks::get(services, &admin.caller, &delivery.delivery.webhook_id).await?;
    let mut timeline = deliveries::list(
        services,
        &admin.caller,
        &DeliveryQuery {
            event_id: Some(delivery.delivery.event_id.clone()),
            webhook_id: Some(delivery.delivery.webhook_id.clone()),
            ..DeliveryQuery::default()
        },
    )
    .await?
    .deliveries;
    timeline.reverse();
    let headers = |value: Option<&Value>| -> Vec<(String, String)> {
        value
            .and_then(Value::as_object)
            .map(|object| {
                object
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(render(&DeliveryPage {
        layout: Layout::of(&admin, "Delivery", "deliveries"),
        webhook_name: webhook.name,
        request_body: delivery.request.body.as_deref().map(pretty_text),
        response_body: delivery
            .response
            .as_ref()
            .and_then(|r| r.body.as_deref())
            .map(pretty_text),
        request_headers: headers(Some(&delivery.request.headers)),
        response_headers: headers(delivery.response.as_ref().and_then(|r| r.headers.as_ref())),
        error_words: delivery.delivery.error_kind.as_deref().map(error_words),
        timeline,
        delivery,
    }))
}

pub async fn resend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: AdminForm,
) -> PageResult {
    let event = deliveries::resend(&state.services, &form.admin.caller, &id).await?;
    Ok(see_other(&format!("/admin/deliveries?event_id={event}")))
}

/// An error kind in plain words.
fn error_words(kind: &str) -> &'static str {
    match kind {
        "timeout" => "The receiver did not answer within the request timeout.",
        "dns" => "The host name could not be resolved.",
        "connect" => "No connection could be made to the receiver.",
        "connection" => "The connection broke before an answer came.",
        "tls" => "The TLS handshake failed (certificate or protocol).",
        "refused_destination" => "The URL policy refused the address the host resolved to.",
        "redirect" => "The receiver answered with a redirect, which is never followed.",
        "http_status" => "The receiver answered with an error status.",
        _ => "The attempt failed.",
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// JSON pretty-printed; anything else as it is.
fn pretty_text(text: &str) -> String {
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_owned(), |value| pretty(&value))
}

// --- Event types and audit log -----------------------------------------------------------------

pub struct CategoryView {
    pub name: String,
    pub wildcard: String,
    pub collection: String,
    /// The JSON Schema of the category's resource, pretty-printed.
    pub resource_schema: String,
    pub types: Vec<TypeView>,
}

pub struct TypeView {
    pub name: String,
    pub description: String,
    pub example: String,
    /// The envelope's JSON Schema (resources by reference), pretty-printed.
    pub schema: String,
}

#[derive(Template)]
#[template(path = "event_types.html")]
struct EventTypesPage {
    layout: Layout,
    categories: Vec<CategoryView>,
    /// The envelope schema of `webhook.test`, pretty-printed.
    test_schema: String,
}

pub async fn event_types(State(state): State<AppState>, admin: Admin) -> Response {
    let schemas = state.services.contracts.schemas();
    let categories = state
        .services
        .catalog
        .collections()
        .iter()
        .map(|c| CategoryView {
            name: c.category.clone(),
            wildcard: c.wildcard(),
            collection: c.name.clone(),
            resource_schema: schemas.resource(&c.name).map(pretty).unwrap_or_default(),
            types: c
                .event_types
                .iter()
                .map(|t| TypeView {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    example: pretty(&t.example),
                    schema: schemas
                        .envelope(&t.name)
                        .as_ref()
                        .map(pretty)
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    render(&EventTypesPage {
        layout: Layout::of(&admin, "Event types", "event-types"),
        categories,
        test_schema: schemas
            .envelope(zivio_core::catalog::TEST_EVENT_TYPE)
            .as_ref()
            .map(pretty)
            .unwrap_or_default(),
    })
}

#[derive(Deserialize)]
pub struct AuditQuery {
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "audit_log.html")]
struct AuditLogPage {
    layout: Layout,
    entries: Vec<(audit::AuditEntryView, String)>,
    next: Option<String>,
}

pub async fn audit_log(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    let page = audit::list(
        &state.services,
        &admin.caller,
        query.cursor.as_deref().filter(|c| !c.is_empty()),
        Some(50),
    )
    .await?;
    let entries = page.entries.into_iter().map(|entry| {
        let changes = pretty(&entry.changes);
        (entry, changes)
    });
    Ok(render(&AuditLogPage {
        layout: Layout::of(&admin, "Audit log", "audit-log"),
        entries: entries.collect(),
        next: page
            .next_cursor
            .map(|cursor| format!("/admin/audit-log?cursor={cursor}")),
    }))
}

#[derive(Template)]
#[template(path = "guide.html")]
struct GuidePage {
    layout: Layout,
    guide: &'static str,
}

/// The receiver guide (`docs/receiving-webhooks.md`), compiled in: how to verify signatures.
pub async fn receiver_guide(admin: Admin) -> Response {
    render(&GuidePage {
        layout: Layout::of(&admin, "Receiving webhooks", "webhooks"),
        guide: include_str!("../../../../docs/receiving-webhooks.md"),
    })
}
