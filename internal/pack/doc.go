// Package pack implements the pack object format: many blobs (file chunks or
// encoded trees) concatenated into one immutable object that ends with a
// self-describing footer, so that the blob index of a repository can be
// rebuilt from the bucket alone.
//
// # Format (compatibility contract)
//
// This layout is stored in buckets and must never change incompatibly; a new
// layout gets a new magic. All integers are little-endian.
//
//	offset 0                  blob_0 | blob_1 | ... | blob_{n-1}
//	                          stored bytes of each blob, back to back,
//	                          starting at offset 0 with no gaps or padding
//	B = sum of stored lengths entry_0 | entry_1 | ... | entry_{n-1}
//	                          n entries of EntrySize (56) bytes each
//	B + 56n                   trailer, TrailerSize (16) bytes
//	B + 56n + 16              end of object
//
// Each entry describes blob i, in the order the blobs are stored:
//
//	bytes  0..31  id         BLAKE3-256 of the blob's plaintext
//	bytes 32..39  offset     uint64, offset of the stored bytes in the pack
//	bytes 40..43  length     uint32, stored length
//	bytes 44..47  rawLength  uint32, plaintext length
//	byte  48      type       1 = data chunk (Data), 2 = encoded tree (Tree)
//	byte  49      codec      0 = none (stored bytes are the plaintext),
//	                         1 = zstd (stored bytes are one zstd frame, RFC 8878),
//	                         2 = group (a slice of a zstd frame shared with
//	                             the entries next to it; SKPACK02 only)
//	bytes 50..53  rawOffset  uint32, group: where the blob's plaintext starts
//	                         in the frame's plaintext; 0 for the other codecs
//	bytes 54..55  reserved   must be zero
//
// The trailer:
//
//	bytes  0..3   count      uint32, number of entries n
//	bytes  4..7   crc        uint32, CRC-32C (Castagnoli) of the n*56 entry bytes
//	bytes  8..15  magic      "SKPACK01", or "SKPACK02" for a pack with group
//	                         entries (readers before groups refuse it by its
//	                         magic rather than misread it)
//
// Group members: several small blobs (each at most [MaxGroupMember]
// bytes) compressed together as one zstd frame whose plaintext is theirs
// back to back, at most [MaxGroupSize] bytes and with its content size in
// the frame header. Each member has its own entry: offset and length are
// the frame's (the same for all of them), rawLength the member's, and
// rawOffset where it starts in the frame's plaintext. The members of a
// frame are consecutive entries, in plaintext order without overlap (a
// writer may leave bytes of the frame unreferenced).
//
// A reader fetches the last 16 bytes, checks the magic and learns n, then
// fetches the last n*56+16 bytes (the footer) and validates it with
// [ParseFooter]. Rules a valid pack obeys, all checked by ParseFooter:
//
//   - 1 <= n <= [MaxEntries]: a pack with no blobs is never written
//     ([Writer.Finish] refuses with [ErrEmpty]) and is rejected on read;
//   - the crc matches and the reserved bytes are zero;
//   - entry 0 starts at offset 0, each next entry starts where the previous one
//     ends (or, a group member, shares the previous entry's frame and starts
//     past its plaintext), and the last one ends exactly where the entries
//     start (B), so the blobs tile the data region with no gap or overlap;
//   - length and rawLength are at most [MaxBlobSize]; codec none implies
//     length == rawLength; a zstd blob has length >= 1;
//   - types and codecs are known values; no id appears twice; rawOffset is
//     zero outside groups, and a member ends within [MaxGroupSize].
//
// The plaintext of each blob is verified by [DecodeBlob]: its length must equal
// rawLength and its BLAKE3-256 must equal the entry's id. zstd frames are
// written without the optional content checksum (BLAKE3 already covers the
// plaintext) and without a dictionary; readers accept a checksum if present.
//
// The pack id is the BLAKE3-256 of the whole object (blobs, entries and
// trailer), so a pack's name in the bucket also verifies its bytes.
//
// Writers compress each blob with zstd at the fastest level and keep the
// compressed form only when it is at least ~3% (1/32) smaller than the
// plaintext; otherwise the blob is stored raw with codec none. Readers must
// not depend on that policy: any codec choice that satisfies the rules above
// is valid.
package pack
