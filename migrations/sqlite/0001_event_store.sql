-- The event store on SQLite: the same columns as on PostgreSQL.
-- global_position is an AUTOINCREMENT key, so positions are never reused
-- (a plain rowid may be, after deletes and VACUUM). With one writer at a
-- time, position order is commit order.
CREATE TABLE events
(
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    sequence        INTEGER NOT NULL CHECK (sequence >= 0),
    event_type      TEXT    NOT NULL,
    event_version   TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT events_stream UNIQUE (aggregate_type, aggregate_id, sequence)
);

CREATE TABLE snapshots
(
    aggregate_type   TEXT    NOT NULL,
    aggregate_id     TEXT    NOT NULL,
    last_sequence    INTEGER NOT NULL CHECK (last_sequence >= 0),
    current_snapshot INTEGER NOT NULL CHECK (current_snapshot >= 0),
    payload          TEXT    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

CREATE TABLE login_emails
(
    email_key   TEXT NOT NULL PRIMARY KEY,
    customer_id TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('login', 'pending_change'))
);
CREATE INDEX login_emails_customer ON login_emails (customer_id);

CREATE TABLE idempotency_keys
(
    caller         TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    request_digest TEXT    NOT NULL,
    status         INTEGER NOT NULL,
    body           TEXT    NOT NULL,
    created_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (caller, key)
);
