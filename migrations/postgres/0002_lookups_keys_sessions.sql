-- Every customer's current login email (held or not), for lookup by email.
-- Several customers without access may share an address.
CREATE TABLE customer_emails
(
    customer_id text NOT NULL,
    email_key   text NOT NULL,
    CONSTRAINT customer_emails_pkey PRIMARY KEY (customer_id)
);
CREATE INDEX customer_emails_email ON customer_emails (email_key);

-- API keys created by the service itself (the first-start admin key).
-- Only a SHA-256 digest of the secret is kept.
CREATE TABLE api_keys
(
    name          text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('service', 'auditor', 'admin')),
    secret_digest text        NOT NULL,
    created_at    timestamptz NOT NULL,
    CONSTRAINT api_keys_pkey PRIMARY KEY (name)
);

-- Customer sessions. Only the token's digest is kept; `login_epoch` is the
-- customer's epoch when the session opened: a later change of email,
-- password or access ends it.
CREATE TABLE customer_sessions
(
    token_digest text        NOT NULL,
    customer_id  text        NOT NULL,
    login_epoch  bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    CONSTRAINT customer_sessions_pkey PRIMARY KEY (token_digest)
);
CREATE INDEX customer_sessions_customer ON customer_sessions (customer_id);
CREATE INDEX customer_sessions_expiry ON customer_sessions (expires_at);
