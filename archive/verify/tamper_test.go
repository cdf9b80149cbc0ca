package verify

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/internal/testhook"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/internal/archivetest"
	"golang.org/x/mod/sumdb/note"
)

// tamperFixture holds the archives the tamper cases start from. Each case works on its own copy.
type tamperFixture struct {
	id   *archive.Identity
	pub  note.Verifier
	fast string      // one clean run with fast options: several sealed segments, many epochs
	keys *stolenKeys // every epoch key of fast, as an attacker reading the daemon's memory saw them
	// other is another host's archive (origin host-b.example), several segments.
	other string
	// twin is another history written with fast's identity key (a forged or restored archive).
	twin string
}

func newTamperFixture(t *testing.T) *tamperFixture {
	fx := &tamperFixture{}
	fx.id, fx.pub = archivetest.Keys(t, "host-a.example")
	fx.keys = stealEpochKeys(t)
	fx.fast = filepath.Join(t.TempDir(), "fast")
	archivetest.Write(t, fx.fast, archivetest.FastOptions(fx.id), 250, 2500*time.Millisecond)
	testhook.EpochKey = nil
	otherID, _ := archivetest.Keys(t, "host-b.example")
	fx.other = filepath.Join(t.TempDir(), "other")
	archivetest.Write(t, fx.other, archivetest.FastOptions(otherID), 100, 1500*time.Millisecond)
	fx.twin = filepath.Join(t.TempDir(), "twin")
	archivetest.Write(t, fx.twin, writer.Options{Identity: fx.id}, 5, 0)

	r, err := Dir(fx.fast, Options{Key: fx.pub})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Pass {
		t.Fatalf("the untouched archive does not pass: %+v", r.Problems)
	}
	if len(r.Segments) < 4 {
		t.Fatalf("the fixture has %d segments, the cases need at least 4", len(r.Segments))
	}
	return fx
}

// tamperCase edits a copy of the fast archive in dir and returns the options to verify it with (and the
// directory to verify, when it is not dir).
type tamperCase struct {
	name   string
	code   string   // must be among the report's problems
	status string   // the report's status
	only   []string // when set, the only codes the report may hold (no cascade of misleading problems)
	tamper func(t *testing.T, fx *tamperFixture, dir string) (string, Options)
	check  func(t *testing.T, r *Report) // optional further checks
}

