-- Deactivating or deleting a user, or taking `webhooks:manage` from them, ends their admin
-- sessions (deleted) and API keys (revoked) for good, in the same transaction as the change.
-- A revoked key stays listed with when and why it was revoked, and never works again: its
-- digest is erased, so nothing can match it (not even an instance of an earlier version during
-- a rolling upgrade).
ALTER TABLE api_keys
    ADD COLUMN revoked_at     TIMESTAMPTZ,
    ADD COLUMN revoked_reason TEXT
        CHECK (revoked_reason IN ('revoked', 'user_deactivated', 'user_deleted', 'permission_removed')),
    ALTER COLUMN key_hash DROP NOT NULL,
    ADD CONSTRAINT api_keys_revoked_with_reason CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL)),
    ADD CONSTRAINT api_keys_live_with_digest CHECK ((revoked_at IS NULL) = (key_hash IS NOT NULL));

-- Keys outlive the deletion of their user (revoked, `user_deleted`), so that a user created
-- later with the same id finds them revoked rather than working; they go with the tenant.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_tenant_id_user_id_fkey;
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;

-- What earlier versions only suspended ends now: keys and sessions of users who are inactive,
-- or who hold no role granting `webhooks:manage` (the rule of `zivio_core::access`, as the
-- auto-disable mail query also reads it), would otherwise work again after a reactivation or a
-- new grant.
UPDATE api_keys k SET revoked_at = now(), revoked_reason = 'user_deactivated', key_hash = NULL
WHERE revoked_at IS NULL
  AND EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = k.tenant_id AND u.id = k.user_id AND NOT u.active);
-- A key never used may have been issued ahead of a grant (as the directory allows): it stays.
UPDATE api_keys k SET revoked_at = now(), revoked_reason = 'permission_removed', key_hash = NULL
WHERE revoked_at IS NULL AND last_used_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM user_roles ur
      JOIN role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role_name = ur.role_name
      WHERE ur.tenant_id = k.tenant_id AND ur.user_id = k.user_id AND rp.permission = 'webhooks:manage');
DELETE FROM admin_sessions s
WHERE EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = s.tenant_id AND u.id = s.user_id AND NOT u.active)
   OR NOT EXISTS (
      SELECT 1 FROM user_roles ur
      JOIN role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role_name = ur.role_name
      WHERE ur.tenant_id = s.tenant_id AND ur.user_id = s.user_id AND rp.permission = 'webhooks:manage');
