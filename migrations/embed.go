// Package migrations holds the SQL schema of the metadata store in two
// dialects, SQLite and PostgreSQL, embedded in the coordinator.
//
// Files are named NNNN_description.sql. Both dialects carry the same numbers:
// migration N means the same schema change in either database. A migration
// file runs inside one transaction together with the schema_migrations
// bookkeeping (see package internal/metastore/migrate), so it must not contain
// statements that cannot run in a transaction (PostgreSQL's CREATE INDEX
// CONCURRENTLY, SQLite's VACUUM or PRAGMA foreign_keys).
//
// SQLite stores times as TEXT in the fixed-width UTC layout
// 2006-01-02T15:04:05.000000Z (sortable, readable, understood by SQLite's date
// functions); PostgreSQL uses timestamptz. Both keep microseconds.
package migrations

import "embed"

// FS holds sqlite/*.sql and postgres/*.sql.
//
//go:embed sqlite/*.sql postgres/*.sql
var FS embed.FS

// Dialect directories inside FS.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)
