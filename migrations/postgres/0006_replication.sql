-- 0006_replication (PostgreSQL): the durable queue of objects to copy to
-- (or delete from) the replica bucket, in the order they were written.
-- Keep in step with sqlite/0006_replication.sql. See
-- metastore.ReplicationStore.

CREATE TABLE replication_queue (
    seq         bigserial   PRIMARY KEY,
    op          text        NOT NULL CHECK (op IN ('put', 'delete')),
    key         text COLLATE "C" NOT NULL,
    size        bigint      NOT NULL DEFAULT 0 CHECK (size >= 0),
    enqueued_at timestamptz NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    next_at     timestamptz NOT NULL,
    last_error  text        NOT NULL DEFAULT ''
);
CREATE INDEX replication_queue_due ON replication_queue (next_at, seq);
CREATE INDEX replication_queue_key ON replication_queue (key);
