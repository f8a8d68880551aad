//! The deliveries log (docs/product.md §7): every attempt, filtered and paged newest first; one
//! attempt with its request and response; resending an event to one webhook as a new event.
//! Bodies, the URL's path and query, and resends are behind the privilege boundary.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zivio_core::access::Access;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::delivery::AttemptId;
use zivio_core::event::EventId;
use zivio_core::subscription::EventFilter;
use zivio_core::url_policy::mask_str;
use zivio_core::webhook::{Webhook, WebhookId};
use zivio_store::{
    AttemptCursor, AttemptFilter, AttemptSummary, EventTypeFilter, NewEvent, UserWithRoles,
};

use crate::caller::owner_access;
use crate::events::{TEST_EVENT_TYPE, test_event};
use crate::handoff::Handed;
use crate::resending::{NotResent, resend_event};
use crate::rfc3339;
use crate::webhook_access::{find, require_cover};
use crate::{AppError, AppResult, Caller, FieldError, Services};

pub const MAX_PAGE: u32 = 100;

/// One attempt of an event to a webhook.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    /// `dlv_...`
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// 1-based.
    pub attempt: u32,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    pub response_status: Option<u16>,
    pub duration_ms: i64,
    /// `timeout`, `dns`, `connect`, `connection`, `tls`, `refused_destination`, `redirect`,
    /// `http_status`, `rate_limited` or `secret` (`zivio_core::error_kind::ErrorKind`).
    pub error_kind: Option<String>,
    pub error_detail: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When this event's next attempt to this webhook is due; null when none will follow.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// One attempt with what was sent and what came back.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = DeliveryDetail)]
pub struct DeliveryDetailView {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub request: RequestView,
    pub response: Option<ResponseView>,
    /// The event this one resends (`evt_...`), if it is a resend (single or by a recovery).
    pub resend_of: Option<String>,
    /// Why the bodies, the response headers and the URL's path and query are withheld; null
    /// when they are shown.
    pub bodies_hidden: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RequestView {
    pub url: String,
    #[schema(value_type = Object)]
    pub headers: Value,
    /// The exact request body; null when withheld.
    pub body: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResponseView {
    pub status: Option<u16>,
    /// Null when withheld: headers such as `Location` can repeat the URL's path.
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
    /// The response body as received (up to 64 KiB, invalid UTF-8 replaced); null when withheld.
    pub body: Option<String>,
    /// The body was longer than what is kept.
    pub truncated: bool,
}

/// The deliveries log's filters, as given in the query string.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub webhook_id: Option<String>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

pub async fn list(
    services: &Services,
    caller: &Caller,
    query: &DeliveryQuery,
) -> AppResult<DeliveryPage> {
    let limit = crate::cursor::limit(query.limit, 50, MAX_PAGE)?;
    let mut filter = filter(services, query)?;
    filter.limit = limit + 1;
    let mut attempts = services
        .store
        .delivery_attempts(&caller.tenant, &filter)
        .await?;
    let more = attempts.len() > limit as usize;
    attempts.truncate(limit as usize);
    let next_cursor = more
        .then(|| attempts.last())
        .flatten()
        .map(|last| crate::cursor::encode(last.created_at, last.id.as_str()));
    Ok(DeliveryPage {
        deliveries: attempts.iter().map(view).collect(),
        next_cursor,
    })
}

fn filter(services: &Services, query: &DeliveryQuery) -> AppResult<AttemptFilter> {
    let invalid =
        |name: &str, message: &str| AppError::InvalidParameter(FieldError::new(name, message));
    let webhook = match &query.webhook_id {
        None => None,
        Some(text) => Some(
            WebhookId::parse(text)
                .ok_or_else(|| invalid("webhook_id", "is not a webhook id (wh_...)"))?,
        ),
    };
    let event_type = match query.event_type.as_deref() {
        None | Some("*") => None,
        Some(TEST_EVENT_TYPE) => Some(EventTypeFilter::Exact(TEST_EVENT_TYPE.to_owned())),
        Some(text) => match EventFilter::parse(text, services.catalog) {
            Ok(EventFilter::Exact(name)) => Some(EventTypeFilter::Exact(name)),
            Ok(EventFilter::Category { prefix, .. }) => Some(EventTypeFilter::AnyOf(
                services
                    .catalog
                    .collection_by_prefix(&prefix)
                    .map(|collection| {
                        let types = collection.event_types.iter();
                        types.map(|event_type| event_type.name.clone()).collect()
                    })
                    .unwrap_or_default(),
            )),
            Ok(EventFilter::All) => None,
            Err(error) => return Err(invalid("event_type", &error.to_string())),
        },
    };
    let status = match query.status.as_deref() {
        None => None,
        Some("succeeded") => Some(true),
        Some("failed") => Some(false),
        Some(_) => return Err(invalid("status", "must be `succeeded` or `failed`")),
    };
    let time = |name: &str, text: &Option<String>| {
        text.as_deref()
            .map(|text| {
                OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                    invalid(
                        name,
                        "must be an RFC 3339 time such as 2026-03-14T09:30:00Z",
                    )
                })
            })
            .transpose()
    };
    let from = time("from", &query.from)?;
    let to = time("to", &query.to)?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(invalid("to", "must not be before `from`"));
    }
    let event_id = query
        .event_id
        .as_deref()
        .map(|id| {
            EventId::parse(id).ok_or_else(|| {
                invalid(
                    "event_id",
                    "must be an event id: `evt_` and up to 64 lowercase letters, digits or `_`",
                )
            })
        })
        .transpose()?;
    let before = match query.cursor.as_deref().map(crate::cursor::decode) {
        None => None,
        Some(decoded) => {
            let (at, id) = decoded?;
            let id = AttemptId::parse(&id)
                .ok_or_else(|| invalid("cursor", "is not a cursor this service returned"))?;
            Some(AttemptCursor { at, id })
        }
    };
    Ok(AttemptFilter {
        webhook,
        event_type,
        event_id,
        succeeded: status,
        from,
        to,
        before,
        limit: 0,
    })
}

