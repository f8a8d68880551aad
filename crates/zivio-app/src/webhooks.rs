//! Managing webhooks (docs/product.md §3–4): create, read, edit, rotate, disable, enable, delete,
//! with the privilege boundary: actions that send or expose more of the owner's data, or
//! destroy their history, need access that covers the owner's.

mod changes;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use zivio_core::access::Access;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::custom_header::HeaderInput;
use zivio_core::event::EventId;
use zivio_core::ids::UserId;
use zivio_core::rate_limit::RateLimit;
use zivio_core::secret::SigningSecret;
use zivio_core::subscription;
use zivio_core::url_policy::{WebhookUrl, mask_str};
use zivio_core::webhook::{self as wh, Disabled, DisabledReason, SealedSecret, Webhook, WebhookId};

use changes::CheckedChanges;

use crate::caller::owner_access;
use crate::webhook_access::{find, require_cover};
use crate::webhook_headers;
pub use crate::webhook_headers::HeaderView;
pub use crate::webhook_status::Health;
use crate::webhook_status::{health_of, waiting_for_limits};
use crate::webhook_url::vet_url;
use crate::{AppError, AppResult, Caller, FieldError, Services, random, rfc3339, unix_millis};

/// A webhook as an admin sees it: the URL is scheme and host only unless their access covers
/// the owner's. Never the secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub owner_id: String,
    pub owner_active: bool,
    pub enabled: bool,
    /// `manual` or `auto`; null while enabled.
    #[schema(value_type = Option<String>)]
    pub disabled_reason: Option<&'static str>,
    pub disabled_by: Option<String>,
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
    pub secret_hint: String,
    /// Custom request headers: names and hints, never values.
    pub headers: Vec<HeaderView>,
    /// Requests per second the receiver takes at most; null: no limit.
    pub rate_limit: Option<u32>,
    /// Deliveries are waiting for the rate limit.
    pub throttled: bool,
    /// How many deliveries are due and waiting for the rate limit (0 without one).
    pub waiting: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub health: Health,
}

/// An answer that carries the signing secret: it is shown this once.
#[derive(Debug)]
pub struct WithSecret {
    pub webhook: WebhookView,
    pub secret: SigningSecret,
}

#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub headers: Option<HeaderInput>,
    /// Requests per second; `None`: no limit.
    pub rate_limit: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct WebhookChanges {
    pub name: Option<String>,
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<String>>,
    /// Replaces the whole set (empty: removes all).
    pub headers: Option<HeaderInput>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<i64>>,
}

pub async fn list(services: &Services, caller: &Caller) -> AppResult<Vec<WebhookView>> {
    let webhooks = services.store.webhooks(&caller.tenant).await?;
    let mut health = health_of(services, caller, None).await?;
    let mut waiting = waiting_for_limits(services, &webhooks).await?;
    let mut owners: BTreeMap<UserId, (Access, bool)> = BTreeMap::new();
    let mut views = Vec::with_capacity(webhooks.len());
    for webhook in &webhooks {
        if !owners.contains_key(&webhook.owner) {
            let owner = owner_access(services, &caller.tenant, &webhook.owner).await?;
            owners.insert(webhook.owner.clone(), owner);
        }
        let (owner, active) = &owners[&webhook.owner];
        let health = health.remove(&webhook.id).unwrap_or_default();
        let waiting = waiting.remove(&webhook.id).unwrap_or(0);
        views.push(view(
            webhook,
            caller.access.covers(owner),
            *active,
            health,
            waiting,
        ));
    }
    Ok(views)
}

pub async fn get(services: &Services, caller: &Caller, id: &str) -> AppResult<WebhookView> {
    let webhook = find(services, caller, id).await?;
    present(services, caller, &webhook).await
}

