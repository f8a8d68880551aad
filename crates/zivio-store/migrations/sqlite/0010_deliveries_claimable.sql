-- With the hand-off, most pending deliveries are leased to the instance that published them and
-- sit in its memory. Claims and the wake-up time read only what may be claimed: deliveries no one
-- holds (by webhook and due time), and held ones by the end of their lease, which a claim takes
-- over (a share at a time) once it has passed. Before, each claim walked every pending delivery
-- of each webhook, leased or not, and the wake-up time read every pending delivery.
CREATE INDEX deliveries_claimable ON deliveries (webhook_id, next_attempt_at)
    WHERE state = 'pending' AND lease_owner IS NULL;
CREATE INDEX deliveries_lease_end ON deliveries (lease_expires_at)
    WHERE state = 'pending' AND lease_owner IS NOT NULL;
-- Served only the wake-up time. A second index of free deliveries by due time alone would tempt
-- the planner to serve claims from it (walking every webhook's free rows for each webhook).
DROP INDEX deliveries_due;
