-- Every index on delivery_attempts is written once per attempt, and these three served filters
-- that the remaining indexes serve as well (`history::attempts_query`): a webhook's attempts are
-- its succeeded and its failed ones merged in page order, a category's the attempts of each of
-- its types merged, and an event's are found through its deliveries. The column
-- `event_type_prefix` is no longer written but stays, so that instances of earlier versions
-- keep recording attempts during a rollout (docs/operating.md).
DROP INDEX attempts_webhook_time;
DROP INDEX attempts_prefix_time;
DROP INDEX attempts_event_time;
DROP STATISTICS attempts_tenant_event;
