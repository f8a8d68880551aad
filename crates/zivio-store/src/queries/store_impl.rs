//! The `Store` implementation both backends share. Reads go to `reader()`, writes run in one
//! `begin_write()` transaction each, together with their audit entry. The hot writes (publishing,
//! renewing a lease before sending, recording an attempt) go through `write_grouped`: on SQLite
//! concurrent ones share one transaction and one fsync (group commit), each in its own savepoint
//! so one failing write does not take the others down.

use time::OffsetDateTime as Instant;
use zivio_core::audit::AuditEntry as Audit;
use zivio_core::directory as dir;
use zivio_core::ids as id;
use zivio_core::webhook as wh;

use super::{
    BACKEND, BackendStore, SKIP_LOCKED, announce_work, directory, events, history, pacing, queue,
    recoveries, sessions, webhooks,
};

#[async_trait::async_trait]
impl crate::Store for BackendStore {
    fn backend(&self) -> crate::Backend {
        BACKEND
    }

    async fn migrate(&self) -> crate::StoreResult<()> {
        self.run_migrations().await
    }

    async fn ping(&self) -> crate::StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }

    async fn claim_key_check(&self, check: &str) -> crate::StoreResult<crate::KeyCheck> {
        directory::claim_key_check(self.writer(), check).await
    }

    async fn bootstrap(&self, seed: &dir::BootstrapSeed, now: Instant) -> crate::StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let created = directory::bootstrap(&mut tx, seed, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn upsert_tenant(&self, tenant: &dir::Tenant, now: Instant) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::upsert_tenant(&mut tx, tenant, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_tenant(&self, tenant: &id::TenantId) -> crate::StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = directory::delete_tenant(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn tenant(&self, tenant: &id::TenantId) -> crate::StoreResult<Option<dir::Tenant>> {
        directory::tenant(self.reader(), tenant).await
    }

    async fn upsert_role(
        &self,
        tenant: &id::TenantId,
        role: &dir::Role,
        now: Instant,
    ) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::upsert_role(&mut tx, tenant, role, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_role(
        &self,
        tenant: &id::TenantId,
        name: &id::RoleName,
        now: Instant,
    ) -> crate::StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = directory::delete_role(&mut tx, tenant, name, now).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn role(
        &self,
        tenant: &id::TenantId,
        name: &id::RoleName,
    ) -> crate::StoreResult<Option<dir::Role>> {
        directory::role(self.reader(), tenant, name).await
    }

    async fn upsert_user(
        &self,
        tenant: &id::TenantId,
        user: &dir::User,
        now: Instant,
    ) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::upsert_user(&mut tx, tenant, user, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_user(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
        now: Instant,
    ) -> crate::StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = directory::delete_user(&mut tx, tenant, user, now).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn user(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
    ) -> crate::StoreResult<Option<dir::User>> {
        directory::user(self.reader(), tenant, user).await
    }

    async fn user_with_roles(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
    ) -> crate::StoreResult<Option<(dir::User, Vec<dir::Role>)>> {
        directory::user_with_roles(self.reader(), tenant, user).await
    }

    async fn set_password(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
        hash: &str,
        now: Instant,
    ) -> crate::StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let updated = directory::set_password(&mut tx, tenant, user, hash, now).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn password_hash(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
    ) -> crate::StoreResult<Option<String>> {
        directory::password_hash(self.reader(), tenant, user).await
    }

    async fn create_api_key(
        &self,
        tenant: &id::TenantId,
        key: &dir::ApiKey,
        digest: &[u8],
        audit: &Audit,
    ) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::lock_tenant(&mut tx, tenant).await?;
        directory::create_api_key(&mut tx, tenant, key, digest).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn api_keys(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
    ) -> crate::StoreResult<Vec<dir::ApiKey>> {
        directory::api_keys(self.reader(), tenant, user).await
    }

    async fn revoke_api_key(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
        key: &str,
        audit: &Audit,
    ) -> crate::StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let revoked = directory::revoke_api_key(&mut tx, tenant, user, key, audit.at).await?;
        if revoked {
            directory::record_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn api_key_holder(
        &self,
        digest: &[u8],
    ) -> crate::StoreResult<Option<(id::TenantId, id::UserId, Option<Instant>)>> {
        directory::api_key_holder(self.reader(), digest).await
    }

    async fn touch_api_key(&self, digest: &[u8], now: Instant) -> crate::StoreResult<()> {
        directory::touch_api_key(self.writer(), digest, now).await
    }

    async fn create_sign_in_link(
        &self,
        tenant: &id::TenantId,
        user: &id::UserId,
        digest: &[u8],
        expires_at: Instant,
        audit: &Audit,
    ) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::create_sign_in_link(&mut tx, tenant, user, digest, expires_at, audit.at).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn user_by_email(
        &self,
        tenant: &id::TenantId,
        email: &str,
    ) -> crate::StoreResult<Option<id::UserId>> {
        sessions::user_by_email(self.reader(), tenant, email).await
    }

    async fn consume_sign_in_link(
        &self,
        digest: &[u8],
        now: Instant,
    ) -> crate::StoreResult<Option<(id::TenantId, id::UserId)>> {
        let mut tx = self.begin_write().await?;
        let owner = sessions::consume_sign_in_link(&mut tx, digest, now).await?;
        tx.commit().await?;
        Ok(owner)
    }

    async fn create_session(
        &self,
        digest: &[u8],
        tenant: &id::TenantId,
        user: &id::UserId,
        now: Instant,
        audit: &Audit,
    ) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::lock_tenant(&mut tx, tenant).await?;
        sessions::create_session(&mut tx, digest, tenant, user, now).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn session(&self, digest: &[u8]) -> crate::StoreResult<Option<crate::AdminSession>> {
        sessions::session(self.reader(), digest).await
    }

    async fn touch_session(&self, digest: &[u8], now: Instant) -> crate::StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        sessions::touch_session(&mut tx, digest, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_session(&self, digest: &[u8]) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sessions::delete_session(&mut tx, digest).await?;
        Ok(tx.commit().await?)
    }

    async fn set_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
        sealed: &[u8],
    ) -> crate::StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        sessions::set_pending_secret(&mut tx, digest, webhook, sealed).await?;
        Ok(tx.commit().await?)
    }

    async fn take_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
    ) -> crate::StoreResult<Option<Vec<u8>>> {
        let mut tx = self.begin_uncounted_write().await?;
        let sealed = sessions::take_pending_secret(&mut tx, digest, webhook).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    async fn purge_sessions(&self, cutoff: Instant) -> crate::StoreResult<u64> {
        self.purge_in_batches(cutoff, 1_000, sessions::PURGE_SESSIONS)
            .await
    }

    async fn create_webhook(
        &self,
        webhook: &wh::Webhook,
        limit: u32,
        audit: &Audit,
    ) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::lock_tenant(&mut tx, &webhook.tenant).await?;
        if webhooks::count_webhooks(&mut tx, &webhook.tenant).await? >= i64::from(limit) {
            return Err(crate::StoreError::Conflict {
                what: "webhook limit",
            });
        }
        webhooks::insert_webhook(&mut tx, webhook).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn webhooks(&self, tenant: &id::TenantId) -> crate::StoreResult<Vec<wh::Webhook>> {
        webhooks::webhooks(self.reader(), tenant).await
    }

    async fn webhook(
        &self,
        tenant: &id::TenantId,
        id: &wh::WebhookId,
    ) -> crate::StoreResult<Option<wh::Webhook>> {
        webhooks::webhook(self.reader(), tenant, id).await
    }

    async fn update_webhook(&self, webhook: &wh::Webhook, audit: &Audit) -> crate::StoreResult<()> {
        let mut tx = self.begin_write().await?;
        webhooks::update_webhook(&mut tx, webhook).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_webhook(
        &self,
        tenant: &id::TenantId,
        id: &wh::WebhookId,
        audit: &Audit,
    ) -> crate::StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = webhooks::delete_webhook(&mut tx, tenant, id).await?;
        if deleted {
            directory::record_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn events_by_key(
        &self,
        tenant: &id::TenantId,
        keys: &[String],
    ) -> crate::StoreResult<Vec<crate::KeyedEvent>> {
        events::events_by_key(self.reader(), tenant, keys).await
    }

    async fn publish_events(
        &self,
        tenant: &id::TenantId,
        batch: &[crate::NewEvent],
        key_cutoff: Instant,
        audit: Option<&Audit>,
    ) -> crate::StoreResult<()> {
        let (tenant, batch, audit) = (tenant.clone(), batch.to_vec(), audit.cloned());
        self.write_grouped(move |tx| {
            Box::pin(async move {
                events::insert_events(&mut *tx, &tenant, &batch, key_cutoff, None).await?;
                if let Some(audit) = &audit {
                    directory::record_audit(&mut *tx, audit).await?;
                }
                announce_work(&mut *tx).await
            })
        })
        .await
    }

    async fn publish_leased(
        &self,
        tenant: &id::TenantId,
        batch: &[crate::NewEvent],
        key_cutoff: Instant,
        lease: &crate::PublishLease,
        audit: Option<&Audit>,
    ) -> crate::StoreResult<Vec<crate::LeasedDelivery>> {
        let (tenant, batch, lease, audit) = (
            tenant.clone(),
            batch.to_vec(),
            lease.clone(),
            audit.cloned(),
        );
        self.write_grouped(move |tx| {
            Box::pin(async move {
                let leased =
                    events::insert_events(&mut *tx, &tenant, &batch, key_cutoff, Some(&lease))
                        .await?;
                if let Some(audit) = &audit {
                    directory::record_audit(&mut *tx, audit).await?;
                }
                Ok(leased)
            })
        })
        .await
    }

    async fn event(
        &self,
        tenant: &id::TenantId,
        id: &str,
    ) -> crate::StoreResult<Option<crate::StoredEvent>> {
        events::event(self.reader(), tenant, id).await
    }

    async fn events(
        &self,
        tenant: &id::TenantId,
        ids: &[String],
    ) -> crate::StoreResult<Vec<crate::StoredEvent>> {
        events::events(self.reader(), tenant, ids).await
    }

    async fn deliveries_of_event(
        &self,
        tenant: &id::TenantId,
        event_id: &str,
    ) -> crate::StoreResult<Vec<crate::QueuedDelivery>> {
        events::deliveries_of_event(self.reader(), tenant, event_id).await
    }

    async fn claim_deliveries(
        &self,
        lease: &str,
        now: Instant,
        lease_until: Instant,
        limit: u32,
        per_webhook: u32,
        skip: &[wh::WebhookId],
    ) -> crate::StoreResult<Vec<crate::ClaimedDelivery>> {
        let mut tx = self.begin_uncounted_write().await?;
        // Read under the writer connection: no change can be half done meanwhile.
        let generation = self
            .change_counter()
            .map(|changes| changes.load(std::sync::atomic::Ordering::SeqCst));
        let claimed =
            queue::claim(&mut tx, lease, now, lease_until, limit, per_webhook, skip).await?;
        tx.commit().await?;
        // Only a delivery that may be sent as claimed carries the count: one of a
        // disabled webhook or an inactive owner goes through `begin_attempt`, which
        // cancels it.
        Ok(claimed
            .into_iter()
            .map(|(mut delivery, may_send)| {
                delivery.generation = generation.filter(|_| may_send);
                delivery
            })
            .collect())
    }

    async fn record_attempts(
        &self,
        attempts: Vec<crate::FinishedAttempt>,
    ) -> crate::StoreResult<Vec<crate::AttemptOutcome>> {
        let changes = self.change_counter();
        let after_commit = changes.clone();
        let outcomes = self
            .write_grouped(move |tx| {
                Box::pin(async move {
                    // A delivery its rate limit held back too long says nothing of the receiver.
                    let about_receiver = |attempt: &crate::AttemptRecord| {
                        zivio_core::rate_limit::counts_toward_health(attempt.error_kind.as_deref())
                    };
                    let records: Vec<&crate::AttemptRecord> = attempts
                        .iter()
                        .map(|finished| &finished.record)
                        .filter(|attempt| about_receiver(attempt))
                        .collect();
                    queue::note_latest_attempts(&mut *tx, &records).await?;
                    let rows: Vec<(&str, &crate::AttemptRecord)> = attempts
                        .iter()
                        .map(|finished| (finished.lease.as_str(), &finished.record))
                        .collect();
                    let recorded_rows = queue::record_attempt_rows(&mut *tx, &rows).await?;
                    let mut outcomes = Vec::with_capacity(attempts.len());
                    let mut counts = std::collections::BTreeMap::new();
                    // Per webhook, its latest recorded failure: the one that may disable it.
                    let mut failures: std::collections::BTreeMap<&str, usize> =
                        std::collections::BTreeMap::new();
                    for (index, (finished, (moved, recorded))) in
                        attempts.iter().zip(recorded_rows).enumerate()
                    {
                        let attempt = &finished.record;
                        outcomes.push(crate::AttemptOutcome {
                            moved,
                            auto_disabled: false,
                        });
                        if !recorded || !about_receiver(attempt) {
                            continue;
                        }
                        let count: &mut (i32, i32) = counts
                            .entry((
                                attempt.webhook_id.as_str(),
                                queue::hour_of(attempt.created_at),
                            ))
                            .or_default();
                        if attempt.succeeded {
                            count.0 += 1;
                        } else {
                            count.1 += 1;
                            let latest =
                                failures.entry(attempt.webhook_id.as_str()).or_insert(index);
                            if attempts[*latest].record.created_at <= attempt.created_at {
                                *latest = index;
                            }
                        }
                    }
                    let counts: Vec<(&str, Instant, i32, i32)> = counts
                        .into_iter()
                        .map(|((webhook, hour), (succeeded, failed))| {
                            (webhook, hour, succeeded, failed)
                        })
                        .collect();
                    queue::count_attempts(&mut *tx, &counts).await?;
                    for index in failures.into_values() {
                        let crate::FinishedAttempt {
                            record: attempt,
                            auto_disable,
                            ..
                        } = &attempts[index];
                        let Some(notice) = queue::auto_disable(
                            &mut *tx,
                            &attempt.webhook_id,
                            attempt.created_at,
                            auto_disable.failing_before,
                        )
                        .await?
                        else {
                            continue;
                        };
                        outcomes[index].auto_disabled = true;
                        // Disabling changes what sends depend on (under the writer connection).
                        if let Some(changes) = &changes {
                            changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        webhooks::cancel_pending(&mut *tx, &attempt.webhook_id, attempt.created_at)
                            .await?;
                        let audit = Audit::new(
                            &attempt.tenant,
                            attempt.created_at,
                            zivio_core::audit::SYSTEM_ACTOR,
                            zivio_core::audit::AuditAction::WebhookDisabled,
                        )
                        .webhook(attempt.webhook_id.as_str())
                        .changes(serde_json::json!({
                            "reason": "auto",
                            "failing_since": zivio_core::event::format_time(notice.failing_since),
                            "last_error_kind": notice.last_error_kind,
                        }));
                        directory::record_audit(&mut *tx, &audit).await?;
                        if auto_disable.mail {
                            let text = serde_json::to_string(&notice).expect("notices serialise");
                            for recipient in
                                queue::webhook_managers(&mut *tx, &notice.tenant_id).await?
                            {
                                queue::queue_mail(
                                    &mut *tx,
                                    &notice.tenant_id,
                                    &recipient,
                                    &text,
                                    attempt.created_at,
                                )
                                .await?;
                            }
                        }
                    }
                    Ok(outcomes)
                })
            })
            .await?;
        // A webhook disabled on the way is a change once more now that it is committed.
        if let Some(changes) = after_commit
            && outcomes.iter().any(|outcome| outcome.auto_disabled)
        {
            changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(outcomes)
    }

    async fn begin_attempt(
        &self,
        lease: &str,
        delivery: i64,
        now: Instant,
        lease_until: Instant,
    ) -> crate::StoreResult<Option<crate::Target>> {
        let Some(target) = queue::current_target(self.reader(), lease, delivery).await? else {
            return Ok(None);
        };
        if target.leased_until <= now {
            return Ok(None);
        }
        if !target.may_send {
            let mut tx = self.begin_uncounted_write().await?;
            queue::cancel(&mut tx, lease, delivery).await?;
            tx.commit().await?;
            return Ok(None);
        }
        // Most claims already lease long enough (see the engine): no write at all then.
        if target.leased_until < lease_until {
            let token = lease.to_owned();
            let renewed = self
                .write_grouped(move |tx| {
                    Box::pin(
                        async move { queue::renew(tx, &token, delivery, now, lease_until).await },
                    )
                })
                .await?;
            if !renewed {
                return Ok(None);
            }
            // Read again after the renewal: what is returned is what the request is
            // signed with at once, so a rotation committed during the renewal applies.
            return Ok(queue::current_target(self.reader(), lease, delivery)
                .await?
                .filter(|target| target.may_send)
                .map(|target| target.target()));
        }
        Ok(Some(target.target()))
    }

    async fn begin_attempts(
        &self,
        attempts: &[(String, i64)],
        now: Instant,
        lease_until: Instant,
    ) -> crate::StoreResult<Vec<Option<crate::Target>>> {
        let targets = queue::current_targets(self.reader(), attempts).await?;
        // Leases that would not cover the attempt are extended together, then read again:
        // what is returned is what the requests are signed with at once.
        let short: Vec<(String, i64)> = attempts
            .iter()
            .filter(|(_, delivery)| {
                targets.get(delivery).is_some_and(|target| {
                    target.may_send
                        && target.leased_until > now
                        && target.leased_until < lease_until
                })
            })
            .cloned()
            .collect();
        let mut renewed = std::collections::HashMap::new();
        if !short.is_empty() {
            let webhooks: std::collections::BTreeSet<String> = short
                .iter()
                .filter_map(|(_, delivery)| {
                    targets
                        .get(delivery)
                        .map(|target| target.webhook_id.clone())
                })
                .collect();
            let ids = self
                .write_grouped(move |tx| {
                    Box::pin(async move {
                        let webhooks: Vec<&str> = webhooks.iter().map(String::as_str).collect();
                        queue::renew_many(tx, &short, &webhooks, now, lease_until)
                            .await
                            .map(|ids| (short, ids))
                    })
                })
                .await?;
            let (short, ids) = ids;
            let kept: Vec<(String, i64)> = short
                .into_iter()
                .filter(|(_, id)| ids.contains(id))
                .collect();
            renewed = queue::current_targets(self.reader(), &kept).await?;
        }
        let mut answers = Vec::with_capacity(attempts.len());
        for (lease, delivery) in attempts {
            let answer = match targets.get(delivery) {
                None => None,
                Some(target) if target.leased_until <= now => None,
                Some(target) if target.may_send && target.leased_until >= lease_until => {
                    Some(target.target())
                }
                Some(target) if target.may_send => renewed
                    .get(delivery)
                    .filter(|target| target.may_send)
                    .map(crate::SendTarget::target),
                // To be cancelled: rare, one by one.
                Some(_) => {
                    self.begin_attempt(lease, *delivery, now, lease_until)
                        .await?
                }
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn release_deliveries(&self, lease: &str, ids: &[i64]) -> crate::StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        queue::release(&mut tx, lease, ids).await?;
        Ok(tx.commit().await?)
    }

    fn change_generation(&self) -> Option<u64> {
        self.change_counter()
            .map(|changes| changes.load(std::sync::atomic::Ordering::SeqCst))
    }

    async fn release_all_leases(&self) -> crate::StoreResult<u64> {
        let mut tx = self.begin_uncounted_write().await?;
        recoveries::release_all(&mut tx).await?;
        let released = queue::release_all(&mut tx).await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn next_due(&self) -> crate::StoreResult<Option<Instant>> {
        queue::next_due(self.reader()).await
    }

    async fn listen_for_work(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> crate::StoreResult<()> {
        self.listen(wake).await
    }

    async fn pending_deliveries(&self) -> crate::StoreResult<i64> {
        queue::pending(self.reader()).await
    }

    async fn take_rate_tokens(
        &self,
        webhook: &wh::WebhookId,
        second: i64,
        want: u32,
        limit: zivio_core::rate_limit::RateLimit,
    ) -> crate::StoreResult<u32> {
        let mut tx = self.begin_uncounted_write().await?;
        let granted = pacing::take_tokens(&mut tx, webhook, second, want, limit).await?;
        tx.commit().await?;
        Ok(granted)
    }

    async fn due_deliveries(
        &self,
        webhooks: &[wh::WebhookId],
        now: Instant,
    ) -> crate::StoreResult<std::collections::HashMap<wh::WebhookId, i64>> {
        pacing::due_per_webhook(self.reader(), webhooks, now).await
    }

    async fn count_recoverable(
        &self,
        tenant: &id::TenantId,
        webhook: &wh::WebhookId,
        since: Instant,
        until: Instant,
    ) -> crate::StoreResult<i64> {
        recoveries::count_recoverable(self.reader(), tenant, webhook, since, until).await
    }

    async fn start_recovery(
        &self,
        recovery: &crate::Recovery,
        max_running: i64,
        audit: &Audit,
    ) -> crate::StoreResult<crate::Recovery> {
        let mut tx = self.begin_uncounted_write().await?;
        directory::lock_tenant(&mut tx, &recovery.tenant).await?;
        let started = recoveries::insert_recovery(&mut tx, recovery, max_running).await?;
        let audit = zivio_core::recovery::audited(audit.clone(), &started.counts());
        directory::record_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(started)
    }

    async fn recoveries(
        &self,
        tenant: &id::TenantId,
        webhook: &wh::WebhookId,
    ) -> crate::StoreResult<Vec<crate::Recovery>> {
        recoveries::recoveries(self.reader(), tenant, webhook).await
    }

    async fn recovery(
        &self,
        tenant: &id::TenantId,
        id: &str,
    ) -> crate::StoreResult<Option<crate::Recovery>> {
        recoveries::recovery(self.reader(), tenant, id).await
    }

    async fn end_recovery(
        &self,
        tenant: &id::TenantId,
        id: &str,
        ending: &zivio_core::recovery::Ending,
        now: Instant,
        audit: &Audit,
    ) -> crate::StoreResult<Option<crate::Recovery>> {
        let mut tx = self.begin_uncounted_write().await?;
        let Some(ended) = recoveries::end(&mut tx, tenant, id, ending, now).await? else {
            return Ok(None);
        };
        let audit = zivio_core::recovery::audited(audit.clone(), &ended.counts());
        directory::record_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    async fn claim_recovery(
        &self,
        lease: &str,
        now: Instant,
        lease_until: Instant,
    ) -> crate::StoreResult<Option<crate::Recovery>> {
        let mut tx = self.begin_uncounted_write().await?;
        let claimed = recoveries::claim(&mut tx, lease, now, lease_until, SKIP_LOCKED).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn pending_recovery_items(
        &self,
        recovery: &str,
        limit: i64,
    ) -> crate::StoreResult<Vec<String>> {
        recoveries::pending_items(self.reader(), recovery, limit).await
    }

    async fn record_recovery_step(
        &self,
        step: crate::RecoveryStep,
    ) -> crate::StoreResult<Option<Vec<crate::LeasedDelivery>>> {
        let mut tx = self.begin_uncounted_write().await?;
        if !recoveries::advance(&mut tx, &step).await? {
            return Ok(None);
        }
        let lease = step.deliveries_lease.as_ref();
        let leased = events::insert_events(
            &mut tx,
            &step.tenant,
            &step.resends,
            Instant::UNIX_EPOCH,
            lease,
        )
        .await?;
        recoveries::settle_items(&mut tx, &step).await?;
        if lease.is_none() && !step.resends.is_empty() {
            announce_work(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Some(leased))
    }

    async fn still_pending(&self, events: &[String]) -> crate::StoreResult<Vec<String>> {
        recoveries::still_pending(self.reader(), events).await
    }

    async fn running_recoveries(&self) -> crate::StoreResult<i64> {
        recoveries::running(self.reader()).await
    }

    async fn purge_rate_seconds(&self, before: i64) -> crate::StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut tx = self.begin_uncounted_write().await?;
            let deleted = pacing::purge_seconds(&mut tx, before).await?;
            tx.commit().await?;
            total += deleted;
            if deleted < 10_000 {
                return Ok(total);
            }
        }
    }

    async fn attempts_of(
        &self,
        tenant: &id::TenantId,
        event_id: &str,
        webhook: &wh::WebhookId,
    ) -> crate::StoreResult<Vec<crate::AttemptRecord>> {
        queue::attempts_of(self.reader(), tenant, event_id, webhook).await
    }

    async fn delivery_attempts(
        &self,
        tenant: &id::TenantId,
        filter: &crate::AttemptFilter,
    ) -> crate::StoreResult<Vec<crate::AttemptSummary>> {
        history::attempts(self.reader(), tenant, filter).await
    }

    async fn explain_delivery_attempts(
        &self,
        tenant: &id::TenantId,
        filter: &crate::AttemptFilter,
    ) -> crate::StoreResult<String> {
        history::explain_attempts(self.reader(), tenant, filter).await
    }

    async fn delivery_attempt(
        &self,
        tenant: &id::TenantId,
        id: &str,
    ) -> crate::StoreResult<Option<crate::AttemptDetail>> {
        history::attempt(self.reader(), tenant, id).await
    }

    async fn webhook_health(
        &self,
        tenant: &id::TenantId,
        only: Option<&wh::WebhookId>,
        since_7d: Instant,
        since_24h: Instant,
    ) -> crate::StoreResult<Vec<(wh::WebhookId, crate::HealthCounts)>> {
        history::health(self.reader(), tenant, only, since_7d, since_24h).await
    }

    async fn webhook_hours(
        &self,
        tenant: &id::TenantId,
        since: Instant,
    ) -> crate::StoreResult<Vec<(wh::WebhookId, Instant, i64, i64)>> {
        history::hourly(self.reader(), tenant, since).await
    }

    async fn claim_mail(
        &self,
        now: Instant,
        lease_until: Instant,
        limit: u32,
    ) -> crate::StoreResult<Vec<crate::OutboxMail>> {
        let mut tx = self.begin_uncounted_write().await?;
        let claimed = history::claim_mail(&mut tx, now, lease_until, limit).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn mail_sent(&self, id: i64, at: Instant) -> crate::StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        history::mail_sent(&mut tx, id, at).await?;
        Ok(tx.commit().await?)
    }

    async fn mail_failed(&self, id: i64, error: &str, retry_at: Instant) -> crate::StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        history::mail_failed(&mut tx, id, error, retry_at).await?;
        Ok(tx.commit().await?)
    }

    async fn purge_events(&self, cutoff: Instant) -> crate::StoreResult<u64> {
        let events = self
            .purge_in_batches(cutoff, 100, history::PURGE_EVENTS)
            .await?;
        self.purge_in_batches(cutoff, 1_000, history::PURGE_MAIL)
            .await?;
        Ok(events)
    }

    async fn purge_health_counters(&self, cutoff: Instant) -> crate::StoreResult<u64> {
        self.purge_in_batches(cutoff, 1_000, history::PURGE_HEALTH_COUNTERS)
            .await
    }

    async fn audit_entries(
        &self,
        tenant: &id::TenantId,
        before: Option<crate::AuditCursor>,
        limit: u32,
    ) -> crate::StoreResult<Vec<crate::AuditRecord>> {
        webhooks::audit_entries(self.reader(), tenant, before, limit).await
    }

    async fn webhook_audit_entries(
        &self,
        tenant: &id::TenantId,
        webhook: &str,
        limit: u32,
    ) -> crate::StoreResult<Vec<crate::AuditRecord>> {
        webhooks::webhook_audit_entries(self.reader(), tenant, webhook, limit).await
    }

    async fn purge_audit(&self, cutoff: Instant) -> crate::StoreResult<u64> {
        self.purge_in_batches(cutoff, 1_000, history::PURGE_AUDIT)
            .await
    }

    async fn close(&self) {
        self.close_pools().await;
    }
}

impl BackendStore {
    /// Runs a purge one bounded transaction at a time (a large backlog never holds a
    /// long write), until a batch comes back short.
    async fn purge_in_batches(
        &self,
        cutoff: Instant,
        batch: i64,
        sql: &'static str,
    ) -> crate::StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut tx = self.begin_uncounted_write().await?;
            let deleted = history::purge_batch(&mut tx, sql, cutoff, batch).await?;
            tx.commit().await?;
            total += deleted;
            if deleted < batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}