pub async fn get(services: &Services, caller: &Caller, id: &str) -> AppResult<DeliveryDetailView> {
    let id = AttemptId::parse(id).ok_or(AppError::NotFound("delivery"))?;
    let detail = services
        .store
        .delivery_attempt(&caller.tenant, &id)
        .await?
        .ok_or(AppError::NotFound("delivery"))?;
    let webhook = find(services, caller, detail.summary.webhook_id.as_str()).await?;
    let (owner, _) = owner_access(services, &caller.tenant, &webhook.owner).await?;
    let hidden = caller.access.coverage_gap(&owner).map(|gap| {
        format!(
            "Bodies, the signature, response headers and the URL's path and query are shown only to the webhook's owner ({}) or an admin whose access covers the owner's: {gap}.",
            webhook.owner
        )
    });
    let shown = hidden.is_none();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let headers = |json: &str| serde_json::from_str(json).unwrap_or(Value::Null);
    let response = detail
        .response_headers
        .as_deref()
        .map(|response_headers| ResponseView {
            status: detail.summary.response_status,
            headers: shown.then(|| headers(response_headers)),
            body: detail.response_body.as_deref().filter(|_| shown).map(text),
            truncated: detail.response_truncated,
        });
    Ok(DeliveryDetailView {
        delivery: view(&detail.summary),
        request: RequestView {
            url: if shown {
                detail.request_url.clone()
            } else {
                mask_str(&detail.request_url)
            },
            headers: request_headers(&detail.request_headers, shown),
            body: shown.then(|| text(&detail.request_body)),
        },
        response,
        resend_of: detail.resend_of.as_ref().map(EventId::to_string),
        bodies_hidden: hidden,
    })
}

/// The headers an attempt sent. The signature goes with the body: an admin who may not see
/// the body does not see the signature over it either (nothing to test guesses against).
fn request_headers(json: &str, shown: bool) -> Value {
    let mut headers = serde_json::from_str(json).unwrap_or(Value::Null);
    if !shown && let Some(headers) = headers.as_object_mut() {
        headers.shift_remove("webhook-signature");
    }
    headers
}

