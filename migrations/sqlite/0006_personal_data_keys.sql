-- Crypto-shredding of personal data (docs/privacy.md). See the PostgreSQL
-- migration of the same number for what each table holds.
CREATE TABLE key_store
(
    id              INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    master_key_id   TEXT    NOT NULL,
    email_index_key TEXT    NOT NULL,
    created_ms      INTEGER NOT NULL,
    rotated_ms      INTEGER
);

CREATE TABLE customer_keys
(
    customer_id  TEXT    NOT NULL PRIMARY KEY,
    wrapped_key  TEXT,
    created_ms   INTEGER NOT NULL,
    destroyed_ms INTEGER,
    CHECK ((wrapped_key IS NULL) = (destroyed_ms IS NOT NULL))
);

ALTER TABLE idempotency_keys ADD COLUMN customer_id TEXT;
CREATE INDEX idempotency_keys_customer ON idempotency_keys (customer_id);
