//! Fan-out: which of a tenant's webhooks an event goes to and with which payload, from a cached
//! view of the tenant's webhooks and their owners' access.

use zivio_store::UserWithRoles;

use super::*;

/// Each tenant's fan-out as of the store's change generation, where the store has one (SQLite:
/// one process sees every change): publishing reads a tenant's webhooks and their owners' access
/// once per change of webhooks or directory instead of once per publish. At most
/// `CACHED_TENANTS` tenants; past that it starts over.
#[derive(Default)]
pub struct FanoutCache(std::sync::Mutex<HashMap<TenantId, (u64, Arc<Fanout>)>>);

const CACHED_TENANTS: usize = 1_024;

impl FanoutCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (u64, Arc<Fanout>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The tenant's enabled webhooks with their parsed subscriptions and their active owners'
/// access, read at `generation` where the store counts changes.
pub(super) struct Fanout {
    webhooks: Vec<FanoutWebhook>,
    owners: BTreeMap<UserId, Access>,
    generation: Option<u64>,
}

/// An enabled webhook as publishing needs it: whom it belongs to, what it subscribes to, and
/// where its deliveries go (for the hand-off to the engine).
struct FanoutWebhook {
    id: WebhookId,
    owner: UserId,
    filters: Vec<EventFilter>,
    url: String,
    secret_ciphertext: Vec<u8>,
    headers: Vec<zivio_core::custom_header::SealedHeader>,
    rate_limit: Option<zivio_core::rate_limit::RateLimit>,
}

impl Fanout {
    /// The tenant's fan-out as of now; `None` when the tenant does not exist. The generation is
    /// read before loading: a change during the load leaves the entry stale at once.
    pub(super) async fn current(
        services: &Services,
        tenant: &TenantId,
    ) -> AppResult<Option<Arc<Self>>> {
        let generation = services.store.change_generation();
        if let Some(generation) = generation
            && let Some((_, fanout)) = services
                .fanouts
                .entries()
                .get(tenant)
                .filter(|(cached, _)| *cached == generation)
        {
            return Ok(Some(fanout.clone()));
        }
        if services.store.tenant(tenant).await?.is_none() {
            return Ok(None);
        }
        let fanout = Arc::new(Self::load(services, tenant, generation).await?);
        if let Some(generation) = generation {
            let mut entries = services.fanouts.entries();
            if entries.len() >= CACHED_TENANTS {
                entries.clear();
            }
            entries.insert(tenant.clone(), (generation, fanout.clone()));
        }
        Ok(Some(fanout))
    }

    async fn load(
        services: &Services,
        tenant: &TenantId,
        generation: Option<u64>,
    ) -> AppResult<Self> {
        let mut webhooks = Vec::new();
        let mut owners = BTreeMap::new();
        for webhook in services.store.webhooks(tenant).await? {
            if !webhook.is_enabled() {
                continue;
            }
            if !owners.contains_key(&webhook.owner)
                && let Some(UserWithRoles { user, roles }) = services
                    .store
                    .user_with_roles(tenant, &webhook.owner)
                    .await?
                && user.active
            {
                owners.insert(webhook.owner.clone(), Access::of(&user, &roles));
            }
            let filters = webhook
                .events
                .iter()
                .map(|text| EventFilter::from_canonical(text, services.catalog))
                .collect();
            webhooks.push(FanoutWebhook {
                id: webhook.id,
                owner: webhook.owner,
                filters,
                url: webhook.url,
                secret_ciphertext: webhook.secret.ciphertext,
                headers: webhook.headers,
                rate_limit: webhook.rate_limit,
            });
        }
        Ok(Self {
            webhooks,
            owners,
            generation,
        })
    }

    /// The deliveries a publish stored leased, with everything the engine needs to send them.
    /// URL and secret are as this fan-out read them: the engine sends without reading them again
    /// only while the store's change count still equals `generation`.
    pub(super) fn claimed(
        &self,
        tenant: &TenantId,
        events: &[NewEvent],
        leased: Vec<LeasedDelivery>,
    ) -> Vec<ClaimedDelivery> {
        // Each payload is copied once and shared by its deliveries.
        let events: HashMap<&str, (&NewEvent, Vec<bytes::Bytes>)> = events
            .iter()
            .map(|event| {
                let payloads = event
                    .payloads
                    .iter()
                    .cloned()
                    .map(bytes::Bytes::from)
                    .collect();
                (event.id.as_str(), (event, payloads))
            })
            .collect();
        let webhooks: HashMap<&WebhookId, &FanoutWebhook> = self
            .webhooks
            .iter()
            .map(|webhook| (&webhook.id, webhook))
            .collect();
        leased
            .into_iter()
            .filter_map(|delivery| {
                let (event, payloads) = events.get(delivery.event_id.as_str())?;
                let webhook = webhooks.get(&delivery.webhook_id)?;
                let (_, payload) = event
                    .deliveries
                    .iter()
                    .find(|(id, _)| *id == delivery.webhook_id)?;
                Some(ClaimedDelivery {
                    id: delivery.id,
                    tenant: tenant.clone(),
                    webhook_id: delivery.webhook_id,
                    url: webhook.url.clone(),
                    secret_ciphertext: webhook.secret_ciphertext.clone(),
                    headers: webhook.headers.clone(),
                    rate_limit: webhook.rate_limit,
                    due_at: event.accepted_at,
                    event_id: delivery.event_id,
                    event_type: event.event_type.clone(),
                    attempt: 1,
                    body: payloads.get(*payload)?.clone(),
                    generation: self.generation,
                    background: false,
                })
            })
            .collect()
    }

    /// The event with one payload per distinct access profile among the receiving webhooks.
    pub(super) fn event(
        &self,
        services: &Services,
        id: &EventId,
        event: &Accepted,
        now: OffsetDateTime,
    ) -> NewEvent {
        let mut payloads = Vec::new();
        let mut by_profile: HashMap<ShapeProfile, usize> = HashMap::new();
        let mut profiles: HashMap<&UserId, ShapeProfile> = HashMap::new();
        let mut deliveries = Vec::new();
        for FanoutWebhook {
            id: webhook,
            owner,
            filters,
            ..
        } in &self.webhooks
        {
            if !filters
                .iter()
                .any(|filter| filter.matches(&event.event_type))
            {
                continue;
            }
            // Inactive owners are absent: they receive nothing.
            let Some(access) = self.owners.get(owner) else {
                continue;
            };
            if !access.can_read(&event.collection, &event.meta) {
                continue;
            }
            let profile = profiles
                .entry(owner)
                .or_insert_with(|| ShapeProfile::of(access, services.catalog, &event.collection))
                .clone();
            let index = *by_profile.entry(profile).or_insert_with_key(|profile| {
                payloads.push(shaped_envelope(
                    services,
                    profile,
                    &event.collection,
                    id.as_str(),
                    &event.event_type,
                    event.occurred_at,
                    &event.data,
                ));
                payloads.len() - 1
            });
            deliveries.push((webhook.clone(), index));
        }
        NewEvent {
            id: id.clone(),
            event_type: event.event_type.clone(),
            occurred_at: event.occurred_at,
            accepted_at: now,
            key: event.key.clone(),
            fingerprint: event.fingerprint,
            resource_id: event.resource_id.clone(),
            payloads,
            deliveries,
            source: Some(Source::encode(&event.meta, &event.data)),
            is_test: false,
            resend_of: None,
        }
    }
}
