-- A pending self-service email change holds its target address only until
-- its validation link expires: see the PostgreSQL migration of the same
-- number.
ALTER TABLE login_emails ADD COLUMN expires_ms INTEGER;

UPDATE login_emails
SET expires_ms = (
    SELECT CAST(strftime('%s', s.pending_email_expires_at) AS INTEGER) * 1000
           + CAST(substr(strftime('%f', s.pending_email_expires_at), 4, 3) AS INTEGER)
    FROM access_state s
    WHERE s.customer_id = login_emails.customer_id
      AND s.pending_email_expires_at IS NOT NULL
)
WHERE kind = 'pending_change';
