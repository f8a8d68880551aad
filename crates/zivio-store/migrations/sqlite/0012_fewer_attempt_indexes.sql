-- Every index on delivery_attempts is written once per attempt, and these two served filters
-- that the remaining indexes serve as well (`history::attempts_query`): a webhook's attempts are
-- its succeeded and its failed ones merged in page order, a category's the attempts of each of
-- its types merged. The index by event stays: without statistics (the store keeps none on
-- SQLite), the planner would serve an event's attempts from the tenant's whole history rather
-- than through its deliveries. The column `event_type_prefix` is no longer written; its
-- default fills it.
DROP INDEX attempts_webhook_time;
DROP INDEX attempts_prefix_time;
