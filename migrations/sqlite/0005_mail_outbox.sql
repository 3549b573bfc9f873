CREATE TABLE mail_outbox
(
    id               TEXT    NOT NULL PRIMARY KEY,
    customer_id      TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    sender           TEXT    NOT NULL,
    recipient        TEXT    NOT NULL,
    message          TEXT,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER NOT NULL,
    claimed_until_ms INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_ms       INTEGER NOT NULL,
    sent_ms          INTEGER
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_ms);
CREATE INDEX mail_outbox_customer ON mail_outbox (customer_id);
