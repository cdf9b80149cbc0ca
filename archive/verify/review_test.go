package verify

// Independent review: attacks on the claimed guarantees that the attacker tests do not cover. A failing
// test names a hole ("HOLE: ..."); a passing one pins a defence that held.

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/internal/archivetest"
)

// ---- stolen epoch key ----

// TestReviewStolenKey: the attacker read the current epoch key from the daemon's memory (not host.key).
func TestReviewStolenKey(t *testing.T) {
	fx := newAttackFixture(t, true) // not parallel: it sets testhook.EpochKey
	epochEnd := func(start int64) int64 { return start + int64(attackEpoch+archive.EpochSlack) }

	// A CLOCK leaf at time 0, signed inside the stolen key's epoch (0 is before its end), sets lastTime to
	// 0, which silence() takes for "no leaf yet": the hour between the kill and the restart is not
	// reported. Without the CLOCK leaf the same restart is a silence (TestAttackStolenEpochKey).
	t.Run("clock-leaf-at-time-zero-hides-downtime", func(t *testing.T) {
		t.Parallel()
		dir, f, start := fx.stolenAt(t)
		last := f.now
		if last > epochEnd(start) {
			t.Fatalf("the fixture's last leaf is after the epoch")
		}
		f.control(archive.LeafClock, 0, archive.Clock{StepNanos: 0})
		f.block(f.key)
		f.save()
		tRestart(t, dir, archivetest.FastOptions(fx.id), last+int64(time.Hour))
		r, err := Dir(dir, fx.pinned())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Verify: %s%s", r.Status, problemText(r))
		if !slices.Contains(codeSet(r), CodeSilence) {
			t.Errorf("HOLE: an hour between the daemon's kill and its restart is not reported (status %s): a CLOCK leaf at time 0 signed "+
				"with the stolen epoch key inside its epoch resets lastTime to 0, the 'nothing yet' sentinel of verify.go silence()", r.Status)
		}
	})

	// The stolen key signs, inside its epoch, a KEY leaf naming a key of the attacker's own; that key does
	// the same inside its epoch, and so on. Each key signs only inside its own epoch, so the epoch check
	// never fires, and the daemon's downtime is covered by heartbeats that all count as verified.
	t.Run("chained-own-keys-outlive-the-epoch", func(t *testing.T) {
		t.Parallel()
		dir, f, start := fx.stolenAt(t)
		genuine := f.tree.Size
		at := f.now
		var inside uint64
		end := at + int64(2*time.Minute)
		var late [][]byte
		for at < end {
			at += 100 * ms
			f.control(archive.LeafHeartbeat, at, archive.Heartbeat{})
			f.block(f.key)
			at += 50 * ms
			f.rekey(at, f.key) // signed by the key in charge: the thief's own after the first
			f.flush()
			if at <= epochEnd(start) {
				inside += 2
			} else {
				late = append(late, f.signed[len(f.signed)-2:]...)
			}
		}
		f.save()
		tRestart(t, dir, archivetest.FastOptions(fx.id), at+int64(time.Second))
		r, err := Dir(dir, fx.pinned())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Verify: %s, %d of %d verified%s", r.Status, r.Verified, r.Leaves, problemText(r))
		if r.Status == Pass || r.Verified > genuine+inside+2 /* the restart's START block */ {
			t.Errorf("HOLE: %s with %d of %d leaves verified: a stolen epoch key signed two minutes of heartbeats past its epoch (%d leaves "+
				"after %s) by introducing keys of the attacker's own with KEY leaves it signed inside its epoch; a KEY needs only the "+
				"previous epoch key (verify.go checkpointEntry / adoptIntro), so one stolen key signs forever",
				r.Status, r.Verified, r.Leaves, r.Verified-genuine-inside, fmtTime(epochEnd(start)))
		}
		noForgedLatest(t, dir, fx.pinned(), late)
	})
}

// ---- CPU per hostile block ----

// garbageSig is a checkpoint note for size leaves (any root) with one signature line that names v's key
// (name and hash are public) but whose signature is garbage: note.Open runs an Ed25519 verification
// for it before it fails.
func garbageSig(origin string, hash uint32, size uint64) []byte {
	body := fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(make([]byte, 32)))
	sig := binary.BigEndian.AppendUint32(nil, hash)
	sig = append(sig, make([]byte, 64)...)
	return []byte(body + "\n\u2014 " + origin + " " + base64.StdEncoding.EncodeToString(sig) + "\n")
}

// TestReviewBlockSignatureCPU: a block of KEY leaves, each followed by a checkpoint carrying a garbage
// signature line under the pinned identity key's name and hash. Without any key, after a header whose
// chain is not established, every such checkpoint is tried under the identity key (the late re-key
// path) and fails silently (unverified, not a tampering problem), so maxBlockProblems never stops the
// block: one block costs ~60000 Ed25519 verifications.
func TestReviewBlockSignatureCPU(t *testing.T) {
	id, pub := archivetest.Keys(t, hostileOrigin)
	k, err := newEpochKey(hostileOrigin, 1)
	if err != nil {
		t.Fatal(err)
	}
	var ents []byte
	const pairs = 50000
	for i := uint64(0); i < pairs; i++ {
		ents = archive.AppendEntry(ents, archive.EntryLeaf, archive.AppendControlLeaf(nil, archive.LeafKey, 1_700_000_000e9, archive.Key{EpochKey: k.vkey, Epoch: 1}))
		ents = archive.AppendEntry(ents, archive.EntryCheckpoint, garbageSig(hostileOrigin, id.Signer.KeyHash(), i+1))
	}
	if len(ents) > archive.MaxBlock {
		t.Fatalf("block of %d bytes", len(ents))
	}
	seg := archive.AppendBlock(hostileHeader(t), ents)
	t.Logf("hostile segment: %d bytes on disk, %d decompressed", len(seg), len(ents))
	s := NewStream(Options{Key: pub, Now: time.Unix(1_700_000_000, 0)})
	begin := time.Now()
	u, err := s.Write(archive.SegmentName(0, time.Unix(1_700_000_000, 0)), 0, seg)
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	tampered := 0
	for _, p := range u.Problems {
		if p.Class == Tampered {
			tampered++
		}
	}
	t.Logf("one block took %s, %d problems (%d tampering)", took.Round(time.Millisecond), len(u.Problems), tampered)
	if took > time.Second {
		t.Errorf("HOLE: one hostile block of %d KiB (no key needed) cost %s of CPU: its %d checkpoints each ran an Ed25519 verification "+
			"under the identity key (verify.go checkpointEntry, late re-key retry) and failed without a tampering problem, so the "+
			"16-problem bound per block never applies; a hostile enrolled host makes the store spend this per frame",
			len(seg)>>10, took.Round(time.Millisecond), pairs)
	}
}

