//! The admin pages: each handler calls the use cases and renders a template. This module holds
//! what every page shares (the frame, rendering, error pages); the pages live by subject in its
//! submodules.

pub mod audit_log;
pub mod delivery_pages;
pub mod event_types;
pub mod recovery_pages;
pub mod sign_in;
pub mod webhook_forms;
pub mod webhook_pages;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::Value;

use super::Admin;
/// What every page's frame needs: the title, and for a signed-in manager the navigation.
pub struct Layout {
    pub title: String,
    pub section: &'static str,
    /// The form token for the sign-out button; `None` on pages without a manager.
    pub token: Option<String>,
}

impl Layout {
    pub(super) fn public(title: &str) -> Self {
        Layout {
            title: title.to_owned(),
            section: "",
            token: None,
        }
    }

    pub(super) fn of(admin: &Admin, title: &str, section: &'static str) -> Self {
        Layout {
            title: title.to_owned(),
            section,
            token: Some(admin.form_token()),
        }
    }
}

pub(super) fn render(template: &impl Template) -> Response {
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

pub(super) fn with_status(status: StatusCode, template: &impl Template) -> Response {
    let mut response = render(template);
    *response.status_mut() = status;
    response
}

pub(super) fn see_other(to: &str) -> Response {
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

pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// JSON pretty-printed; anything else as it is.
pub(super) fn pretty_text(text: &str) -> String {
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_owned(), |value| pretty(&value))
}

/// `datetime-local` inputs send `2026-03-14T09:30`; the API takes RFC 3339 (times are UTC).
pub(super) fn local_to_rfc3339(text: &str) -> String {
    if text.len() == 16 && !text.ends_with('Z') {
        format!("{text}:00Z")
    } else if text.len() == 19 && !text.ends_with('Z') {
        // With seconds (`step` below a minute).
        format!("{text}Z")
    } else {
        text.to_owned()
    }
}
