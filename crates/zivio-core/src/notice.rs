//! Mail to webhook managers (docs/product.md §6): the notice that a webhook was disabled after
//! failing for too long. The facts are stored in the outbox as JSON and rendered when sent.
//! The text never holds a response body or the URL's path and query, and no value can break
//! out of the subject line (control characters are replaced).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use crate::audit::{AuditAction, AuditEntry, SYSTEM_ACTOR};
use crate::event::format_time;
use crate::ids::TenantId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoDisabledNotice {
    pub tenant_id: String,
    pub webhook_id: String,
    pub webhook_name: String,
    /// Scheme and host only.
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub failing_since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub disabled_at: OffsetDateTime,
    pub last_error_kind: Option<String>,
    pub last_error_detail: Option<String>,
}

/// A rendered mail: one subject line and a plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub body: String,
}

/// Longest error detail quoted in a mail.
const MAX_DETAIL: usize = 500;

impl AutoDisabledNotice {
    /// The audit entry of the disabling, in `tenant`'s log (the system did it).
    pub fn audit_entry(&self, tenant: &TenantId) -> AuditEntry {
        AuditEntry::new(
            tenant,
            self.disabled_at,
            SYSTEM_ACTOR,
            AuditAction::WebhookDisabled,
        )
        .webhook(&self.webhook_id)
        .changes(serde_json::json!({
            "reason": "auto",
            "failing_since": format_time(self.failing_since),
            "last_error_kind": self.last_error_kind,
        }))
    }

    /// The mail, with a link to the webhook's admin page under `public_url`.
    pub fn render(&self, public_url: &Url) -> Mail {
        let name = one_line(&self.webhook_name);
        let link = public_url
            .join(&format!("admin/webhooks/{}", self.webhook_id))
            .map_or_else(|_| String::new(), String::from);
        let error = match (&self.last_error_kind, &self.last_error_detail) {
            (Some(kind), Some(detail)) => format!("{} ({})", one_line(kind), clip(detail)),
            (Some(kind), None) => one_line(kind),
            (None, Some(detail)) => clip(detail),
            (None, None) => "unknown".to_owned(),
        };
        Mail {
            subject: format!(
                "Webhook \"{name}\" was disabled after failing since {}",
                format_time(self.failing_since)
            ),
            body: format!(
                "The webhook \"{name}\" ({id}) of tenant {tenant} was disabled automatically at {disabled}.\n\
                 \n\
                 Destination: {url}\n\
                 Failing since: {since} (no successful delivery since then)\n\
                 Last error: {error}\n\
                 \n\
                 Events are no longer sent to it. Fix the receiver, then enable the webhook again:\n\
                 {link}\n",
                id = self.webhook_id,
                tenant = one_line(&self.tenant_id),
                disabled = format_time(self.disabled_at),
                url = one_line(&self.url),
                since = format_time(self.failing_since),
            ),
        }
    }
}

/// The text on one line: control characters (CR, LF, …) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn clip(text: &str) -> String {
    let line = one_line(text);
    match line.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn notice(name: &str) -> AutoDisabledNotice {
        AutoDisabledNotice {
            tenant_id: "acme".to_owned(),
            webhook_id: "wh_0190f0a0b1c2d3e4f5a6b7c8d9e0f1a2".to_owned(),
            webhook_name: name.to_owned(),
            url: "https://erp.example.com".to_owned(),
            failing_since: datetime!(2026-11-20 08:00 UTC),
            disabled_at: datetime!(2026-11-25 08:00:01 UTC),
            last_error_kind: Some("http_status".to_owned()),
            last_error_detail: Some("the receiver answered 503 Service Unavailable".to_owned()),
        }
    }

    #[test]
    fn the_audit_entry_says_the_system_disabled_it_and_why() {
        let tenant = TenantId::parse("acme").unwrap();
        let entry = notice("ERP sync").audit_entry(&tenant);
        assert_eq!(entry.action, "webhook.disabled");
        assert_eq!(entry.actor_id, SYSTEM_ACTOR);
        assert_eq!(entry.at, datetime!(2026-11-25 08:00:01 UTC));
        assert_eq!(
            entry.webhook_id.as_deref(),
            Some("wh_0190f0a0b1c2d3e4f5a6b7c8d9e0f1a2")
        );
        assert_eq!(
            entry.changes,
            serde_json::json!({
                "reason": "auto",
                "failing_since": "2026-11-20T08:00:00Z",
                "last_error_kind": "http_status",
            })
        );
    }

    #[test]
    fn the_mail_says_what_when_why_and_where_to_fix_it() {
        let mail = notice("ERP sync").render(&Url::parse("https://zivio.example/hooks/").unwrap());
        assert_eq!(
            mail.subject,
            "Webhook \"ERP sync\" was disabled after failing since 2026-11-20T08:00:00Z"
        );
        for part in [
            "https://erp.example.com",
            "2026-11-20T08:00:00Z",
            "http_status (the receiver answered 503 Service Unavailable)",
            "https://zivio.example/hooks/admin/webhooks/wh_0190f0a0b1c2d3e4f5a6b7c8d9e0f1a2",
        ] {
            assert!(
                mail.body.contains(part),
                "{part} missing from {}",
                mail.body
            );
        }
    }

    #[test]
    fn a_name_cannot_add_header_lines() {
        let mail = notice("x\r\nBcc: victim@example.com\r\n\r\nhello")
            .render(&Url::parse("https://z.example/").unwrap());
        assert!(!mail.subject.contains('\r') && !mail.subject.contains('\n'));
        assert!(!mail.body.contains("\nBcc:"));
    }

    #[test]
    fn notices_survive_the_outbox() {
        let original = notice("n");
        let text = serde_json::to_string(&original).unwrap();
        assert_eq!(
            serde_json::from_str::<AutoDisabledNotice>(&text).unwrap(),
            original
        );
    }
}
