-- A pending self-service email change holds its target address only until
-- its validation link expires (docs/storage.md): the reservation row
-- carries the link's expiry (milliseconds since the epoch; NULL for a
-- login, which does not expire), and the next claim of the address
-- releases an expired one in its own transaction.
ALTER TABLE login_emails ADD COLUMN expires_ms bigint;

-- Rows written before this migration: the expiry from the projection (a
-- row without one stays held until its customer's next change).
UPDATE login_emails l
SET expires_ms = (extract(epoch FROM s.pending_email_expires_at) * 1000)::bigint
FROM access_state s
WHERE l.kind = 'pending_change'
  AND s.customer_id = l.customer_id
  AND s.pending_email_expires_at IS NOT NULL;
