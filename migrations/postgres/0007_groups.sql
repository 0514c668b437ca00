-- 0007_groups (PostgreSQL): blobs.raw_offset, where a blob stored as a
-- member of a zstd group frame (pack codec 2) starts in the frame's
-- plaintext; 0 for every other blob. Keep in step with
-- sqlite/0007_groups.sql.

ALTER TABLE blobs ADD COLUMN raw_offset bigint NOT NULL DEFAULT 0 CHECK (raw_offset >= 0);
