CREATE TABLE access_state
(
    customer_id              TEXT    NOT NULL PRIMARY KEY,
    name                     TEXT,
    email                    TEXT    NOT NULL,
    email_key                TEXT    NOT NULL,
    access_granted           BOOLEAN NOT NULL,
    role                     TEXT,
    password_set             BOOLEAN NOT NULL,
    must_change_password     BOOLEAN NOT NULL,
    setup_link_expires_at    TEXT,
    pending_email            TEXT,
    pending_email_expires_at TEXT,
    version                  INTEGER NOT NULL,
    updated_at               TEXT    NOT NULL
);
CREATE INDEX access_state_email ON access_state (email_key);

CREATE TABLE audit_trail
(
    position          INTEGER NOT NULL PRIMARY KEY,
    tx                INTEGER NOT NULL,
    customer_id       TEXT    NOT NULL,
    sequence          INTEGER NOT NULL,
    at                TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    actor_kind        TEXT    NOT NULL,
    actor_name        TEXT,
    actor_role        TEXT,
    actor_customer_id TEXT,
    request_id        TEXT,
    reason            TEXT,
    old_email         TEXT,
    new_email         TEXT,
    password_source   TEXT,
    with_setup_link   BOOLEAN
);
CREATE INDEX audit_trail_order ON audit_trail (tx, position);
CREATE INDEX audit_trail_customer ON audit_trail (customer_id, tx, position);
CREATE INDEX audit_trail_at ON audit_trail (at);

CREATE TABLE projector_checkpoints
(
    name       TEXT    NOT NULL PRIMARY KEY,
    tx         INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
);
