-- 0007_groups (SQLite): blobs.raw_offset, where a blob stored as a member
-- of a zstd group frame (pack codec 2) starts in the frame's plaintext; 0
-- for every other blob. Keep in step with postgres/0007_groups.sql.

ALTER TABLE blobs ADD COLUMN raw_offset INTEGER NOT NULL DEFAULT 0 CHECK (raw_offset >= 0);
