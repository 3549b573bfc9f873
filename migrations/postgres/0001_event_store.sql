-- The event store, in the shape postgres-es 0.5 reads and writes
-- (aggregate_type, aggregate_id, sequence, event_type, event_version,
-- payload, metadata), plus:
--   global_position  the order a catch-up reader follows (taken at insert,
--                    not at commit: see tx_id and docs/adr/0002-global-order.md)
--   tx_id            the inserting transaction; a reader never passes a
--                    transaction that may still commit
--   recorded_at      when the row was written (server clock)
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE INDEX events_feed ON events (tx_id, global_position);

-- One snapshot per aggregate (columns as postgres-es reads them). Written
-- by our store in the same transaction as the events it covers.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Login emails held by customers: the login of a customer with access, and
-- the target of a pending self-service change. The primary key makes the
-- rule "no two customers share a login email" hold across replicas.
CREATE TABLE login_emails
(
    email_key   text NOT NULL,
    customer_id text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('login', 'pending_change')),
    CONSTRAINT login_emails_pkey PRIMARY KEY (email_key)
);
CREATE INDEX login_emails_customer ON login_emails (customer_id);

-- Responses to commands sent with an Idempotency-Key, per caller.
CREATE TABLE idempotency_keys
(
    caller         text        NOT NULL,
    key            text        NOT NULL,
    request_digest text        NOT NULL,
    status         integer     NOT NULL,
    body           text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (caller, key)
);
