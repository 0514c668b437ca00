-- 0001_init (PostgreSQL): projects, tokens, the blob index, versions and the
-- head version's file listing. Keep in step with sqlite/0001_init.sql.
--
-- Times are timestamptz (microseconds). Ids (blob, pack, root tree) are
-- 32-byte bytea. Paths use the "C" collation: bytewise order, the same as
-- SQLite's, so listings agree and prefix listings are index range scans.

CREATE TABLE projects (
    id         text        NOT NULL,
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    created_at timestamptz NOT NULL,
    head       bigint      NOT NULL DEFAULT 0 CHECK (head >= 0),
    CONSTRAINT projects_pkey PRIMARY KEY (id),
    CONSTRAINT projects_name_key UNIQUE (name)
);

-- hash is the hex SHA-256 of the bearer secret; the secret is never stored.
CREATE TABLE tokens (
    hash       text        NOT NULL PRIMARY KEY,
    kind       text        NOT NULL,
    project_id text        REFERENCES projects (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked    boolean     NOT NULL DEFAULT false,
    note       text        NOT NULL DEFAULT ''
);

CREATE INDEX tokens_project_id ON tokens (project_id);

CREATE TABLE packs (
    project_id text        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    id         bytea       NOT NULL CHECK (octet_length(id) = 32),
    type       smallint    NOT NULL CHECK (type IN (1, 2)),
    size       bigint      NOT NULL CHECK (size >= 0),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, id)
);

-- The blob index: where each blob of a project is stored. A blob keeps its
-- first location. Its row lives and dies with its pack: GC repacking points
-- the live rows at the new pack, then deletes the old pack, which takes the
-- dead rows with it; deleting a project goes through its packs. (One foreign
-- key only: each costs a lookup per inserted blob.)
CREATE TABLE blobs (
    project_id text     NOT NULL,
    id         bytea    NOT NULL CHECK (octet_length(id) = 32),
    type       smallint NOT NULL CHECK (type IN (1, 2)),
    pack_id    bytea    NOT NULL,
    "offset"   bigint   NOT NULL CHECK ("offset" >= 0),
    length     bigint   NOT NULL CHECK (length >= 0),
    raw_length bigint   NOT NULL CHECK (raw_length >= 0),
    codec      smallint NOT NULL CHECK (codec BETWEEN 0 AND 255),
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, pack_id) REFERENCES packs (project_id, id) ON DELETE CASCADE
);

CREATE INDEX blobs_pack ON blobs (project_id, pack_id);

CREATE TABLE versions (
    project_id text        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    number     bigint      NOT NULL CHECK (number > 0),
    parent     bigint      NOT NULL CHECK (parent >= 0 AND parent < number),
    root       bytea       NOT NULL CHECK (octet_length(root) = 32),
    kind       text        NOT NULL,
    sandbox_id text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    files      bigint      NOT NULL DEFAULT 0 CHECK (files >= 0),
    bytes      bigint      NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    pinned     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (project_id, number)
);

-- The platform's table of the head version's regular files.
CREATE TABLE project_files (
    project_id    text             NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    path          text COLLATE "C" NOT NULL,
    size          bigint           NOT NULL CHECK (size >= 0),
    content_type  text             NOT NULL DEFAULT '',
    checksum      text             NOT NULL DEFAULT '',
    created_at    timestamptz      NOT NULL,
    updated_at    timestamptz      NOT NULL,
    user_uploaded boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (project_id, path)
);
