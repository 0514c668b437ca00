-- 0002_gc (PostgreSQL): garbage collection and retention. Keep in step with
-- sqlite/0002_gc.sql.
--
-- packs.condemned_at: when garbage collection found none of the pack's
-- blobs live (NULL while live). packs.deleting: GC is deleting the object;
-- the pack's blob rows are gone already. projects.pack_epoch: advanced each
-- time GC forgets deleted packs, so an upload verified before a deletion
-- cannot be indexed after it (see metastore.Store.PackEpoch).

ALTER TABLE packs ADD COLUMN condemned_at timestamptz;
ALTER TABLE packs ADD COLUMN deleting boolean NOT NULL DEFAULT false;
ALTER TABLE projects ADD COLUMN pack_epoch bigint NOT NULL DEFAULT 0 CHECK (pack_epoch >= 0);

-- A project without a row here has the default retention
-- (metastore.DefaultRetention).
CREATE TABLE retention (
    project_id     text        NOT NULL PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    keep_last      integer     NOT NULL CHECK (keep_last >= 0),
    keep_within_us bigint      NOT NULL CHECK (keep_within_us >= 0),
    updated_at     timestamptz NOT NULL
);
