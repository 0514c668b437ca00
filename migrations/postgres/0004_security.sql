-- 0004_security (PostgreSQL): what a token list shows (the sandbox a token
-- was made for, when it was last used) and per-project limits on what a
-- commit may expand to. Keep in step with sqlite/0004_security.sql.

ALTER TABLE tokens ADD COLUMN sandbox_id text NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN last_used_at timestamptz;

-- A project without a row here has the default limits
-- (metastore.DefaultLimits); a 0 column means the default too.
CREATE TABLE project_limits (
    project_id text        NOT NULL PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    max_files  bigint      NOT NULL DEFAULT 0 CHECK (max_files >= 0),
    max_bytes  bigint      NOT NULL DEFAULT 0 CHECK (max_bytes >= 0),
    max_depth  integer     NOT NULL DEFAULT 0 CHECK (max_depth >= 0),
    updated_at timestamptz NOT NULL
);

-- Projects deleted recently: a signed upload URL handed out before the
-- deletion may still store an object under the project's prefix until it
-- expires, so garbage collection sweeps these prefixes for a while.
CREATE TABLE deleted_projects (
    id         text        NOT NULL PRIMARY KEY,
    deleted_at timestamptz NOT NULL
);
