CREATE TABLE customer_emails
(
    customer_id TEXT NOT NULL PRIMARY KEY,
    email_key   TEXT NOT NULL
);
CREATE INDEX customer_emails_email ON customer_emails (email_key);

CREATE TABLE api_keys
(
    name          TEXT NOT NULL PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('service', 'auditor', 'admin')),
    secret_digest TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE customer_sessions
(
    token_digest TEXT    NOT NULL PRIMARY KEY,
    customer_id  TEXT    NOT NULL,
    login_epoch  INTEGER NOT NULL,
    created_at   TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL
);
CREATE INDEX customer_sessions_customer ON customer_sessions (customer_id);
CREATE INDEX customer_sessions_expiry ON customer_sessions (expires_at);