pub async fn create(
    services: &Services,
    caller: &Caller,
    new: NewWebhook,
) -> AppResult<WithSecret> {
    let mut errors = Vec::new();
    let name = check(&mut errors, "name", wh::validate_name(&new.name));
    let description = check(
        &mut errors,
        "description",
        wh::validate_description(new.description.as_deref().unwrap_or("")),
    );
    let events = check_events(services, &mut errors, &new.events);
    let url = check(&mut errors, "url", vet_url(services, &new.url).await);
    let mut bad_request = Vec::new();
    let headers = match &new.headers {
        Some(input) => webhook_headers::check(&mut bad_request, input),
        None => Some(Vec::new()),
    };
    let rate_limit = check(
        &mut bad_request,
        "rate_limit",
        new.rate_limit.map(RateLimit::new).transpose(),
    );
    let (Some(name), Some(description), Some(events), Some(url), Some(headers), Some(rate_limit)) =
        (name, description, events, url, headers, rate_limit)
    else {
        return Err(refusal(errors, bad_request));
    };
    let now = services.now();
    let id = WebhookId::new(unix_millis(now), random());
    let secret = SigningSecret::generate(random());
    let webhook = Webhook {
        secret: seal(services, &id, &secret),
        headers: webhook_headers::seal(services, &id, &headers),
        rate_limit,
        id,
        tenant: caller.tenant.clone(),
        owner: caller.user.clone(),
        name,
        url: url.as_str().to_owned(),
        description,
        events,
        disabled: None,
        created_at: now,
        updated_at: now,
        version: 0,
    };
    let audit = entry(caller, now, AuditAction::WebhookCreated, &webhook).changes(json!({
        "name": webhook.name, "url": url.masked(), "description": webhook.description, "events": webhook.events,
        "headers": webhook_headers::names(&webhook.headers),
        "rate_limit": webhook.rate_limit.map(RateLimit::per_second),
    }));
    services
        .store
        .create_webhook(&webhook, services.settings.max_webhooks_per_tenant, &audit)
        .await
        .map_err(|error| match error {
            zivio_store::StoreError::Conflict { .. } => AppError::Conflict(format!(
                "This tenant already has the maximum of {} webhooks.",
                services.settings.max_webhooks_per_tenant
            )),
            other => other.into(),
        })?;
    tracing::info!(webhook = %webhook.id, tenant = %caller.tenant, "webhook created");
    Ok(WithSecret {
        webhook: view(
            &webhook,
            true,
            caller.access.is_active(),
            Health::default(),
            0,
        ),
        secret,
    })
}

pub async fn update(
    services: &Services,
    caller: &Caller,
    id: &str,
    changes: WebhookChanges,
) -> AppResult<WebhookView> {
    // Validate (and resolve) once; apply to the freshest copy.
    let changes = CheckedChanges::of(services, changes).await?;
    let guarded = changes.url.is_some() || changes.events.is_some() || changes.headers.is_some();
    for _ in 0..TRIES {
        let mut webhook = find(services, caller, id).await?;
        // A low limit can end deliveries (they wait too long): changing it needs cover like the
        // URL (setting the value it already has changes nothing).
        if guarded
            || changes
                .rate_limit
                .is_some_and(|limit| limit != webhook.rate_limit)
        {
            require_cover(
                services,
                caller,
                &webhook,
                "change the URL, the events, the custom headers or the rate limit of",
            )
            .await?;
        }
        let audit = changes.apply(services, &mut webhook);
        if audit.is_empty() {
            return present(services, caller, &webhook).await;
        }
        let now = services.now();
        webhook.updated_at = now;
        let entry =
            entry(caller, now, AuditAction::WebhookUpdated, &webhook).changes(Value::Object(audit));
        if save(services, &webhook, &entry).await? {
            return present(services, caller, &webhook).await;
        }
    }
    Err(concurrent_change())
}

pub async fn rotate_secret(
    services: &Services,
    caller: &Caller,
    id: &str,
) -> AppResult<WithSecret> {
    let secret = SigningSecret::generate(random());
    for _ in 0..TRIES {
        let mut webhook = find(services, caller, id).await?;
        require_cover(services, caller, &webhook, "rotate the secret of").await?;
        let now = services.now();
        webhook.secret = seal(services, &webhook.id, &secret);
        webhook.updated_at = now;
        let audit = entry(caller, now, AuditAction::WebhookSecretRotated, &webhook);
        if save(services, &webhook, &audit).await? {
            return Ok(WithSecret {
                webhook: present(services, caller, &webhook).await?,
                secret,
            });
        }
    }
    Err(concurrent_change())
}

