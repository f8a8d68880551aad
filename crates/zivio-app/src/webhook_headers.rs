//! Custom request headers of webhooks (docs/product.md §4): validated and sealed here, shown
//! as names and hints only, and removed when the URL moves to another origin without new ones.

use serde::Serialize;
use serde_json::{Value, json};
use zivio_core::custom_header::{self, CustomHeader, HeaderInput, SealedHeader};
use zivio_core::webhook::{Webhook, WebhookId};

use crate::{FieldError, Services, random};

/// A custom header as admins see it: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HeaderView {
    pub name: String,
    /// The last four characters of a value of 16 characters or more; otherwise null.
    pub hint: Option<String>,
}

pub(crate) fn views(headers: &[SealedHeader]) -> Vec<HeaderView> {
    headers
        .iter()
        .map(|header| HeaderView {
            name: header.name.clone(),
            hint: header.hint.clone(),
        })
        .collect()
}

/// The validated set, or `None` with its errors added to `errors`.
pub(crate) fn check(
    errors: &mut Vec<FieldError>,
    input: &HeaderInput,
) -> Option<Vec<CustomHeader>> {
    custom_header::validate(input)
        .map_err(|refused| {
            errors.extend(
                refused
                    .into_iter()
                    .map(|error| FieldError::new(error.field, error.message)),
            );
        })
        .ok()
}

pub(crate) fn seal(
    services: &Services,
    webhook: &WebhookId,
    headers: &[CustomHeader],
) -> Vec<SealedHeader> {
    headers
        .iter()
        .map(|header| header.seal(&services.secrets_key, webhook, random()))
        .collect()
}

/// Applies an update to the stored headers and says what changed, for the audit log (names
/// only): a given set replaces them; without one, a URL moving to another origin (scheme,
/// host or port) removes them, so credentials never follow a URL to a new place.
pub(crate) fn update(
    services: &Services,
    webhook: &mut Webhook,
    replacement: Option<&[CustomHeader]>,
    new_url: Option<&str>,
) -> Option<Value> {
    let before = names(&webhook.headers);
    match replacement {
        Some(headers) => {
            if headers.is_empty() && webhook.headers.is_empty() {
                return None;
            }
            webhook.headers = seal(services, &webhook.id, headers);
            Some(json!({"from": before, "to": names(&webhook.headers)}))
        }
        None => {
            let moved = new_url.is_some_and(|url| !custom_header::same_origin(&webhook.url, url));
            if !moved || webhook.headers.is_empty() {
                return None;
            }
            webhook.headers.clear();
            Some(json!({
                "from": before,
                "to": [],
                "removed_because": "the URL moved to another origin",
            }))
        }
    }
}

pub(crate) fn names(headers: &[SealedHeader]) -> Vec<String> {
    headers.iter().map(|header| header.name.clone()).collect()
}
