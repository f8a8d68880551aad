//! Changes to a webhook: validated once, applied to the freshest copy.

use serde_json::{Value, json};
use zivio_core::custom_header::CustomHeader;
use zivio_core::rate_limit::RateLimit;
use zivio_core::url_policy::WebhookUrl;
use zivio_core::webhook::{self as wh, Webhook};

use super::{WebhookChanges, check, check_events, refusal, url_change};
use crate::webhook_url::vet_url;
use crate::{AppResult, Services, webhook_headers};

/// Changes to a webhook, validated: each field to set, `None` where it stays.
pub(super) struct CheckedChanges {
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) events: Option<Vec<String>>,
    pub(super) url: Option<WebhookUrl>,
    pub(super) headers: Option<Vec<CustomHeader>>,
    pub(super) rate_limit: Option<Option<RateLimit>>,
}

impl CheckedChanges {
    /// Validates every field, refusing with all that are wrong at once.
    pub(super) async fn of(services: &Services, changes: WebhookChanges) -> AppResult<Self> {
        let mut errors = Vec::new();
        let name = changes
            .name
            .and_then(|text| check(&mut errors, "name", wh::validate_name(&text)));
        let description = changes
            .description
            .and_then(|text| check(&mut errors, "description", wh::validate_description(&text)));
        let events = changes
            .events
            .and_then(|list| check_events(services, &mut errors, &list));
        let url = match changes.url {
            Some(text) => check(&mut errors, "url", vet_url(services, &text).await),
            None => None,
        };
        let mut bad_request = Vec::new();
        let headers = changes
            .headers
            .as_ref()
            .and_then(|input| webhook_headers::check(&mut bad_request, input));
        let rate_limit = changes.rate_limit.and_then(|limit| {
            let limit = limit.map(RateLimit::new).transpose();
            check(&mut bad_request, "rate_limit", limit)
        });
        if !errors.is_empty() || !bad_request.is_empty() {
            return Err(refusal(errors, bad_request));
        }
        Ok(Self {
            name,
            description,
            events,
            url,
            headers,
            rate_limit,
        })
    }

    /// Applies the changes that change something; returns the audit's `{field: {from, to}}`.
    pub(super) fn apply(
        &self,
        services: &Services,
        webhook: &mut Webhook,
    ) -> serde_json::Map<String, Value> {
        let mut audit = serde_json::Map::new();
        let new_url = self.url.as_ref().map(WebhookUrl::as_str);
        if let Some(change) =
            webhook_headers::update(services, webhook, self.headers.as_deref(), new_url)
        {
            audit.insert("headers".into(), change);
        }
        if let Some(limit) = self.rate_limit.filter(|limit| *limit != webhook.rate_limit) {
            let per_second = |limit: Option<RateLimit>| limit.map(RateLimit::per_second);
            audit.insert(
                "rate_limit".into(),
                json!({"from": per_second(webhook.rate_limit), "to": per_second(limit)}),
            );
            webhook.rate_limit = limit;
        }
        if let Some(name) = self.name.as_ref().filter(|name| **name != webhook.name) {
            audit.insert("name".into(), json!({"from": webhook.name, "to": name}));
            webhook.name = name.clone();
        }
        if let Some(description) = self
            .description
            .as_ref()
            .filter(|text| **text != webhook.description)
        {
            audit.insert(
                "description".into(),
                json!({"from": webhook.description, "to": description}),
            );
            webhook.description = description.clone();
        }
        if let Some(events) = self
            .events
            .as_ref()
            .filter(|events| **events != webhook.events)
        {
            audit.insert(
                "events".into(),
                json!({"from": webhook.events, "to": events}),
            );
            webhook.events = events.clone();
        }
        if let Some(url) = self.url.as_ref().filter(|url| url.as_str() != webhook.url) {
            audit.insert("url".into(), url_change(&webhook.url, url));
            webhook.url = url.as_str().to_owned();
        }
        audit
    }
}
