-- The auditors' console (not events of any customer).
--
-- Console sessions: an auditor's or admin's API key exchanged for a
-- cookie. Only digests are kept: of the session's token, and of the API
-- key that opened it (a key removed or replaced ends its sessions).
CREATE TABLE console_sessions
(
    token_digest text        NOT NULL,
    key_name     text        NOT NULL,
    key_digest   text        NOT NULL,
    role         text        NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    CONSTRAINT console_sessions_pkey PRIMARY KEY (token_digest)
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- Verifications of the hash chain started from the console, with their
-- result (the last ones are shown on the integrity page).
CREATE TABLE integrity_checks
(
    id          text        NOT NULL,
    started_by  text        NOT NULL,
    started_at  timestamptz NOT NULL,
    -- A check still running after this was left by a replica that
    -- stopped (its time limit and a minute's grace, from its start).
    deadline    timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text        NOT NULL,
    summary     text        NOT NULL,
    CONSTRAINT integrity_checks_pkey PRIMARY KEY (id)
);
CREATE INDEX integrity_checks_started ON integrity_checks (started_at);
-- At most one check runs at a time (across replicas).
CREATE UNIQUE INDEX integrity_checks_one_running ON integrity_checks (outcome) WHERE outcome = 'running';
