-- 0004_security (SQLite): what a token list shows (the sandbox a token was
-- made for, when it was last used) and per-project limits on what a commit
-- may expand to. Keep in step with postgres/0004_security.sql.

ALTER TABLE tokens ADD COLUMN sandbox_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN last_used_at TEXT;

-- A project without a row here has the default limits
-- (metastore.DefaultLimits); a 0 column means the default too.
CREATE TABLE project_limits (
    project_id TEXT    NOT NULL PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    max_files  INTEGER NOT NULL DEFAULT 0 CHECK (max_files >= 0),
    max_bytes  INTEGER NOT NULL DEFAULT 0 CHECK (max_bytes >= 0),
    max_depth  INTEGER NOT NULL DEFAULT 0 CHECK (max_depth >= 0),
    updated_at TEXT    NOT NULL
) STRICT;

-- Projects deleted recently: a signed upload URL handed out before the
-- deletion may still store an object under the project's prefix until it
-- expires, so garbage collection sweeps these prefixes for a while.
CREATE TABLE deleted_projects (
    id         TEXT NOT NULL PRIMARY KEY,
    deleted_at TEXT NOT NULL
) STRICT;
