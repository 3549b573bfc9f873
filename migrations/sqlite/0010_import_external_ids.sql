-- Imported customers by their id in the old system (bulk import): a keyed
-- blind index, never the id itself. `external_key` is an HMAC under the
-- email index key of the import's source and the external id; a forget
-- deletes the customer's row. It makes an external id unique per source
-- also when rows give their own customer ids.
CREATE TABLE import_external_ids
(
    external_key text NOT NULL,
    customer_id  text NOT NULL,
    CONSTRAINT import_external_ids_pkey PRIMARY KEY (external_key)
);
CREATE INDEX import_external_ids_customer ON import_external_ids (customer_id);
