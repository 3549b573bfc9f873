-- Password-check allowances per account (the soft lock), shared by every
-- replica. `account_key` is an HMAC (the email index key) of the account's
-- name: a login email, a customer id, a link's customer; never the name
-- itself. Times are milliseconds since the epoch.
CREATE TABLE login_attempts
(
    account_key  text   NOT NULL,
    -- password checks begun (in flight included) since the last success
    failures     bigint NOT NULL,
    -- no check before this time
    locked_until bigint NOT NULL,
    updated_at   bigint NOT NULL,
    CONSTRAINT login_attempts_pkey PRIMARY KEY (account_key)
);
CREATE INDEX login_attempts_updated ON login_attempts (updated_at);

-- The headers of a stored idempotent response (ETag, Location …), as a
-- JSON array of [name, value] pairs, so that a replay answers exactly what
-- the first answer said.
ALTER TABLE idempotency_keys ADD COLUMN headers text NOT NULL DEFAULT '[]';
