-- Recovery (docs/product.md §7): every resend remembers the event it resends.
ALTER TABLE events ADD COLUMN resend_of TEXT;
CREATE INDEX events_resend_of ON events (resend_of) WHERE resend_of IS NOT NULL;
-- A recovery's selection starts from the webhook's deliveries that ended without success (few,
-- unless a receiver was down): it neither reads every tenant's events of the window nor the
-- webhook's whole history.
CREATE INDEX deliveries_ended_unsuccessfully ON deliveries (webhook_id)
    WHERE state IN ('failed', 'cancelled');

-- A recovery resends what failed to one webhook in [since_at, until_at). The selection is
-- fixed when it starts (recovery_items); an instance works on it under a lease.
CREATE TABLE recoveries (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    since_at         TIMESTAMPTZ NOT NULL,
    until_at         TIMESTAMPTZ NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'done', 'cancelled', 'stopped')),
    ended_reason     TEXT,
    selected         INTEGER NOT NULL DEFAULT 0,
    resent           INTEGER NOT NULL DEFAULT 0,
    skipped          INTEGER NOT NULL DEFAULT 0,
    created_by       TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ
);
CREATE INDEX recoveries_by_webhook ON recoveries (webhook_id, created_at);
CREATE INDEX recoveries_running ON recoveries (tenant_id) WHERE state = 'running';

-- The events a recovery selected, and what became of each: resent (as new_event_id) or
-- skipped (the owner can no longer see it, or it is no longer stored).
CREATE TABLE recovery_items (
    recovery_id  TEXT NOT NULL REFERENCES recoveries (id) ON DELETE CASCADE,
    event_id     TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'resent', 'skipped')),
    new_event_id TEXT,
    PRIMARY KEY (recovery_id, event_id)
);
CREATE INDEX recovery_items_pending ON recovery_items (recovery_id, event_id) WHERE state = 'pending';
