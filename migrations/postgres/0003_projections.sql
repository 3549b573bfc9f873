-- Projections, derived from the events by the catch-up projector.
-- Rebuildable at any time (`accessctl rebuild`).

-- The current access state of every customer.
CREATE TABLE access_state
(
    customer_id              text        NOT NULL,
    name                     text,
    email                    text        NOT NULL,
    email_key                text        NOT NULL,
    access_granted           boolean     NOT NULL,
    role                     text,
    password_set             boolean     NOT NULL,
    must_change_password     boolean     NOT NULL,
    setup_link_expires_at    timestamptz,
    pending_email            text,
    pending_email_expires_at timestamptz,
    version                  bigint      NOT NULL,
    updated_at               timestamptz NOT NULL,
    CONSTRAINT access_state_pkey PRIMARY KEY (customer_id)
);
CREATE INDEX access_state_email ON access_state (email_key);

-- One row per login change, in the global order (tx, position).
CREATE TABLE audit_trail
(
    position          bigint      NOT NULL,
    tx                bigint      NOT NULL,
    customer_id       text        NOT NULL,
    sequence          bigint      NOT NULL,
    at                timestamptz NOT NULL,
    kind              text        NOT NULL,
    actor_kind        text        NOT NULL,
    actor_name        text,
    actor_role        text,
    actor_customer_id text,
    request_id        text,
    reason            text,
    old_email         text,
    new_email         text,
    password_source   text,
    with_setup_link   boolean,
    CONSTRAINT audit_trail_pkey PRIMARY KEY (position)
);
CREATE INDEX audit_trail_order ON audit_trail (tx, position);
CREATE INDEX audit_trail_customer ON audit_trail (customer_id, tx, position);
CREATE INDEX audit_trail_at ON audit_trail (at);

-- Where each projector is in the global order. The projector updates its
-- row in the same transaction as the rows it produced.
CREATE TABLE projector_checkpoints
(
    name       text        NOT NULL,
    tx         bigint      NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT projector_checkpoints_pkey PRIMARY KEY (name)
);
