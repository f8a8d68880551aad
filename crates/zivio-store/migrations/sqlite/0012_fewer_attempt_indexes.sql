-- Every index on delivery_attempts is written once per attempt, and these three served filters
-- that the remaining indexes serve as well (`history::attempts_query`): a webhook's attempts are
-- its succeeded and its failed ones merged in page order, a category's the attempts of each of
-- its types merged, and an event's are found through its deliveries. Dropping the column
-- rewrites the table once.
DROP INDEX attempts_webhook_time;
DROP INDEX attempts_prefix_time;
DROP INDEX attempts_event_time;
ALTER TABLE delivery_attempts DROP COLUMN event_type_prefix;