/// Open to every manager: disabling is the safety valve. Disabling a disabled webhook
/// changes nothing.
pub async fn disable(services: &Services, caller: &Caller, id: &str) -> AppResult<WebhookView> {
    for _ in 0..TRIES {
        let mut webhook = find(services, caller, id).await?;
        if !webhook.is_enabled() {
            return present(services, caller, &webhook).await;
        }
        let now = services.now();
        webhook.disabled = Some(Disabled {
            reason: DisabledReason::Manual,
            by: Some(caller.user.clone()),
            at: now,
        });
        webhook.updated_at = now;
        let audit = entry(caller, now, AuditAction::WebhookDisabled, &webhook);
        if save(services, &webhook, &audit).await? {
            return present(services, caller, &webhook).await;
        }
    }
    Err(concurrent_change())
}

pub async fn enable(services: &Services, caller: &Caller, id: &str) -> AppResult<WebhookView> {
    for _ in 0..TRIES {
        let mut webhook = find(services, caller, id).await?;
        require_cover(services, caller, &webhook, "enable").await?;
        if webhook.is_enabled() {
            return present(services, caller, &webhook).await;
        }
        let now = services.now();
        webhook.disabled = None;
        webhook.updated_at = now;
        let audit = entry(caller, now, AuditAction::WebhookEnabled, &webhook);
        if save(services, &webhook, &audit).await? {
            return present(services, caller, &webhook).await;
        }
    }
    Err(concurrent_change())
}

/// How often a read-change-write starts over when someone else changed the webhook meanwhile.
const TRIES: usize = 5;

