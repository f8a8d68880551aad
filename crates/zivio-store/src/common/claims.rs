//! The SQL that claims share on both backends. The rest of the claim and the take-over of ended
//! leases differ per backend: `CLAIM` and `TAKE_OVER_ENDED_LEASES` in `sqlite.rs` and
//! `postgres.rs`.

/// The start of each backend's `CLAIM`: the webhooks with free work (due or waiting for a retry),
/// found by skipping through the index of free deliveries from one webhook to the next, so that a
/// claim never reads the webhooks of every tenant. A macro, not a constant, so that `concat!`
/// can join it to each claim at compile time.
macro_rules! webhooks_with_free_work {
    () => {
        "WITH RECURSIVE hooks (id) AS (
         SELECT min(webhook_id) FROM deliveries WHERE state = 'pending' AND lease_owner IS NULL
         UNION ALL
         SELECT (SELECT min(webhook_id) FROM deliveries
                 WHERE state = 'pending' AND lease_owner IS NULL AND webhook_id > hooks.id)
         FROM hooks WHERE hooks.id IS NOT NULL)
     "
    };
}
pub(crate) use webhooks_with_free_work;

/// The earliest moment something may become claimable: the first due delivery no one holds, or
/// the first lease to end. The first half reads the index of free deliveries (few but for
/// retries waiting for their time), the second one end of the index of held ones.
pub(crate) const NEXT_DUE: &str = "SELECT min(due) FROM (
     SELECT min(next_attempt_at) AS due FROM deliveries WHERE state = 'pending' AND lease_owner IS NULL
     UNION ALL
     SELECT min(lease_expires_at) AS due FROM deliveries WHERE state = 'pending' AND lease_owner IS NOT NULL
 ) ends";

/// What a claim took (its lease token is `$1`), with all a send needs.
pub(crate) const CLAIMED: &str = "SELECT d.id, d.tenant_id, d.webhook_id, d.event_id, d.attempts,
        d.next_attempt_at, e.type, p.body, w.url, w.secret_ciphertext, w.custom_headers, w.rate_limit,
        w.enabled, COALESCE(u.active, FALSE) AS owner_active
 FROM deliveries d
 JOIN events e ON e.id = d.event_id
 JOIN payloads p ON p.id = d.payload_id
 JOIN webhooks w ON w.id = d.webhook_id
 LEFT JOIN users u ON u.tenant_id = w.tenant_id AND u.id = w.owner_id
 WHERE d.lease_owner = $1 AND d.state = 'pending'
 ORDER BY d.next_attempt_at, d.id";
