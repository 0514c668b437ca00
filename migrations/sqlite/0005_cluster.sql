-- 0005_cluster (SQLite): coordinator replicas, which replica holds which
-- agent session, and the mailbox of commands routed between replicas (one
-- replica on SQLite: the tables keep the same code path and tests). Keep in
-- step with postgres/0005_cluster.sql. See metastore.ClusterStore.

CREATE TABLE replicas (
    id         TEXT    NOT NULL PRIMARY KEY,
    addr       TEXT    NOT NULL,
    started_at TEXT    NOT NULL,
    seen_at    TEXT    NOT NULL,
    is_leader  INTEGER NOT NULL DEFAULT 0 CHECK (is_leader IN (0, 1)),
    leader_token INTEGER NOT NULL DEFAULT 0,
    agents     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE agent_routes (
    session_id   TEXT NOT NULL PRIMARY KEY,
    project_id   TEXT NOT NULL,
    replica_id   TEXT NOT NULL,
    connected_at TEXT NOT NULL
);
CREATE INDEX agent_routes_project ON agent_routes (project_id, connected_at);
CREATE INDEX agent_routes_replica ON agent_routes (replica_id);

CREATE TABLE replica_commands (
    id         TEXT    NOT NULL PRIMARY KEY,
    replica_id TEXT    NOT NULL,
    project_id TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('flush', 'rollback')),
    arg        INTEGER NOT NULL DEFAULT 0,
    created_at TEXT    NOT NULL,
    deadline   TEXT    NOT NULL,
    taken      INTEGER NOT NULL DEFAULT 0 CHECK (taken IN (0, 1)),
    done       INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
    outcome    TEXT    NOT NULL DEFAULT '',
    version    INTEGER NOT NULL DEFAULT 0,
    error      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX replica_commands_todo ON replica_commands (replica_id, created_at) WHERE NOT taken;
CREATE INDEX replica_commands_created ON replica_commands (created_at);
