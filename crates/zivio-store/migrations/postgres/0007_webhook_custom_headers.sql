-- Custom request headers of a webhook (docs/product.md §4): a JSON list of
-- {"name", "ciphertext" (base64 of AES-256-GCM under the secrets key), "key_id", "hint"}.
-- Values are never stored in clear; they are read with the URL and the secret for each send.
ALTER TABLE webhooks ADD COLUMN custom_headers TEXT NOT NULL DEFAULT '[]';
