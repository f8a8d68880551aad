-- Publishing checked three foreign keys for every queued delivery (webhook, event, payload),
-- each a lookup and a row lock run per inserted row. The event and its payloads are inserted in
-- the same transaction as the deliveries that name them. Events are deleted by retention, which
-- deletes their deliveries first (`history::purge_events_batch`), and with their tenant, whose
-- webhooks (the only ones a publish queues for) take their deliveries with them through the key
-- that stays. So these two checks guard nothing the store does not already guarantee.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_payload_id_fkey;
-- Served only the payload key's cascade (0003).
DROP INDEX deliveries_payload;
