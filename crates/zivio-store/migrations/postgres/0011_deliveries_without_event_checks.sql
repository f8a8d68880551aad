-- Publishing checked three foreign keys for every queued delivery (webhook, event, payload),
-- each a lookup and a row lock run per inserted row: more than half of the cost of queueing a
-- delivery. The event and its payloads are inserted in the same transaction as the deliveries
-- that name them, and only retention deletes events: it deletes their deliveries first (store
-- code, `history::purge_events_batch`), so these two checks guard nothing the store does not
-- already guarantee. The webhook's key stays: deleting a webhook still cascades to its queue.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_payload_id_fkey;
-- Served only the payload key's cascade (0003).
DROP INDEX deliveries_payload;
