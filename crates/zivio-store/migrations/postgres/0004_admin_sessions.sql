-- Admin UI sessions. Only a digest of the session id is stored: a copy of the database does
-- not let anyone sign in.
CREATE TABLE admin_sessions (
    id_hash         BYTEA PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    last_seen_at    TIMESTAMPTZ NOT NULL,
    -- A signing secret waiting to be shown once (after create or rotate), sealed under the
    -- secrets key, and the webhook it belongs to.
    pending_webhook TEXT,
    pending_secret  BYTEA,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX admin_sessions_user ON admin_sessions (tenant_id, user_id);
CREATE INDEX admin_sessions_seen ON admin_sessions (last_seen_at);

-- The audit entries of one webhook (its admin page), newest first.
CREATE INDEX audit_webhook_time ON audit_log (tenant_id, webhook_id, at DESC, id DESC);
