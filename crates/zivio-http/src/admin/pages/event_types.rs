//! The event catalog with its payload schemas, and the receiver guide.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use crate::AppState;
use crate::admin::Admin;

use super::{Layout, pretty, render};

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
        guide: include_str!("../../../../../docs/receiving-webhooks.md"),
    })
}
