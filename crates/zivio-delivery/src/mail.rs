//! The mail outbox worker: takes due notices from the store, renders and sends them over SMTP
//! (lettre), and marks them sent, or failed with a later retry. An SMTP outage delays mail and
//! never loses it: a notice leaves the outbox only once the server has accepted it.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;
use url::Url;
use zivio_app::Services;
use zivio_core::notice::AutoDisabledNotice;
use zivio_store::OutboxMail;

/// How often the outbox is looked at.
const POLL: Duration = Duration::from_secs(1);
/// The most one send may take, connection included.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// A claimed mail is someone else's again after this long (a crash mid-send). Longer than any
/// send may take, so that two instances never send the same mail.
const LEASE: Duration = Duration::from_secs(120);
/// Retries start soon and back off to this.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// A mail the server refused for good (a bad address, say) is tried again this much later.
const AFTER_PERMANENT_FAILURE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("ZIVIO_WEBHOOKS_SMTP_URL is not usable: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("ZIVIO_WEBHOOKS_MAIL_FROM is not a mail address: {0}")]
    From(#[from] lettre::address::AddressError),
}

pub struct Mailer {
    services: Services,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Base of the links in mails.
    public_url: Url,
}

impl Mailer {
    pub fn new(services: Services, smtp_url: &Url, from: &str) -> Result<Self, MailSetupError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url.as_str())?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(Self {
            public_url: services.settings.public_url.clone(),
            from: Mailbox::new(Some("Zivio Webhooks".to_owned()), from.parse()?),
            services,
            transport,
        })
    }

    /// Sends due mail until shutdown.
    pub async fn run(self, stopped: CancellationToken) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stopped.cancelled() => return,
            }
            // One mail at a time, each under its own lease, until none is due or shutdown.
            while !stopped.is_cancelled() && self.send_next().await {}
        }
    }

    /// Sends the next due mail, if any; `false` when there was none (or the outbox could not
    /// be read).
    async fn send_next(&self) -> bool {
        let now = self.services.now();
        let mail = match self.services.store.claim_mail(now, now + LEASE, 1).await {
            Ok(mut claimed) => match claimed.pop() {
                Some(mail) => mail,
                None => return false,
            },
            Err(error) => {
                tracing::warn!(error = %error, "could not read the mail outbox; trying again");
                return false;
            }
        };
        let result = match tokio::time::timeout(SEND_TIMEOUT, self.send(&mail)).await {
            Ok(result) => result,
            Err(_) => Err((
                "the SMTP server did not finish within a minute".to_owned(),
                false,
            )),
        };
        let now = self.services.now();
        let saved = match result {
            Ok(()) => {
                tracing::info!(mail = mail.id, "notice mailed");
                self.services.store.mail_sent(mail.id, now).await
            }
            Err((error, permanent)) => {
                let delay = if permanent {
                    AFTER_PERMANENT_FAILURE
                } else {
                    backoff(mail.attempts)
                };
                tracing::warn!(mail = mail.id, error = %error, retry_in_s = delay.as_secs(), "mail not sent; it stays in the outbox");
                self.services
                    .store
                    .mail_failed(mail.id, &error, now + delay)
                    .await
            }
        };
        if let Err(error) = saved {
            tracing::warn!(mail = mail.id, error = %error, "could not update the mail outbox; the mail is tried again after its lease");
        }
        true
    }

    /// Sends one mail; on failure the reason and whether it is permanent.
    async fn send(&self, mail: &OutboxMail) -> Result<(), (String, bool)> {
        let notice: AutoDisabledNotice = serde_json::from_str(&mail.notice)
            .map_err(|error| (format!("the stored notice is unreadable: {error}"), true))?;
        let to: Mailbox = mail.recipient.parse().map_err(|error| {
            (
                format!("`{}` is not a mail address: {error}", mail.recipient),
                true,
            )
        })?;
        let rendered = notice.render(&self.public_url);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.body)
            .map_err(|error| (format!("the mail cannot be built: {error}"), true))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|error| (error.to_string(), error.is_permanent()))
    }
}

/// 2 s, 4 s, 8 s, … up to ten minutes.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.saturating_add(1))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_bound() {
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(4));
        assert_eq!(backoff(8), Duration::from_secs(512));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
