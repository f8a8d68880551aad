-- Deleting an old event cascades to its payloads, and each payload's deletion looks for the
-- deliveries that reference it: without this index, a scan of the whole queue per payload.
CREATE INDEX deliveries_payload ON deliveries (payload_id);
