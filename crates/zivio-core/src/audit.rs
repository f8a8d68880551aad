//! Audit entries (docs/product.md §4): who did what, when, with the changed values. Never a secret;
//! URLs appear masked to scheme and host.

use serde_json::Value;
use time::OffsetDateTime;

use crate::ids::TenantId;

/// What happened; the string forms are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    WebhookCreated,
    WebhookUpdated,
    WebhookSecretRotated,
    WebhookDisabled,
    WebhookEnabled,
    WebhookDeleted,
    TestEventSent,
    DeliveryResent,
    SignedIn,
    ApiKeyCreated,
    ApiKeyRevoked,
    SignInLinkIssued,
    /// A directory change ended a user's admin sessions and API keys (deactivation, deletion,
    /// loss of `webhooks:manage`).
    UserAccessEnded,
    RecoveryStarted,
    /// A recovery ended: done, cancelled, or stopped (webhook disabled, owner inactive).
    RecoveryEnded,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::WebhookCreated => "webhook.created",
            AuditAction::WebhookUpdated => "webhook.updated",
            AuditAction::WebhookSecretRotated => "webhook.secret_rotated",
            AuditAction::WebhookDisabled => "webhook.disabled",
            AuditAction::WebhookEnabled => "webhook.enabled",
            AuditAction::WebhookDeleted => "webhook.deleted",
            AuditAction::TestEventSent => "webhook.test_sent",
            AuditAction::DeliveryResent => "delivery.resent",
            AuditAction::SignedIn => "user.signed_in",
            AuditAction::ApiKeyCreated => "api_key.created",
            AuditAction::ApiKeyRevoked => "api_key.revoked",
            AuditAction::SignInLinkIssued => "sign_in_link.issued",
            AuditAction::UserAccessEnded => "user.access_ended",
            AuditAction::RecoveryStarted => "recovery.started",
            AuditAction::RecoveryEnded => "recovery.ended",
        }
    }
}

/// Who acted: a user of the tenant, or the platform (service-to-service).
pub const PLATFORM_ACTOR: &str = "platform";

/// Who acted when the service itself did (disabling a webhook that kept failing).
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub tenant: TenantId,
    pub at: OffsetDateTime,
    pub actor_id: String,
    pub action: String,
    pub webhook_id: Option<String>,
    /// An object; for edits `{"field": {"from": old, "to": new}}`.
    pub changes: Value,
}

impl AuditEntry {
    pub fn new(tenant: &TenantId, at: OffsetDateTime, actor_id: &str, action: AuditAction) -> Self {
        Self {
            tenant: tenant.clone(),
            at,
            actor_id: actor_id.to_owned(),
            action: action.as_str().to_owned(),
            webhook_id: None,
            changes: Value::Object(Default::default()),
        }
    }

    pub fn webhook(mut self, id: &str) -> Self {
        self.webhook_id = Some(id.to_owned());
        self
    }

    pub fn changes(mut self, changes: Value) -> Self {
        self.changes = changes;
        self
    }
}
