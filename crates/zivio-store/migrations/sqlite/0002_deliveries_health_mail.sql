-- Deliveries log filters, webhook health, auto-disable notices, resends (issue 6).

-- The resource as published (placement, owners, data): a resend is shaped again from it with
-- the owner's access at that time. NULL for test events.
ALTER TABLE events ADD COLUMN source BLOB;

-- The latest attempt, for health and for the auto-disable notice.
ALTER TABLE webhooks ADD COLUMN last_attempt_at INTEGER;
ALTER TABLE webhooks ADD COLUMN last_attempt_succeeded INTEGER;
ALTER TABLE webhooks ADD COLUMN last_error_kind TEXT;
ALTER TABLE webhooks ADD COLUMN last_error_detail TEXT;

-- Attempts per webhook and hour, maintained with every attempt: health sums at most 7 × 24
-- rows per webhook, however long its history.
CREATE TABLE webhook_attempt_hours (
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    hour_start INTEGER NOT NULL,
    succeeded  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (webhook_id, hour_start)
) STRICT;
CREATE INDEX webhook_attempt_hours_start ON webhook_attempt_hours (hour_start);

-- What a `<category>.*` filter selects: the type before its dot (the catalog's type prefix).
ALTER TABLE delivery_attempts ADD COLUMN event_type_prefix TEXT NOT NULL DEFAULT '';
UPDATE delivery_attempts SET event_type_prefix = substr(event_type, 1, instr(event_type, '.') - 1);
-- Every filter of the deliveries log is served by an index led by the tenant, in page order.
CREATE INDEX attempts_webhook_status_time
    ON delivery_attempts (tenant_id, webhook_id, succeeded, created_at DESC, id DESC);
CREATE INDEX attempts_type_time
    ON delivery_attempts (tenant_id, event_type, created_at DESC, id DESC);
CREATE INDEX attempts_prefix_time
    ON delivery_attempts (tenant_id, event_type_prefix, created_at DESC, id DESC);
CREATE INDEX attempts_event_time
    ON delivery_attempts (tenant_id, event_id, created_at DESC, id DESC);

-- Mail waits here until the SMTP server takes it: an outage delays mail, never loses it.
-- `notice` holds the facts as JSON; the text is rendered when it is sent.
CREATE TABLE mail_outbox (
    id               INTEGER PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    recipient        TEXT NOT NULL,
    notice           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_expires_at INTEGER,
    sent_at          INTEGER,
    last_error       TEXT
) STRICT;
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL;
CREATE INDEX mail_outbox_created ON mail_outbox (created_at);