func TestTamper(t *testing.T) {
	fx := newTamperFixture(t)
	pinned := func(dir string) (string, Options) { return dir, Options{Key: fx.pub} }
	// editSeg edits segment n of dir (in name order) and saves it.
	editSeg := func(t *testing.T, dir string, n int, edit func(s *tSeg)) {
		t.Helper()
		files := archivetest.SegFiles(t, dir)
		if n < 0 {
			n += len(files)
		}
		s := loadSeg(t, files[n])
		edit(s)
		s.save(t)
	}
	// editHeader edits the header of segment n.
	editHeader := func(t *testing.T, dir string, n int, edit func(h *archive.SegmentHeader)) {
		t.Helper()
		editSeg(t, dir, n, func(s *tSeg) {
			h := s.header(t)
			edit(&h)
			s.setHeader(t, h)
		})
	}
	// eventLeaf returns the position of the first EVENT leaf of s that is followed by another EVENT leaf.
	eventLeaf := func(t *testing.T, s *tSeg) int {
		t.Helper()
		pos, _ := s.leaves(t)
		for i := 0; i+1 < len(pos); i++ {
			if s.kind(pos[i]) == archive.LeafEvent && pos[i+1] == pos[i]+1 && s.kind(pos[i+1]) == archive.LeafEvent {
				return pos[i]
			}
		}
		t.Fatalf("%s has no two adjacent EVENT leaves", s.path)
		return 0
	}

	cases := []tamperCase{
		{name: "untouched", status: Pass, only: []string{},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) { return pinned(dir) },
			check: func(t *testing.T, r *Report) {
				if len(r.Problems) != 0 || r.Verified != r.Leaves || r.Unsigned != nil {
					t.Errorf("untouched archive: %d problems, %d of %d leaves verified, tail %+v", len(r.Problems), r.Verified, r.Leaves, r.Unsigned)
				}
			}},

		// 1. One byte of a leaf changed. Re-encoded, checksums and compression are valid: only the signed
		// root can tell. Flipped in place, the block's checksum tells.
		{name: "leaf-byte-reencoded", code: "root", status: Tampered, only: []string{"root"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editSeg(t, dir, 1, func(s *tSeg) {
					p := s.ents[eventLeaf(t, s)].p
					p[len(p)-1] ^= 0x01 // the last byte of the last record's text: the leaf still decodes
				})
				return pinned(dir)
			}},
		{name: "leaf-byte-raw", code: "damaged", status: Tampered, only: []string{"damaged"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				f := archivetest.SegFiles(t, dir)[1]
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				offs := archivetest.BlockOffsets(data)
				if len(offs) < 3 {
					t.Fatalf("%s has %d blocks", f, len(offs))
				}
				data[offs[1]+archive.BlockHeaderSize+(offs[2]-offs[1]-archive.BlockHeaderSize)/2] ^= 0x40
				if err := os.WriteFile(f, data, 0o600); err != nil {
					t.Fatal(err)
				}
				return pinned(dir)
			}},

		// 2. A leaf removed: every checkpoint after it stands one leaf too late.
		{name: "delete-leaf", code: "checkpoint", status: Tampered, only: []string{"checkpoint", "seal", "serial-gap"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editSeg(t, dir, 1, func(s *tSeg) { s.remove(eventLeaf(t, s)) })
				return pinned(dir)
			}},

		// 3. Two leaves swapped: same count, another root.
		{name: "swap-leaves", code: "root", status: Tampered, only: []string{"root"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editSeg(t, dir, 1, func(s *tSeg) {
					k := eventLeaf(t, s)
					s.ents[k].p, s.ents[k+1].p = s.ents[k+1].p, s.ents[k].p
				})
				return pinned(dir)
			}},

		// 4. The tail of the last segment cut: inside a block (torn), or exactly at a block boundary so
		// that the STOP and the seal are gone.
		{name: "truncate-few-bytes", code: "torn-tail", status: Incomplete, only: []string{"torn-tail", "no-stop"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				f := archivetest.SegFiles(t, dir)
				last := f[len(f)-1]
				st, err := os.Stat(last)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(last, st.Size()-3); err != nil {
					t.Fatal(err)
				}
				return pinned(dir)
			}},
		{name: "truncate-last-block", code: "no-stop", status: Incomplete, only: []string{"no-stop"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				f := archivetest.SegFiles(t, dir)
				cutLastBlock(t, f[len(f)-1])
				return pinned(dir)
			}},

		// 5, 6. Whole segments deleted.
		{name: "delete-middle-segment", code: "missing-segment", status: Incomplete, only: []string{"missing-segment"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				if err := os.Remove(archivetest.SegFiles(t, dir)[1]); err != nil {
					t.Fatal(err)
				}
				return pinned(dir)
			}},
		{name: "delete-middle-segment-short-grace", code: "missing-segment", status: Incomplete, only: []string{"missing-segment"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				// The deleted 0.7 s are longer than heartbeat + grace: the gap is the missing segment,
				// not also a silence.
				if err := os.Remove(archivetest.SegFiles(t, dir)[1]); err != nil {
					t.Fatal(err)
				}
				return dir, Options{Key: fx.pub, Grace: 300 * time.Millisecond}
			}},
		{name: "delete-oldest-segment", code: "missing-start", status: Incomplete, only: []string{"missing-start"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				// The run's START goes with it: its STOP is then no evidence of forgery.
				if err := os.Remove(archivetest.SegFiles(t, dir)[0]); err != nil {
					t.Fatal(err)
				}
				return pinned(dir)
			}},
		{name: "delete-newest-segment", code: "missing-segment", status: Incomplete, only: []string{"missing-segment", "no-stop"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				f := archivetest.SegFiles(t, dir)
				if err := os.Remove(f[len(f)-1]); err != nil {
					t.Fatal(err)
				}
				return pinned(dir)
			}},

		{name: "delete-segment-with-run-end", code: "missing-segment", status: Incomplete, only: []string{"missing-segment"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				// A second run follows; the segment holding the first run's STOP goes. Whether that run
				// stopped or crashed is then unknown, which is no reason to call the next START forged.
				archivetest.Write(t, dir, writer.Options{Identity: fx.id}, 5, 0)
				f := archivetest.SegFiles(t, dir)
				if err := os.Remove(f[len(f)-2]); err != nil {
					t.Fatal(err)
				}
				return pinned(dir)
			},
			check: func(t *testing.T, r *Report) {
				if len(r.Runs) != 2 || r.Runs[0].Ended != "unknown" || r.Runs[1].Ended != "stopped" {
					t.Errorf("runs %+v", r.Runs)
				}
			}},
		{name: "cut-middle-segment-tail", code: "missing-segment", status: Incomplete, only: []string{"missing-segment"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				cutLastBlock(t, archivetest.SegFiles(t, dir)[1])
				return pinned(dir)
			}},

		// 7. Another host's segment spliced in (pinned key, and without one).
		{name: "splice-foreign-segment", code: "origin", status: Tampered, only: []string{"origin"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				spliceForeign(t, fx, dir)
				return pinned(dir)
			}},
		{name: "splice-foreign-segment-unpinned", code: "origin", status: Tampered, only: []string{"origin"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				spliceForeign(t, fx, dir)
				return dir, Options{}
			}},

		// 8. An older segment copied under a newer name.
		{name: "replay-old-segment", code: "replay", status: Tampered, only: []string{"replay"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				f := archivetest.SegFiles(t, dir)
				archivetest.CopyFile(t, f[1], filepath.Join(dir, archive.SegmentName(1<<40, time.Now().Add(time.Hour))))
				return pinned(dir)
			}},

		// 9. History rewritten with a stolen later epoch key: the checkpoints of the earlier epochs cannot
		// be signed again, so the rewrite shows as re-signed checkpoints, and only there.
		stolenKeyCase(),

		// 10. Checkpoints removed.
		{name: "drop-checkpoint-sealed", code: "missing-checkpoint", status: Tampered, only: []string{"missing-checkpoint", "unsigned"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editSeg(t, dir, 1, func(s *tSeg) {
					for k := 1; k < len(s.ents); k++ {
						prev := s.ents[k-1]
						if s.ents[k].typ == archive.EntryCheckpoint && prev.typ == archive.EntryLeaf && !tIsIntro(s.kind(k-1)) &&
							s.kind(k-1) != archive.LeafSeal {
							s.remove(k)
							return
						}
					}
					t.Fatalf("no plain checkpoint in %s", s.path)
				})
				return pinned(dir)
			}},
		{name: "drop-checkpoint-after-key", code: "unsigned-key", status: Tampered, only: []string{"unsigned-key", "missing-checkpoint", "unsigned"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editSeg(t, dir, 1, func(s *tSeg) {
					for k := 1; k+1 < len(s.ents); k++ {
						if s.ents[k].typ == archive.EntryLeaf && s.kind(k) == archive.LeafKey && s.ents[k+1].typ == archive.EntryCheckpoint {
							s.remove(k + 1)
							return
						}
					}
					t.Fatalf("no KEY leaf in %s", s.path)
				})
				return pinned(dir)
			}},

		// 11. Rolled back to an earlier copy, or replaced by another history of the same identity.
		{name: "rollback", code: "rollback", status: Tampered, only: []string{"rollback"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				// dir is the state at T1; a second run continues a copy, which a verifier witnesses.
				later := archivetest.CopyDir(t, dir)
				archivetest.Write(t, later, writer.Options{Identity: fx.id}, 5, 0)
				r, err := Dir(later, Options{Key: fx.pub})
				if err != nil || r.Status != Pass {
					t.Fatalf("the continued archive: %v %+v", err, r)
				}
				return dir, Options{Key: fx.pub, Witness: []byte(r.Latest)}
			}},
		{name: "fork", code: "fork", status: Tampered, only: []string{"fork"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				// The witness saw twin, a history signed by the same identity key; dir is another one.
				r, err := Dir(fx.twin, Options{Key: fx.pub})
				if err != nil || r.Status != Pass {
					t.Fatalf("twin: %v %+v", err, r)
				}
				return dir, Options{Key: fx.pub, Witness: []byte(r.Latest)}
			}},

		// 12. Segment headers altered.
		{name: "header-first-index", code: "segment-header", status: Tampered, only: []string{"segment-header", "missing-segment"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editHeader(t, dir, 2, func(h *archive.SegmentHeader) { h.FirstIndex++ })
				return pinned(dir)
			}},
		{name: "header-frontier", code: "segment-header", status: Tampered, only: []string{"segment-header"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editHeader(t, dir, 2, func(h *archive.SegmentHeader) {
					f, err := archive.DecodeFrontier(h.FirstIndex, h.Frontier)
					if err != nil {
						t.Fatal(err)
					}
					f.Hashes[0][0] ^= 1
					h.Frontier = f.Encode()
				})
				return pinned(dir)
			}},
		{name: "header-prev-checkpoint", code: "segment-link", status: Tampered, only: []string{"segment-link"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				prev := archivetest.SegFiles(t, dir)[1]
				h1 := loadSeg(t, prev).header(t)
				editHeader(t, dir, 2, func(h *archive.SegmentHeader) { h.PrevCheckpoint = h1.PrevCheckpoint })
				return pinned(dir)
			}},
		{name: "header-epoch-key", code: "segment-header", status: Tampered, only: []string{"segment-header"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				_, vkey, err := note.GenerateKey(rand.Reader, fx.pub.Name())
				if err != nil {
					t.Fatal(err)
				}
				editHeader(t, dir, 2, func(h *archive.SegmentHeader) { h.EpochKey = vkey })
				return pinned(dir)
			}},
		{name: "header-segment-number", code: "seal", status: Tampered, only: []string{"segment-header", "seal"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editHeader(t, dir, 2, func(h *archive.SegmentHeader) { h.Segment += 7 })
				return pinned(dir)
			}},
		{name: "header-prev-kernel-times", code: "segment-header", status: Tampered, only: []string{"segment-header"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				// Without the span, search takes the segment before for one without events and skips it.
				editHeader(t, dir, 2, func(h *archive.SegmentHeader) {
					if len(h.PrevKernelTimes) != 2 {
						t.Fatalf("header has kernel times %v", h.PrevKernelTimes)
					}
					h.PrevKernelTimes = nil
				})
				return pinned(dir)
			}},
		{name: "header-origin", code: "origin", status: Tampered, only: []string{"origin", "missing-segment"},
			tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
				editHeader(t, dir, 2, func(h *archive.SegmentHeader) { h.Origin = "host-b.example" })
				return pinned(dir)
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir, opts := c.tamper(t, fx, archivetest.CopyDir(t, fx.fast))
			r, err := Dir(dir, opts)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			codes := map[string]int{}
			var text strings.Builder
			for _, p := range r.Problems {
				codes[p.Code]++
				at := ""
				if p.Index != nil {
					at = fmt.Sprintf(" at leaf %d", *p.Index)
				}
				fmt.Fprintf(&text, "\n  %s [%s] %s%s: %s", strings.ToLower(p.Class), p.Code, p.Segment, at, p.Message)
			}
			t.Logf("%s: %d leaves, %d verified, codes %v%s", r.Status, r.Leaves, r.Verified, codes, text.String())
			if r.Status != c.status {
				t.Errorf("status %s, want %s", r.Status, c.status)
			}
			if c.code != "" && codes[c.code] == 0 {
				t.Errorf("no %q problem among %v", c.code, codes)
			}
			if c.only != nil {
				for code := range codes {
					// Whatever breaks the chain leaves the leaves after it unverified until the next START.
					if !slices.Contains(c.only, code) && (code != CodeUnverified || c.status == Pass) {
						t.Errorf("problem %q: only %v are consequences of this tampering", code, c.only)
					}
				}
			}
			if c.check != nil {
				c.check(t, r)
			}
			// A store checks the same archive as it arrives: the same verdict and problems.
			if sr := streamVerify(t, dir, opts, mrand.New(mrand.NewPCG(1, 2))); sr.Status != r.Status ||
				fmt.Sprint(problemCodes(sr)) != fmt.Sprint(problemCodes(r)) {
				t.Errorf("streamed: %s %v; Verify: %s %v", sr.Status, problemCodes(sr), r.Status, problemCodes(r))
			}
		})
	}
}

