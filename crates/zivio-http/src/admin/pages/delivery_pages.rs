//! The deliveries log, one attempt in full, and resending.

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use zivio_app::AppError;
use zivio_app::deliveries::{self, DeliveryDetailView, DeliveryQuery, DeliveryView};
use zivio_app::webhooks;
use zivio_core::error_kind::ErrorKind;

use crate::AppState;
use crate::admin::{Admin, AdminForm, PageResult};

use super::{Layout, local_to_rfc3339, pretty_text, render, see_other};

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
    ErrorKind::parse(kind).map_or("The attempt failed.", ErrorKind::in_plain_words)
}
