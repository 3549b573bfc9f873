-- The place of each customer's last change in the global order: the
-- paging key of the customer list (`GET /v1/customers`). On SQLite the
-- transaction part is always 0 and the position alone is the order.
ALTER TABLE access_state ADD COLUMN last_tx INTEGER NOT NULL DEFAULT 0;
ALTER TABLE access_state ADD COLUMN last_position INTEGER NOT NULL DEFAULT 0;

-- Rows written before this migration: the place of the event that made
-- their version (the projection's version is the stream's sequence).
UPDATE access_state
SET last_position = COALESCE((SELECT e.global_position
                              FROM events e
                              WHERE e.aggregate_type = 'Customer'
                                AND e.aggregate_id = access_state.customer_id
                                AND e.sequence = access_state.version), 0);

CREATE INDEX access_state_last_change ON access_state (last_tx, last_position);
