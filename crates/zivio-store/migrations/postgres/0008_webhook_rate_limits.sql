-- A webhook's rate limit in requests per second (docs/product.md §4); NULL: none.
ALTER TABLE webhooks ADD COLUMN rate_limit INTEGER CHECK (rate_limit BETWEEN 1 AND 10000);

-- Requests started to a rate-limited webhook, per second of the clock, over all instances. An
-- instance takes tokens for the current second with one conditional upsert; `last_grant` is how
-- many the last upsert gave. Rows of past seconds are purged by maintenance.
CREATE TABLE rate_limit_seconds (
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    second     BIGINT NOT NULL,
    started    INTEGER NOT NULL,
    last_grant INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, second)
);
CREATE INDEX rate_limit_seconds_second ON rate_limit_seconds (second);
