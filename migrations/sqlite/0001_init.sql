-- 0001_init (SQLite): projects, tokens, the blob index, versions and the
-- head version's file listing. Keep in step with postgres/0001_init.sql.
--
-- Times are TEXT, UTC, fixed width: 2006-01-02T15:04:05.000000Z.
-- Ids (blob, pack, root tree) are 32-byte BLOBs. Booleans are 0/1 INTEGERs.
-- Tables are STRICT so a value of the wrong type is an error, not a silent
-- conversion; tables keyed by (project_id, something) are WITHOUT ROWID.

CREATE TABLE projects (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    created_at TEXT    NOT NULL,
    head       INTEGER NOT NULL DEFAULT 0 CHECK (head >= 0)
) STRICT;

-- hash is the hex SHA-256 of the bearer secret; the secret is never stored.
CREATE TABLE tokens (
    hash       TEXT    NOT NULL PRIMARY KEY,
    kind       TEXT    NOT NULL,
    project_id TEXT    REFERENCES projects (id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL,
    expires_at TEXT,
    revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    note       TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX tokens_project_id ON tokens (project_id);

CREATE TABLE packs (
    project_id TEXT    NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id         BLOB    NOT NULL CHECK (length(id) = 32),
    type       INTEGER NOT NULL CHECK (type IN (1, 2)),
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_at TEXT    NOT NULL,
    PRIMARY KEY (project_id, id)
) STRICT, WITHOUT ROWID;

-- The blob index: where each blob of a project is stored. A blob keeps its
-- first location. Its row lives and dies with its pack: GC repacking points
-- the live rows at the new pack, then deletes the old pack, which takes the
-- dead rows with it; deleting a project goes through its packs. (One foreign
-- key only: each costs a lookup per inserted blob.)
CREATE TABLE blobs (
    project_id TEXT    NOT NULL,
    id         BLOB    NOT NULL CHECK (length(id) = 32),
    type       INTEGER NOT NULL CHECK (type IN (1, 2)),
    pack_id    BLOB    NOT NULL,
    "offset"   INTEGER NOT NULL CHECK ("offset" >= 0),
    length     INTEGER NOT NULL CHECK (length >= 0),
    raw_length INTEGER NOT NULL CHECK (raw_length >= 0),
    codec      INTEGER NOT NULL CHECK (codec BETWEEN 0 AND 255),
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, pack_id) REFERENCES packs (project_id, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX blobs_pack ON blobs (project_id, pack_id);

CREATE TABLE versions (
    project_id TEXT    NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    number     INTEGER NOT NULL CHECK (number > 0),
    parent     INTEGER NOT NULL CHECK (parent >= 0 AND parent < number),
    root       BLOB    NOT NULL CHECK (length(root) = 32),
    kind       TEXT    NOT NULL,
    sandbox_id TEXT    NOT NULL DEFAULT '',
    created_at TEXT    NOT NULL,
    files      INTEGER NOT NULL DEFAULT 0 CHECK (files >= 0),
    bytes      INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    pinned     INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    PRIMARY KEY (project_id, number)
) STRICT, WITHOUT ROWID;

-- The platform's table of the head version's regular files. Paths compare
-- bytewise (BINARY collation), so prefix listings are range scans.
CREATE TABLE project_files (
    project_id    TEXT    NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    path          TEXT    NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    content_type  TEXT    NOT NULL DEFAULT '',
    checksum      TEXT    NOT NULL DEFAULT '',
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    user_uploaded INTEGER NOT NULL DEFAULT 0 CHECK (user_uploaded IN (0, 1)),
    PRIMARY KEY (project_id, path)
) STRICT, WITHOUT ROWID;
