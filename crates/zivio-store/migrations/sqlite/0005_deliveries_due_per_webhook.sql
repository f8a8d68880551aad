-- Claims look at each webhook's oldest due work: an index by webhook and due time lets them do
-- that in a few steps per webhook instead of reading the whole backlog. It also serves every
-- use of the index it replaces (pending deliveries of one webhook).
CREATE INDEX deliveries_webhook_due ON deliveries (webhook_id, next_attempt_at) WHERE state = 'pending';
DROP INDEX deliveries_webhook_pending;
