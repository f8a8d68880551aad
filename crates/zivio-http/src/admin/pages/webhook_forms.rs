//! The webhook forms: adding a webhook, and the edit form of a webhook's page (name, URL,
//! description, events, custom headers, rate limit), with the event picker they share.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::{BTreeSet, HashMap};
use zivio_app::sessions::{self};
use zivio_app::webhooks::{self, NewWebhook, WebhookChanges};
use zivio_app::{AppError, FieldError};
use zivio_core::catalog::Catalog;
use zivio_core::custom_header::HeaderInput;

use crate::AppState;
use crate::admin::{Admin, AdminForm, PageResult};

use super::webhook_pages::{EditValues, WebhookQuery, webhook_page};
use super::{Layout, render, see_other, with_status};

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

pub(super) fn picker(catalog: &Catalog, chosen: &[String]) -> Picker {
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
    rate_limit: String,
    picker: Picker,
    errors: HashMap<String, String>,
}

pub async fn new_webhook(State(state): State<AppState>, admin: Admin) -> Response {
    render(&WebhookFormPage {
        layout: Layout::of(&admin, "Add webhook", "webhooks"),
        name: String::new(),
        url: String::new(),
        description: String::new(),
        rate_limit: String::new(),
        picker: picker(state.services.catalog, &[]),
        errors: HashMap::new(),
    })
}

pub(super) fn field_errors(errors: Vec<FieldError>) -> HashMap<String, String> {
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

/// The rate limit box: empty is no limit.
fn rate_limit_field(text: &str) -> Result<Option<i64>, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        FieldError::new(
            "rate_limit",
            "must be a whole number of requests per second from 1 to 10000, or empty for none",
        )
    })
}

/// What the rate limit box shows for a limit.
pub(super) fn rate_limit_text(limit: Option<u32>) -> String {
    limit.map(|limit| limit.to_string()).unwrap_or_default()
}

pub async fn create_webhook(State(state): State<AppState>, form: AdminForm) -> PageResult {
    let AdminForm { admin, fields } = form;
    let mut new = NewWebhook {
        name: fields.text("name"),
        url: fields.text("url"),
        description: Some(fields.text("description")),
        events: fields.all("events"),
        headers: None,
        rate_limit: None,
    };
    let typed = header_lines(&fields.text("headers"))
        .and_then(|headers| Ok((headers, rate_limit_field(&fields.text("rate_limit"))?)));
    let created = match typed {
        Ok((headers, rate_limit)) => {
            new.headers = headers;
            new.rate_limit = rate_limit;
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
                rate_limit: fields.text("rate_limit"),
                errors: field_errors(errors),
            },
        )),
        Err(error) => Err(error.into()),
    }
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
        rate_limit: None,
    };
    let clear = fields.get("clear_headers").is_some();
    // Only managers who cover the owner get the rate limit box; others send none.
    let typed = header_lines(&fields.text("headers")).and_then(|headers| {
        let limit = fields.get("rate_limit").map(rate_limit_field).transpose()?;
        Ok((headers, limit))
    });
    let updated = match typed {
        Ok((Some(_), _)) if clear => Err(AppError::Validation(vec![FieldError::new(
            "headers",
            "enter new headers or tick “Remove all custom headers”, not both",
        )])),
        Ok((headers, rate_limit)) => {
            changes.headers = headers.or_else(|| clear.then(HeaderInput::default));
            changes.rate_limit =
                rate_limit.filter(|limit| *limit != current.rate_limit.map(i64::from));
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
                rate_limit: fields
                    .get("rate_limit")
                    .map_or(page.edit.rate_limit.clone(), str::to_owned),
            };
            if fields.get("events_shown").is_some() {
                page.picker = picker(state.services.catalog, &fields.all("events"));
            }
            Ok(with_status(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        Err(error) => Err(error.into()),
    }
}
