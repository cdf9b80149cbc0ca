// Package archive keeps a host's audit events as evidence: one append-only Merkle tree (RFC 6962
// hashing, golang.org/x/mod/sumdb/tlog) whose leaves are the raw kernel records of each event and the
// writer's control records, cut into zstd-compressed segment files and signed by checkpoints (C2SP
// tlog-checkpoint signed notes). The format is written down in docs/format.md.
//
// Invariants:
//   - The leaf index never resets; segments are never rewritten, and a sealed segment's last leaf (SEAL)
//     and final checkpoint sign its summary.
//   - Append never blocks on the disk. An event counts as archived (Stats' durable size) only once the
//     block holding it is written and, under the default sync policy, fsynced. What cannot be kept is
//     counted and written as a LOST leaf, never dropped silently.
//   - Every block that holds leaves ends with a checkpoint that signs them: no durable leaf is unsigned.
//   - Every checkpoint is signed by the key that must sign it: the host identity key for the checkpoint
//     covering a START or KEY leaf, otherwise the current epoch key, and only within its epoch. An epoch
//     key lives only in memory and is overwritten once the next has been introduced, so stealing the
//     current key cannot re-sign anything before the current epoch, nor sign anything after it.
//   - After a crash nothing is repaired: the next run records the torn tail in its START leaf.
//   - Trust is derived from the identity key alone (never from a segment header), and every length read
//     from a segment is bounded (limits.go) before anything is allocated for it.
//
// Verify proves these properties of an archive directory, or reports exactly where they fail.
package archive