/// Sends the attempt's event again to its webhook only, as a new event (new id, same type and
/// `occurred_at`) shaped with the owner's access now. Returns the new event id.
pub async fn resend(services: &Services, caller: &Caller, id: &str) -> AppResult<EventId> {
    let id = AttemptId::parse(id).ok_or(AppError::NotFound("delivery"))?;
    let attempt = services
        .store
        .delivery_attempt(&caller.tenant, &id)
        .await?
        .ok_or(AppError::NotFound("delivery"))?
        .summary;
    let webhook = find(services, caller, attempt.webhook_id.as_str()).await?;
    require_cover(services, caller, &webhook, "resend events to").await?;
    if !webhook.is_enabled() {
        return Err(AppError::Conflict(
            "The webhook is disabled: enable it before resending (a test event may be sent to a disabled webhook).".to_owned(),
        ));
    }
    let Some(UserWithRoles { user: owner, roles }) = services
        .store
        .user_with_roles(&caller.tenant, &webhook.owner)
        .await?
    else {
        return Err(owner_inactive());
    };
    if !owner.active {
        return Err(owner_inactive());
    }
    let now = services.now();
    let event = if attempt.event_type == TEST_EVENT_TYPE {
        NewEvent {
            resend_of: Some(attempt.event_id.clone()),
            ..test_event(&webhook.id, now)
        }
    } else {
        let owner = Access::of(&owner, &roles);
        let stored = services
            .store
            .event(&caller.tenant, &attempt.event_id)
            .await?;
        resend_event(services, stored, &webhook.id, &owner, now).map_err(|reason| {
            AppError::Conflict(
                match reason {
                    NotResent::Gone => "The event is no longer stored: it cannot be resent.",
                    NotResent::NotVisible => {
                        "The webhook's owner can no longer see this resource: it is not resent."
                    }
                }
                .to_owned(),
            )
        })?
    };
    let audit = AuditEntry::new(
        &caller.tenant,
        now,
        caller.user.as_str(),
        AuditAction::DeliveryResent,
    )
    .webhook(webhook.id.as_str())
    .changes(serde_json::json!({
        "delivery_id": attempt.id,
        "event_id": attempt.event_id,
        "new_event_id": event.id,
    }));
    publish_one(services, caller, &webhook, &event, &audit).await?;
    tracing::info!(webhook = %webhook.id, tenant = %caller.tenant, event = %event.id, "event resent");
    Ok(event.id)
}

/// Stores one event for `webhook` with its audit entry and hands its delivery to this
/// instance's engine in memory (so a test event goes ahead of a backlog waiting in the queue),
/// or, when the hand-off has no room, queues it for a claim.
pub(crate) async fn publish_one(
    services: &Services,
    caller: &Caller,
    webhook: &Webhook,
    event: &NewEvent,
    audit: &AuditEntry,
) -> AppResult<()> {
    let now = services.now();
    let Some(reservation) = services.handoff.reserve(now, event.deliveries.len()) else {
        services
            .store
            .publish_events(
                &caller.tenant,
                std::slice::from_ref(event),
                OffsetDateTime::UNIX_EPOCH,
                Some(audit),
            )
            .await?;
        services.deliveries_queued.notify_one();
        return Ok(());
    };
    let (store, tenant, webhook) = (
        services.store.clone(),
        caller.tenant.clone(),
        webhook.clone(),
    );
    let (event, audit) = (event.clone(), audit.clone());
    // Run to the end even if the request is dropped meanwhile: committed work must reach the
    // engine, or it would wait for its lease to expire.
    tokio::spawn(async move {
        let batch = std::slice::from_ref(&event);
        let epoch = OffsetDateTime::UNIX_EPOCH;
        let leased = store
            .publish_leased(&tenant, batch, epoch, &reservation.lease, Some(&audit))
            .await?;
        // No change count: the engine reads URL and secret again before sending.
        let handed = Handed {
            tenant: &tenant,
            webhook: &webhook,
            generation: None,
            due_at: now,
            background: false,
        };
        let body = bytes::Bytes::from(event.payloads.first().cloned().unwrap_or_default());
        let deliveries = leased
            .into_iter()
            .map(|delivery| handed.delivery(delivery, event.event_type.clone(), body.clone()))
            .collect();
        reservation.hand_over(deliveries);
        Ok::<_, zivio_store::StoreError>(())
    })
    .await
    .unwrap_or_else(|error| {
        Err(zivio_store::StoreError::Commit(format!(
            "publishing stopped: {error}"
        )))
    })?;
    Ok(())
}

pub(crate) fn owner_inactive() -> AppError {
    AppError::Conflict(
        "The webhook's owner is inactive: nothing is sent for this webhook.".to_owned(),
    )
}

fn view(attempt: &AttemptSummary) -> DeliveryView {
    DeliveryView {
        id: attempt.id.to_string(),
        webhook_id: attempt.webhook_id.to_string(),
        event_id: attempt.event_id.to_string(),
        event_type: attempt.event_type.clone(),
        attempt: attempt.attempt,
        status: if attempt.succeeded {
            "succeeded"
        } else {
            "failed"
        },
        response_status: attempt.response_status,
        duration_ms: attempt.duration_ms,
        error_kind: attempt.error_kind.map(|kind| kind.as_str().to_owned()),
        error_detail: attempt.error_detail.clone(),
        created_at: rfc3339(attempt.created_at),
        next_attempt_at: attempt.next_attempt_at.map(rfc3339),
    }
}
