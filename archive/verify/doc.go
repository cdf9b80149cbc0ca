// Package verify proves the properties of an archive that package writer promises, or reports exactly
// where they fail (docs/format.md, "Verification"). It is the one verifier: Dir reads an archive
// directory for the verify command, and Stream checks bytes as they arrive at the store; Dir feeds the
// files into a Stream, so the two cannot disagree.
//
// Trust is derived from the pinned identity key alone, never from a segment header: every leaf counted
// as verified is covered by a checkpoint signed by a key the verifier chained to the identity key
// itself. After a gap nothing is trusted until the next identity-signed START or KEY.
package verify
