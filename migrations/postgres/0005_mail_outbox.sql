-- The mail outbox: every message a command calls for, written in the same
-- transaction as the command's events, then delivered by a worker with
-- retries. The rendered message holds the link's token, so it is cleared
-- once the message is sent (or finally failed and cancelled). Times are
-- Unix milliseconds.
CREATE TABLE mail_outbox
(
    id              text    NOT NULL,
    customer_id     text    NOT NULL,
    kind            text    NOT NULL,
    sender          text    NOT NULL,
    recipient       text    NOT NULL,
    message         text,
    status          text    NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_ms bigint  NOT NULL,
    claimed_until_ms bigint NOT NULL DEFAULT 0,
    last_error      text,
    created_ms      bigint  NOT NULL,
    sent_ms         bigint,
    CONSTRAINT mail_outbox_pkey PRIMARY KEY (id)
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_ms);
CREATE INDEX mail_outbox_customer ON mail_outbox (customer_id);