/// Writes the webhook back if nobody changed it since it was read (its version): `false`
/// means start over from a fresh read, so concurrent edits never overwrite each other (a
/// rename cannot undo a rotation or a disable).
async fn save(services: &Services, webhook: &Webhook, audit: &AuditEntry) -> AppResult<bool> {
    match services.store.update_webhook(webhook, audit).await {
        Ok(()) => Ok(true),
        Err(zivio_store::StoreError::Conflict { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

fn concurrent_change() -> AppError {
    AppError::Conflict("The webhook is being changed concurrently; try again.".to_owned())
}

/// Path and query may hold credentials: the audit log shows scheme and host, and only whether
/// the rest changed.
fn url_change(old: &str, new: &WebhookUrl) -> Value {
    let tail = |url: &url::Url| (url.path().to_owned(), url.query().map(str::to_owned));
    let old_tail = url::Url::parse(old).ok().map(|old| tail(&old));
    json!({"from": mask_str(old), "to": new.masked(), "path_or_query_changed": old_tail != Some(tail(new.url()))})
}

pub async fn delete(services: &Services, caller: &Caller, id: &str) -> AppResult<()> {
    let webhook = find(services, caller, id).await?;
    require_cover(services, caller, &webhook, "delete").await?;
    let audit = entry(
        caller,
        services.now(),
        AuditAction::WebhookDeleted,
        &webhook,
    )
    .changes(json!({"name": webhook.name, "url": mask_str(&webhook.url)}));
    if !services
        .store
        .delete_webhook(&caller.tenant, &webhook.id, &audit)
        .await?
    {
        return Err(AppError::NotFound("webhook"));
    }
    tracing::info!(webhook = %webhook.id, tenant = %caller.tenant, "webhook deleted");
    Ok(())
}

async fn present(
    services: &Services,
    caller: &Caller,
    webhook: &Webhook,
) -> AppResult<WebhookView> {
    let (owner, active) = owner_access(services, &caller.tenant, &webhook.owner).await?;
    let health = health_of(services, caller, Some(&webhook.id))
        .await?
        .remove(&webhook.id)
        .unwrap_or_default();
    let waiting = waiting_for_limits(services, std::slice::from_ref(webhook))
        .await?
        .remove(&webhook.id)
        .unwrap_or(0);
    Ok(view(
        webhook,
        caller.access.covers(&owner),
        active,
        health,
        waiting,
    ))
}

/// Sends `webhook.test` to the webhook through the engine, whatever its subscriptions and even
/// while it is disabled (to diagnose it). Open to every manager: it sends none of the owner's
/// data. Returns the test event's id.
pub async fn send_test(services: &Services, caller: &Caller, id: &str) -> AppResult<EventId> {
    let webhook = find(services, caller, id).await?;
    let (_, owner_active) = owner_access(services, &caller.tenant, &webhook.owner).await?;
    if !owner_active {
        return Err(crate::deliveries::owner_inactive());
    }
    let now = services.now();
    let event = crate::events::test_event(&webhook.id, now);
    let audit = entry(caller, now, AuditAction::TestEventSent, &webhook)
        .changes(json!({"event_id": event.id}));
    crate::deliveries::publish_one(services, caller, &webhook, &event, &audit).await?;
    Ok(event.id)
}

fn view(
    webhook: &Webhook,
    covers_owner: bool,
    owner_active: bool,
    health: Health,
    waiting: i64,
) -> WebhookView {
    let disabled = webhook.disabled.as_ref();
    WebhookView {
        id: webhook.id.to_string(),
        name: webhook.name.clone(),
        url: if covers_owner {
            webhook.url.clone()
        } else {
            mask_str(&webhook.url)
        },
        description: webhook.description.clone(),
        events: webhook.events.clone(),
        owner_id: webhook.owner.to_string(),
        owner_active,
        enabled: webhook.is_enabled(),
        disabled_reason: disabled.map(|d| d.reason.as_str()),
        disabled_by: disabled
            .and_then(|d| d.by.as_ref())
            .map(ToString::to_string),
        disabled_at: disabled.map(|d| rfc3339(d.at)),
        secret_hint: webhook.secret.hint.clone(),
        headers: webhook_headers::views(&webhook.headers),
        rate_limit: webhook.rate_limit.map(RateLimit::per_second),
        throttled: waiting > 0,
        waiting,
        created_at: rfc3339(webhook.created_at),
        updated_at: rfc3339(webhook.updated_at),
        health,
    }
}

fn seal(services: &Services, id: &WebhookId, secret: &SigningSecret) -> SealedSecret {
    SealedSecret {
        ciphertext: secret.seal(&services.secrets_key, id.as_str(), random()),
        key_id: services.secrets_key.id(),
        hint: secret.hint(),
    }
}

fn entry(
    caller: &Caller,
    at: OffsetDateTime,
    action: AuditAction,
    webhook: &Webhook,
) -> AuditEntry {
    AuditEntry::new(&caller.tenant, at, caller.user.as_str(), action).webhook(webhook.id.as_str())
}

/// Custom header and rate limit errors are a 400 in the API's contract, other invalid fields a
/// 422.
fn refusal(mut errors: Vec<FieldError>, bad_request: Vec<FieldError>) -> AppError {
    if bad_request.is_empty() {
        AppError::Validation(errors)
    } else {
        errors.extend(bad_request);
        AppError::BadRequest(errors)
    }
}

fn check<T>(errors: &mut Vec<FieldError>, field: &str, result: Result<T, String>) -> Option<T> {
    result
        .map_err(|message| errors.push(FieldError::new(field, message)))
        .ok()
}

fn check_events(
    services: &Services,
    errors: &mut Vec<FieldError>,
    list: &[String],
) -> Option<Vec<String>> {
    if list.is_empty() {
        errors.push(FieldError::new(
            "events",
            "must list at least one event type, category or *",
        ));
        return None;
    }
    match subscription::parse_all(list, services.catalog) {
        Ok(filters) => Some(filters.iter().map(ToString::to_string).collect()),
        Err(refused) => {
            errors.extend(refused.into_iter().map(|(index, error)| {
                FieldError::new(format!("events[{index}]"), error.to_string())
            }));
            None
        }
    }
}
