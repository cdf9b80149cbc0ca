// Package writer appends a host's audit events to its archive (package archive's format).
//
// Invariants:
//   - The leaf index never resets; segments are never rewritten, and a sealed segment's last leaf (SEAL)
//     and final checkpoint sign its summary.
//   - Append never blocks on the disk. An event counts as archived (Stats' durable size) only once the
//     block holding it is written and, under the default sync policy, fsynced. What cannot be kept is
//     counted and written as a LOST leaf, never dropped silently: a run keeps a reserve of disk space
//     (ReserveFile) so that, when the disk is full at Close, the LOST leaf for what it holds, its STOP
//     and its seal can still be written.
//   - Every block that holds leaves ends with a checkpoint that signs them: no durable leaf is unsigned.
//   - The checkpoint covering a START or KEY leaf is signed by the host identity key; every other
//     checkpoint by the current epoch key, and only within its epoch. An epoch key lives only in memory
//     and is overwritten once the next has been introduced, so stealing the current key cannot re-sign
//     anything before the current epoch, nor sign anything after it.
//   - After a crash nothing is repaired: the next run records the torn tail in its START leaf.
package writer
