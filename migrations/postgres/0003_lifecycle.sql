-- 0003_lifecycle (PostgreSQL): the lifecycle manager's sandbox registry,
-- state intervals (cost accounting), run leases and per-project policies.
-- Keep in step with sqlite/0003_lifecycle.sql. See metastore.SandboxStore.
--
-- Every table goes with its project (ON DELETE CASCADE): deleting a project
-- removes its lifecycle rows too.

CREATE TABLE sandboxes (
    id               text        NOT NULL PRIMARY KEY,
    project_id       text        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    provider         text        NOT NULL,
    provider_id      text        NOT NULL DEFAULT '',
    state            text        NOT NULL,
    state_since      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    last_activity    timestamptz NOT NULL,
    backup           text        NOT NULL DEFAULT 'dirty' CHECK (backup IN ('clean', 'dirty', 'failed')),
    clean_version    bigint      NOT NULL DEFAULT 0 CHECK (clean_version >= 0),
    flushed          boolean     NOT NULL DEFAULT false,
    verified_version bigint      NOT NULL DEFAULT 0 CHECK (verified_version >= 0),
    flush_failures   integer     NOT NULL DEFAULT 0 CHECK (flush_failures >= 0),
    last_attempt     timestamptz,
    last_flush_error text        NOT NULL DEFAULT '',
    agent_state      text        NOT NULL DEFAULT '',
    agent_version    bigint      NOT NULL DEFAULT 0,
    pending_paths    bigint      NOT NULL DEFAULT 0,
    pending_bytes    bigint      NOT NULL DEFAULT 0,
    last_heartbeat   timestamptz,
    notified         text        NOT NULL DEFAULT '{}',
    extended_until   timestamptz,
    token_hash       text        NOT NULL DEFAULT '',
    last_error       text        NOT NULL DEFAULT ''
);

CREATE INDEX sandboxes_project ON sandboxes (project_id, created_at);
-- One sandbox per project at a time: EnsureSandbox relies on it.
CREATE UNIQUE INDEX sandboxes_one_live ON sandboxes (project_id) WHERE state <> 'destroyed';

-- The time each sandbox spent in each state; ended_at NULL: the current one.
-- illegal: entered by a transition the state machine forbids (observed at
-- the provider, recorded rather than refused).
CREATE TABLE sandbox_intervals (
    sandbox_id text        NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    seq        integer     NOT NULL CHECK (seq > 0),
    project_id text        NOT NULL,
    state      text        NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    illegal    boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (sandbox_id, seq)
);

CREATE INDEX sandbox_intervals_project ON sandbox_intervals (project_id, started_at);

CREATE TABLE run_leases (
    id          text        NOT NULL PRIMARY KEY,
    project_id  text        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    released_at timestamptz
);

CREATE INDEX run_leases_project ON run_leases (project_id);

-- A project without a row here follows the global policy.
CREATE TABLE lifecycle_policies (
    project_id  text        NOT NULL PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    override    text        NOT NULL,
    webhook_url text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL
);
