-- The place of each customer's last change in the global order: the
-- paging key of the customer list (`GET /v1/customers`). The projector
-- writes rows in that order, so a row changed later always sorts after
-- every row written before it.
ALTER TABLE access_state ADD COLUMN last_tx bigint NOT NULL DEFAULT 0;
ALTER TABLE access_state ADD COLUMN last_position bigint NOT NULL DEFAULT 0;

-- Rows written before this migration: the place of the event that made
-- their version (the projection's version is the stream's sequence).
UPDATE access_state s
SET last_tx       = e.tx_id::text::bigint,
    last_position = e.global_position
FROM events e
WHERE e.aggregate_type = 'Customer'
  AND e.aggregate_id = s.customer_id
  AND e.sequence = s.version;

CREATE INDEX access_state_last_change ON access_state (last_tx, last_position);
