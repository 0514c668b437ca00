-- 0005_cluster (PostgreSQL): coordinator replicas, which replica holds which
-- agent session, and the mailbox of commands routed between replicas.
-- Keep in step with sqlite/0005_cluster.sql. See metastore.ClusterStore.

CREATE TABLE replicas (
    id         text        NOT NULL PRIMARY KEY,
    addr       text        NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    is_leader  boolean     NOT NULL DEFAULT false,
    -- While it leads: the backend pid of its session holding the leader's
    -- advisory lock (pg_locks tells which replica really leads).
    leader_token bigint    NOT NULL DEFAULT 0,
    agents     integer     NOT NULL DEFAULT 0
);

CREATE TABLE agent_routes (
    session_id   text        NOT NULL PRIMARY KEY,
    project_id   text        NOT NULL,
    replica_id   text        NOT NULL,
    connected_at timestamptz NOT NULL
);
CREATE INDEX agent_routes_project ON agent_routes (project_id, connected_at);
CREATE INDEX agent_routes_replica ON agent_routes (replica_id);

CREATE TABLE replica_commands (
    id         text        NOT NULL PRIMARY KEY,
    replica_id text        NOT NULL,
    project_id text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('flush', 'rollback')),
    arg        bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    deadline   timestamptz NOT NULL,
    taken      boolean     NOT NULL DEFAULT false,
    done       boolean     NOT NULL DEFAULT false,
    outcome    text        NOT NULL DEFAULT '',
    version    bigint      NOT NULL DEFAULT 0,
    error      text        NOT NULL DEFAULT ''
);
CREATE INDEX replica_commands_todo ON replica_commands (replica_id, created_at) WHERE NOT taken;
CREATE INDEX replica_commands_created ON replica_commands (created_at);
