-- The hash chain over the events (tamper evidence, docs/audit.md): one row
-- per event, in the global order (tx, position). `hash` covers the event's
-- stored content and `prev_hash`, the hash of the event before it (64 zeros
-- for the first). Written by `access_projections::chain::extend`, together
-- with its checkpoint (`projector_checkpoints`, name `chain`), in one
-- transaction.
CREATE TABLE event_hashes
(
    position  bigint NOT NULL,
    tx        bigint NOT NULL,
    hash      text   NOT NULL,
    prev_hash text   NOT NULL,
    CONSTRAINT event_hashes_pkey PRIMARY KEY (position)
);
CREATE INDEX event_hashes_order ON event_hashes (tx, position);
