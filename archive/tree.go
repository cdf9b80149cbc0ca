package archive

import (
	"encoding/base64"
	"fmt"
	"math/bits"

	"golang.org/x/mod/sumdb/tlog"
)

// Frontier is the streaming state of an RFC 6962 Merkle tree: the roots of the perfect subtrees that make
// up a tree of Size leaves, largest first (one per set bit of Size). It is all a writer or a verifier needs
// to append leaves and compute the root; the hashing is tlog's (RecordHash, NodeHash), so the roots are
// exactly tlog.TreeHash's. Append costs one leaf hash plus on average one node hash.
type Frontier struct {
	Size   uint64
	Hashes []tlog.Hash
}

// Append adds the leaf whose data is data.
func (f *Frontier) Append(data []byte) {
	f.AppendHash(tlog.RecordHash(data))
}

// AppendHash adds a leaf by its hash.
func (f *Frontier) AppendHash(h tlog.Hash) {
	// Each trailing one bit of Size is a perfect subtree the new leaf completes a level above.
	for s := f.Size; s&1 == 1; s >>= 1 {
		n := len(f.Hashes) - 1
		h = tlog.NodeHash(f.Hashes[n], h)
		f.Hashes = f.Hashes[:n]
	}
	f.Hashes = append(f.Hashes, h)
	f.Size++
}

// Root returns the tree hash of the Size leaves (tlog.TreeHash of the same leaves).
func (f Frontier) Root() tlog.Hash {
	if f.Size == 0 {
		return tlog.Hash{} // as tlog.TreeHash(0, …)
	}
	h := f.Hashes[len(f.Hashes)-1]
	for i := len(f.Hashes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(f.Hashes[i], h)
	}
	return h
}

// Encode returns the frontier's hashes in base64, largest subtree first.
func (f Frontier) Encode() []string {
	out := make([]string, len(f.Hashes))
	for i, h := range f.Hashes {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// DecodeFrontier rebuilds a frontier of size leaves from Encode's output.
func DecodeFrontier(size uint64, hashes []string) (Frontier, error) {
	if len(hashes) != bits.OnesCount64(size) {
		return Frontier{}, fmt.Errorf("frontier of a %d-leaf tree needs %d hashes, has %d", size, bits.OnesCount64(size), len(hashes))
	}
	f := Frontier{Size: size, Hashes: make([]tlog.Hash, len(hashes))}
	for i, s := range hashes {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return Frontier{}, fmt.Errorf("frontier hash %d is not a base64 SHA-256", i)
		}
		copy(f.Hashes[i][:], b)
	}
	return f, nil
}
