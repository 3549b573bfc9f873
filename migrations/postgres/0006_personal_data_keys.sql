-- Crypto-shredding of personal data (docs/privacy.md).
--
-- The key store itself: which master key this database was set up with
-- (its public fingerprint, never the key) and the email index key (the HMAC
-- key of login_emails.email_key and customer_emails.email_key), wrapped
-- under the master key. One row.
CREATE TABLE key_store
(
    id              integer NOT NULL CHECK (id = 1),
    master_key_id   text    NOT NULL,
    email_index_key text    NOT NULL,
    created_ms      bigint  NOT NULL,
    rotated_ms      bigint,
    CONSTRAINT key_store_pkey PRIMARY KEY (id)
);

-- One data key per customer, wrapped under the master key. Personal fields
-- of the customer's events and its snapshot are sealed with it. Forgetting
-- the customer sets wrapped_key to NULL: the data can never be opened
-- again.
CREATE TABLE customer_keys
(
    customer_id  text   NOT NULL,
    wrapped_key  text,
    created_ms   bigint NOT NULL,
    destroyed_ms bigint,
    CONSTRAINT customer_keys_pkey PRIMARY KEY (customer_id),
    CONSTRAINT customer_keys_destroyed CHECK ((wrapped_key IS NULL) = (destroyed_ms IS NOT NULL))
);

-- Stored responses name their customer, so forgetting it can delete them
-- (a response may carry the customer's email address).
ALTER TABLE idempotency_keys ADD COLUMN customer_id text;
CREATE INDEX idempotency_keys_customer ON idempotency_keys (customer_id);
