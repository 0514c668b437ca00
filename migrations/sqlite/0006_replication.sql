-- 0006_replication (SQLite): the durable queue of objects to copy to (or
-- delete from) the replica bucket, in the order they were written. Keep in
-- step with postgres/0006_replication.sql. See metastore.ReplicationStore.

CREATE TABLE replication_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    op          TEXT    NOT NULL CHECK (op IN ('put', 'delete')),
    key         TEXT    NOT NULL,
    size        INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
    enqueued_at TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     TEXT    NOT NULL,
    last_error  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX replication_queue_due ON replication_queue (next_at, seq);
CREATE INDEX replication_queue_key ON replication_queue (key);
