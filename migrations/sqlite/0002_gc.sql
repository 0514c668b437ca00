-- 0002_gc (SQLite): garbage collection and retention. Keep in step with
-- postgres/0002_gc.sql.
--
-- packs.condemned_at: when garbage collection found none of the pack's
-- blobs live (NULL while live). packs.deleting: GC is deleting the object;
-- the pack's blob rows are gone already. projects.pack_epoch: advanced each
-- time GC forgets deleted packs, so an upload verified before a deletion
-- cannot be indexed after it (see metastore.Store.PackEpoch).

ALTER TABLE packs ADD COLUMN condemned_at TEXT;
ALTER TABLE packs ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0 CHECK (deleting IN (0, 1));
ALTER TABLE projects ADD COLUMN pack_epoch INTEGER NOT NULL DEFAULT 0 CHECK (pack_epoch >= 0);

-- A project without a row here has the default retention
-- (metastore.DefaultRetention).
CREATE TABLE retention (
    project_id     TEXT    NOT NULL PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    keep_last      INTEGER NOT NULL CHECK (keep_last >= 0),
    keep_within_us INTEGER NOT NULL CHECK (keep_within_us >= 0),
    updated_at     TEXT    NOT NULL
) STRICT, WITHOUT ROWID;
