CREATE TABLE console_sessions
(
    token_digest TEXT NOT NULL PRIMARY KEY,
    key_name     TEXT NOT NULL,
    key_digest   TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

CREATE TABLE integrity_checks
(
    id          TEXT NOT NULL PRIMARY KEY,
    started_by  TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    deadline    TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL,
    summary     TEXT NOT NULL
);
CREATE INDEX integrity_checks_started ON integrity_checks (started_at);
CREATE UNIQUE INDEX integrity_checks_one_running ON integrity_checks (outcome) WHERE outcome = 'running';
