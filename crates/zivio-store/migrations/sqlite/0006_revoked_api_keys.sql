-- Deactivating or deleting a user, or taking `webhooks:manage` from them, ends their admin
-- sessions (deleted) and API keys (revoked) for good, in the same transaction as the change.
-- A revoked key stays listed with when and why it was revoked, and never works again: its
-- digest is erased, so nothing can match it.
--
-- Keys outlive the deletion of their user (revoked, `user_deleted`), so that a user created
-- later with the same id finds them revoked rather than working; they go with the tenant.
-- SQLite cannot drop a foreign key: the table is rebuilt (nothing refers to it).
CREATE TABLE api_keys_0006 (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL,
    key_hash       BLOB UNIQUE,
    hint           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER,
    revoked_at     INTEGER,
    revoked_reason TEXT
        CHECK (revoked_reason IN ('revoked', 'user_deactivated', 'user_deleted', 'permission_removed')),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL)),
    CHECK ((revoked_at IS NULL) = (key_hash IS NOT NULL))
) STRICT;
INSERT INTO api_keys_0006 (id, tenant_id, user_id, key_hash, hint, created_at, last_used_at)
    SELECT id, tenant_id, user_id, key_hash, hint, created_at, last_used_at FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_0006 RENAME TO api_keys;
CREATE INDEX api_keys_user ON api_keys (tenant_id, user_id);

-- What earlier versions only suspended ends now: keys and sessions of users who are inactive,
-- or who hold no role granting `webhooks:manage` (the rule of `zivio_core::access`, as the
-- auto-disable mail query also reads it), would otherwise work again after a reactivation or a
-- new grant.
UPDATE api_keys SET revoked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000,
                    revoked_reason = 'user_deactivated', key_hash = NULL
WHERE revoked_at IS NULL
  AND EXISTS (SELECT 1 FROM users u
              WHERE u.tenant_id = api_keys.tenant_id AND u.id = api_keys.user_id AND NOT u.active);
-- A key never used may have been issued ahead of a grant (as the directory allows): it stays.
UPDATE api_keys SET revoked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000,
                    revoked_reason = 'permission_removed', key_hash = NULL
WHERE revoked_at IS NULL AND last_used_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM user_roles ur
      JOIN role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role_name = ur.role_name
      WHERE ur.tenant_id = api_keys.tenant_id AND ur.user_id = api_keys.user_id
        AND rp.permission = 'webhooks:manage');
DELETE FROM admin_sessions
WHERE EXISTS (SELECT 1 FROM users u
              WHERE u.tenant_id = admin_sessions.tenant_id AND u.id = admin_sessions.user_id
                AND NOT u.active)
   OR NOT EXISTS (
      SELECT 1 FROM user_roles ur
      JOIN role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role_name = ur.role_name
      WHERE ur.tenant_id = admin_sessions.tenant_id AND ur.user_id = admin_sessions.user_id
        AND rp.permission = 'webhooks:manage');
