-- Initial schema. Times are Unix milliseconds (UTC); JSON lists are stored as TEXT.

-- Service-wide values: the secrets key check value, the bootstrap marker.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE roles (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE role_permissions (
    tenant_id  TEXT NOT NULL,
    role_name  TEXT NOT NULL,
    permission TEXT NOT NULL,
    PRIMARY KEY (tenant_id, role_name, permission),
    FOREIGN KEY (tenant_id, role_name) REFERENCES roles (tenant_id, name) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE users (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            TEXT NOT NULL,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    active        INTEGER NOT NULL,
    business_unit TEXT,
    division      TEXT,
    department    TEXT,
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE UNIQUE INDEX users_email ON users (tenant_id, lower(email));

-- Role names are not foreign keys: the platform may push a user before the role exists.
CREATE TABLE user_roles (
    tenant_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    role_name TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role_name),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    key_hash     BLOB NOT NULL UNIQUE,
    hint         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX api_keys_user ON api_keys (tenant_id, user_id);

-- Single-use sign-in links issued by the platform; only a hash of the token is stored.
CREATE TABLE sign_in_links (
    token_hash BLOB PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    created_at INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX sign_in_links_user ON sign_in_links (tenant_id, user_id);

CREATE TABLE webhooks (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    owner_id          TEXT NOT NULL,
    name              TEXT NOT NULL,
    url               TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    events            TEXT NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    secret_key_id     TEXT NOT NULL,
    secret_hint       TEXT NOT NULL,
    enabled           INTEGER NOT NULL,
    disabled_reason   TEXT CHECK (disabled_reason IN ('manual', 'auto')),
    disabled_by       TEXT,
    disabled_at       INTEGER,
    -- Bumped by every update: concurrent edits are detected, never silently merged.
    version           INTEGER NOT NULL DEFAULT 0,
    failing_since     INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at);

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type         TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL,
    accepted_at  INTEGER NOT NULL,
    producer_key TEXT,
    -- Digest of the published event: tells a repeated key from a conflicting one.
    fingerprint  BLOB NOT NULL,
    resource_id  TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX events_producer_key ON events (tenant_id, producer_key)
    WHERE producer_key IS NOT NULL;
CREATE INDEX events_accepted ON events (accepted_at);

-- A shaped payload is stored once and referenced by every attempt that sends it.
CREATE TABLE payloads (
    id       INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    body     BLOB NOT NULL
) STRICT;
CREATE INDEX payloads_event ON payloads (event_id);

-- The delivery queue: one row per event and webhook, leased by a worker while in flight.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    payload_id       INTEGER NOT NULL REFERENCES payloads (id) ON DELETE CASCADE,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    UNIQUE (event_id, webhook_id)
) STRICT;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_webhook_pending ON deliveries (webhook_id) WHERE state = 'pending';
CREATE INDEX deliveries_lease ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE delivery_attempts (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    delivery_id        INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    webhook_id         TEXT NOT NULL,
    event_id           TEXT NOT NULL,
    event_type         TEXT NOT NULL,
    attempt            INTEGER NOT NULL,
    succeeded          INTEGER NOT NULL,
    request_url        TEXT NOT NULL,
    request_headers    TEXT NOT NULL,
    response_status    INTEGER,
    response_headers   TEXT,
    response_body      BLOB,
    response_truncated INTEGER NOT NULL DEFAULT 0,
    duration_ms        INTEGER NOT NULL,
    error_kind         TEXT,
    error_detail       TEXT,
    next_attempt_at    INTEGER,
    created_at         INTEGER NOT NULL
) STRICT;
CREATE INDEX attempts_tenant_time ON delivery_attempts (tenant_id, created_at DESC, id DESC);
CREATE INDEX attempts_webhook_time
    ON delivery_attempts (tenant_id, webhook_id, created_at DESC, id DESC);
CREATE INDEX attempts_delivery ON delivery_attempts (delivery_id);

-- Audit entries outlive the webhooks they describe: no foreign key to webhooks.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    webhook_id TEXT,
    changes    TEXT NOT NULL
) STRICT;
CREATE INDEX audit_tenant_time ON audit_log (tenant_id, at DESC, id DESC);
CREATE INDEX audit_at ON audit_log (at);
