// Package archive is the on-disk format of a host's audit evidence and its readers: one append-only
// Merkle tree (RFC 6962 hashing, golang.org/x/mod/sumdb/tlog) whose leaves are the raw kernel records of
// each event and the writer's control records, cut into zstd-compressed segment files and signed by
// checkpoints (C2SP tlog-checkpoint signed notes). The format is written down in docs/format.md.
//
// The archive is split along its guarantees:
//   - archive (this package): the format codec (segments, blocks, entries, leaves, checkpoints, the tree
//     frontier), its limits, the host identity key, and the readers that decode without verifying:
//     Reader (show, search) and Follower (the durable queue of the shipper, SIEM sinks and alerting).
//   - archive/writer: the only writer. It appends, signs with epoch keys and seals segments.
//   - archive/verify: the only verifier. Dir (the verify command) and Stream (the store) share it.
//   - archive/receipt: the store's cosignatures over checkpoints (receipts) and the files that hold them.
//
// Every length read from a segment is bounded (limits.go) before anything is allocated for it, so
// hostile bytes cost any reader a bounded amount of memory.
package archive
