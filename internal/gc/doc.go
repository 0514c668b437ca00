// Package gc is sandkeep's garbage collector: it applies each project's
// retention policy (metastore.Retention) and frees the pack objects that no
// kept version needs, one project at a time, with no global lock, no
// exclusive lock on a project (agents keep syncing while it runs) and no
// LIST of the bucket.
//
// # A run, per project
//
//  1. List the project's packs, then its versions (in that order: the
//     safety argument below depends on it).
//  2. Retention: delete the version rows the policy drops (never the head,
//     never a pinned version) and their records in the bucket.
//  3. Mark, from the database: walk the trees of every kept version
//     (repo.LoadTree; a subtree shared by several versions is walked once)
//     and collect the live blob ids, trees and chunks. Then locate them
//     (LocateBlobs) to learn, per pack, its live blobs and live bytes.
//  4. Sweep, in two phases per pack, as described next.
//
// The sweep decides each pack on its own:
//
//   - a live pack none of whose indexed blobs is live is condemned
//     (CondemnPacks, stamped with the time of the condemnation);
//   - a condemned pack is deleted by a later run that starts at least Grace
//     after the condemnation, if its blobs are still all dead (DeletePacks:
//     the pack becomes "deleting" and its blobs leave the index; then the
//     object is deleted; then DropPacks forgets the row and advances the
//     project's pack epoch);
//   - a condemned pack holding a live blob (a commit referenced it after
//     all) is un-condemned;
//   - a live pack whose live bytes are less than RepackThreshold of its
//     size is repacked: its live blobs are read, verified against their ids
//     (pack.DecodeBlob), written into new packs, the index is pointed at the
//     new packs (MoveBlobs) and only then is the old pack condemned, to be
//     deleted after Grace like any other; small packs (under MergeBelow) are
//     merged the same way;
//   - packs created less than Grace ago are left alone: they may hold
//     chunks an agent uploaded for a commit that has not landed yet.
//
// Bytes before and after come from the packs table. A dry run computes the
// same report and changes nothing.
//
// # Safety: a blob of a kept version is never deleted
//
// Two rules, both enforced by the metadata store in transactions that are
// serialised with each other per project (SQLite: one writer connection;
// PostgreSQL: a per-project advisory lock, shared by uploads and commits,
// exclusive for GC transactions):
//
//   - (C) Commit check. A commit lists the blobs its tree references and its
//     parent's tree does not (repo's newRefs: the new root, every subtree
//     whose id differs from the parent's at that path, the chunks of every
//     changed file) and commits only if each is indexed in a live pack
//     (metastore.FileChanges.Requires, ErrMissing otherwise).
//   - (D) Deletion rule. A run R deletes pack P only if P appears condemned
//     in R's pack listing, R's mark (from the versions it listed after the
//     packs, minus those it deleted) finds none of P's indexed blobs live,
//     and DeletePacks finds P still condemned with the very stamp R listed
//     (so P stayed condemned from before R's listing until its deletion;
//     the stamp must also be at least Grace old, for liveness).
//
// Claim: if blob X is reachable from version V and V is kept, X's pack is
// not deleted. Versions form a chain (each commit's parent is the head
// when it commits), so X reaches V through some version W ≤ V that
// introduced it (X ∈ newRefs(W)), X being reachable from every version
// from W to V. Suppose run R deletes P, the pack X's index row points at;
// R listed the packs at time p and the versions at s > p.
//
//   - If W committed after p: P was condemned throughout (D), so W's check
//     (C) found X in another, live pack. For X's row to point at P later,
//     it must have moved into P after W; but index rows only move into a
//     pack through AddPack or MoveBlobs, which make that pack live in the
//     same transaction, contradicting (D).
//   - If W committed before s: let H be the head at s; W ≤ H. If V ≤ H, V
//     is in R's listing and, being kept, in R's mark. If H < V, X is
//     reachable from H (W ≤ H ≤ V), and the head is never deleted. Either
//     way X is live in R's mark, contradicting (D).
//
// What if a concurrent commit references a blob in a condemned pack? The
// commit is refused (C). Agents do not get there in the normal course:
// MissingBlobs (FindMissingChunks) reports blobs held only in condemned
// packs as missing, so the agent uploads them again and AddPack moves their
// index rows to the new pack; PutTrees stores again a tree held only in a
// condemned pack. A chunk an agent was told exists just before its pack was
// condemned makes that commit fail once; the agent's next attempt uploads
// it. Grace is what keeps this rare: packs younger than Grace are never
// condemned, so the chunks an agent uploads for a commit survive until
// the commit lands; and condemned packs stay readable for Grace, so a
// restore that was handed a location before a repack still finds its
// bytes. Grace must therefore exceed the longest upload-to-commit and the
// longest restore (default 1h); the claim above holds for any Grace ≥ 0
// and does not depend on clocks.
//
// Reused pack ids: pack ids are content hashes, so an agent may upload a
// pack with the id of one GC is deleting, and its PUT may land just before
// GC's DELETE. Uploads therefore read the project's pack epoch before they
// verify (or write) the object, and AddPack refuses a pack being deleted or
// an epoch that DropPacks advanced since: the pack is never indexed over a
// deleted object (repo.indexPack retries).
//
// Runs of the same project may overlap (another coordinator, the CLI): they
// are safe together because every decision above is checked in the store;
// in one process repo.LockMaintenance serialises them to avoid double work.
package gc
