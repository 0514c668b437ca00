-- 0003_lifecycle (SQLite): the lifecycle manager's sandbox registry, state
-- intervals (cost accounting), run leases and per-project policies. Keep in
-- step with postgres/0003_lifecycle.sql. See metastore.SandboxStore.
--
-- Every table goes with its project (ON DELETE CASCADE): deleting a project
-- removes its lifecycle rows too.

CREATE TABLE sandboxes (
    id               TEXT    NOT NULL PRIMARY KEY,
    project_id       TEXT    NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    provider         TEXT    NOT NULL,
    provider_id      TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,
    state_since      TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    last_activity    TEXT    NOT NULL,
    backup           TEXT    NOT NULL DEFAULT 'dirty' CHECK (backup IN ('clean', 'dirty', 'failed')),
    clean_version    INTEGER NOT NULL DEFAULT 0 CHECK (clean_version >= 0),
    flushed          INTEGER NOT NULL DEFAULT 0 CHECK (flushed IN (0, 1)),
    verified_version INTEGER NOT NULL DEFAULT 0 CHECK (verified_version >= 0),
    flush_failures   INTEGER NOT NULL DEFAULT 0 CHECK (flush_failures >= 0),
    last_attempt     TEXT,
    last_flush_error TEXT    NOT NULL DEFAULT '',
    agent_state      TEXT    NOT NULL DEFAULT '',
    agent_version    INTEGER NOT NULL DEFAULT 0,
    pending_paths    INTEGER NOT NULL DEFAULT 0,
    pending_bytes    INTEGER NOT NULL DEFAULT 0,
    last_heartbeat   TEXT,
    notified         TEXT    NOT NULL DEFAULT '{}',
    extended_until   TEXT,
    token_hash       TEXT    NOT NULL DEFAULT '',
    last_error       TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX sandboxes_project ON sandboxes (project_id, created_at);
-- One sandbox per project at a time: EnsureSandbox relies on it.
CREATE UNIQUE INDEX sandboxes_one_live ON sandboxes (project_id) WHERE state <> 'destroyed';

-- The time each sandbox spent in each state; ended_at NULL: the current one.
-- illegal = 1: entered by a transition the state machine forbids (observed
-- at the provider, recorded rather than refused).
CREATE TABLE sandbox_intervals (
    sandbox_id TEXT    NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq > 0),
    project_id TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    started_at TEXT    NOT NULL,
    ended_at   TEXT,
    illegal    INTEGER NOT NULL DEFAULT 0 CHECK (illegal IN (0, 1)),
    PRIMARY KEY (sandbox_id, seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX sandbox_intervals_project ON sandbox_intervals (project_id, started_at);

CREATE TABLE run_leases (
    id          TEXT NOT NULL PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    released_at TEXT
) STRICT;

CREATE INDEX run_leases_project ON run_leases (project_id);

-- A project without a row here follows the global policy.
CREATE TABLE lifecycle_policies (
    project_id  TEXT NOT NULL PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    override    TEXT NOT NULL,
    webhook_url TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
