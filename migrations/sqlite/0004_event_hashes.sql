-- The hash chain over the events (tamper evidence, docs/audit.md): one row
-- per event, in the global order (tx is always 0 on SQLite). `hash` covers
-- the event's stored content and `prev_hash`, the hash of the event before
-- it (64 zeros for the first). Written together with its checkpoint
-- (`projector_checkpoints`, name `chain`) in one transaction.
CREATE TABLE event_hashes
(
    position  INTEGER NOT NULL PRIMARY KEY,
    tx        INTEGER NOT NULL,
    hash      TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL
);
CREATE INDEX event_hashes_order ON event_hashes (tx, position);