func tIsIntro(k archive.LeafKind) bool { return k == archive.LeafStart || k == archive.LeafKey }

// spliceForeign copies a middle segment of another host's archive into dir.
func spliceForeign(t *testing.T, fx *tamperFixture, dir string) {
	t.Helper()
	f := archivetest.SegFiles(t, fx.other)
	if len(f) < 2 {
		t.Fatalf("the other host's archive has %d segments", len(f))
	}
	h, err := archive.ReadSegmentHeader(f[1])
	if err != nil {
		t.Fatal(err)
	}
	archivetest.CopyFile(t, f[1], filepath.Join(dir, fmt.Sprintf("seg-%020d-99991231T235959Z.aseg", h.FirstIndex)))
}

// stolenKeyCase: the attacker holds the newest epoch key (read from the daemon's memory), alters an EVENT
// leaf of the first segment, recomputes every root and header after it, and signs every checkpoint after
// the altered leaf with the stolen key. The checkpoints of the stolen key's own epoch then verify (that
// key may sign them), but the ones before it must be signed by keys that were erased: each of those is
// reported as re-signed, and nothing before the stolen epoch is accepted.
func stolenKeyCase() tamperCase {
	var keyLeaf uint64 // index of the KEY leaf introducing the stolen key
	return tamperCase{name: "resign-with-stolen-key", code: "signature", status: Tampered, only: []string{"signature"},
		tamper: func(t *testing.T, fx *tamperFixture, dir string) (string, Options) {
			a := loadArchive(t, dir)
			var stolen string
			for _, s := range a.segs {
				pos, index := s.leaves(t)
				for i, k := range pos {
					if s.kind(k) == archive.LeafKey {
						var key archive.Key
						if err := json.Unmarshal(s.ents[k].p[9:], &key); err != nil {
							t.Fatal(err)
						}
						stolen, keyLeaf = key.EpochKey, index[i]
					}
				}
			}
			signer := fx.keys.signer(t, stolen)
			s := a.segs[0]
			pos, index := s.leaves(t)
			var altered uint64
			for i, k := range pos {
				if s.kind(k) == archive.LeafEvent {
					p := s.ents[k].p
					p[len(p)-1] ^= 0x01
					altered = index[i]
					break
				}
			}
			if altered == 0 || altered >= keyLeaf {
				t.Fatalf("altered leaf %d, stolen key introduced at %d", altered, keyLeaf)
			}
			a.rechain(t, altered, func(archive.Checkpoint) note.Signer { return signer })
			a.save(t)
			t.Logf("altered leaf %d, stolen epoch key introduced by the KEY leaf %d", altered, keyLeaf)
			return dir, Options{Key: fx.pub}
		},
		check: func(t *testing.T, r *Report) {
			for _, p := range r.Problems {
				switch {
				case p.Code == "root":
					t.Errorf("root problem: the re-signed roots are consistent, only signatures may fail: %s", p.Message)
				case p.Code == "signature" && (p.Index == nil || *p.Index > keyLeaf):
					t.Errorf("signature problem after the stolen epoch began (leaf %d): %s", keyLeaf, p.Message)
				}
			}
		}}
}

// cutLastBlock truncates the segment at path exactly before its last block.
func cutLastBlock(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs := archivetest.BlockOffsets(data)
	if err := os.Truncate(path, int64(offs[len(offs)-1])); err != nil {
		t.Fatal(err)
	}
}