// ---- follower cursors ----

// TestReviewFollowerHostileCursor: a cursor file edited by root (or damaged) must be refused by
// LoadCursor or lead to the leaves at its position, not to a follower that fails forever or mislabels
// leaves.
func TestReviewFollowerHostileCursor(t *testing.T) {
	id, _ := archivetest.Keys(t, "follow.example")
	dir := filepath.Join(t.TempDir(), "arch")
	archivetest.Write(t, dir, archivetest.FastOptions(id), 20, 0)
	seg := filepath.Base(archivetest.SegFiles(t, dir)[0])

	t.Run("negative-offset", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "cursor")
		if err := os.WriteFile(path, []byte(fmt.Sprintf(`{"segment":%q,"offset":-100,"first":0,"index":0}`, seg)), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := archive.LoadCursor(path)
		if err != nil {
			return // refused: fine
		}
		f := archive.NewFollower(dir, nil, c)
		defer f.Close()
		var errs []error
		for i := 0; i < 3; i++ {
			_, _, err := f.Next(context.Background())
			if err == nil {
				return
			}
			errs = append(errs, err)
			if errors.Is(err, archive.ErrCorrupt) {
				continue
			}
		}
		t.Errorf("HOLE (low): LoadCursor accepts offset -100 and the follower fails on every Next without moving on: %v", errs)
	})

	t.Run("wrong-first-index", func(t *testing.T) {
		// The cursor names the first leaf block (after the header) but a first index 1000 too high.
		data, err := os.ReadFile(filepath.Join(dir, seg))
		if err != nil {
			t.Fatal(err)
		}
		offs := archivetest.BlockOffsets(data)
		c := archive.Cursor{Segment: seg, Offset: int64(offs[1]), First: 1000, Index: 1000}
		f := archive.NewFollower(dir, nil, c)
		defer f.Close()
		_, i, err := f.Next(context.Background())
		if err == nil && i == 1000 {
			t.Errorf("HOLE (low): a cursor whose first index does not match its block makes the follower return leaf 0 as leaf %d, "+
				"without an error (follow.go block: f.pIdx = f.cur.First); receivers deduplicate by (origin, index)", i)
		}
	})
}

// ---- segment names ----

// TestReviewSegmentNameCanonical: a segment's file name is seg-<first leaf, 20 digits>-<UTC start>.aseg.
// Sorting names orders segments only when each index has one spelling: a name with a sign or a space in
// the index field (Sscanf skips leading spaces) sorts before every canonical name whatever its index.
func TestReviewSegmentNameCanonical(t *testing.T) {
	for _, name := range []string{
		"seg-+0000000000000000500-20240101T000000Z.aseg",
		"seg- 0000000000000000500-20240101T000000Z.aseg",
	} {
		if first, ok := archive.ParseSegmentName(name); ok {
			t.Errorf("HOLE (low): %q is taken as the name of a segment starting at leaf %d (verify.go parseSegmentName: Sscanf %%020d skips leading spaces "+
				"where a digit must be), and it sorts before seg-00000000000000000001-…", name, first)
		}
	}
	if _, ok := archive.ParseSegmentName("seg-00000000000000000500-20240101T000000Z.aseg"); !ok {
		t.Error("a canonical name is refused")
	}
}

// ---- defences that held ----

// TestReviewLateKeyByStolenKey (now: every KEY must be signed by the identity key, so a stolen key's KEY is a signature problem): the identity-key retry for a late KEY does not let a stolen epoch key sign
// a KEY after its epoch: the KEY checkpoint verifies under the stolen key, so the epoch check applies.
func TestReviewLateKeyByStolenKey(t *testing.T) {
	fx := newAttackFixture(t, true)
	dir, f, start := fx.stolenAt(t)
	genuine := f.tree.Size
	at := start + int64(attackEpoch+archive.EpochSlack) + int64(time.Second)
	if at-f.now > int64(4*time.Second) {
		t.Fatalf("fixture: last leaf %s before the KEY", time.Duration(at-f.now))
	}
	f.rekey(at, f.key)
	f.flush()
	for i := 0; i < 3; i++ {
		at += 100 * ms
		f.control(archive.LeafHeartbeat, at, archive.Heartbeat{})
		f.block(f.key)
	}
	f.save()
	r, err := Dir(dir, fx.pinned())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != Tampered || !slices.Contains(codeSet(r), CodeSignature) || r.Verified != genuine {
		t.Errorf("a late KEY signed by the stolen key: %s, %d verified (%d genuine)%s", r.Status, r.Verified, genuine, problemText(r))
	}
	noForgedLatest(t, dir, fx.pinned(), f.signed)
}
