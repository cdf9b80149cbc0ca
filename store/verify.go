package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
)

// RetentionReader reads back the retention lock of a sealed segment that an Uploader copied to object
// storage (s3lock.Store implements both).
type RetentionReader interface {
	// Retention returns the retention mode of the current version of the segment file name of host (the
	// area's directory name: its origin path-escaped) — "COMPLIANCE", "GOVERNANCE", or "" when the
	// object has none — and its retain-until date, or an error when they cannot be read (the object is
	// missing, say).
	Retention(ctx context.Context, host, name string) (mode string, until time.Time, err error)
}

// VerifyDirOptions configures VerifyDir.
type VerifyDirOptions struct {
	// ObjectLock, when set, is where every sealed segment must also be, under COMPLIANCE retention that
	// has not run out; the retention is read back for each segment, not assumed.
	ObjectLock RetentionReader
}

// Values of HostReport.Immutable.
const (
	ImmutableYes         = "yes"         // every sealed segment has FS_IMMUTABLE_FL
	ImmutablePartial     = "partial"     // some sealed segment has not (HostReport.MutableSealed)
	ImmutableUnsupported = "unsupported" // the flag could not be read: the filesystem does not support it
)

// HostReport is VerifyDir's verdict on one host's area of the store.
type HostReport struct {
	Host   string         `json:"host"`   // the origin
	Report *verify.Report `json:"report"` // verify.Dir's report on the area; PASS for an area without segments
	// Receipts counts the receipts signed by the store key, BadReceipts those that are not.
	Receipts    int `json:"receipts"`
	BadReceipts int `json:"bad_receipts"`
	// MutableSealed lists the sealed segments without the immutable flag.
	MutableSealed []string `json:"mutable_sealed,omitempty"`
	Evidence      int      `json:"evidence"`  // refused submissions kept under evidence/
	Immutable     string   `json:"immutable"` // ImmutableYes, ImmutablePartial, ImmutableUnsupported; "" without segments
	// NotLocked describes each sealed segment that is not in the object store under COMPLIANCE retention
	// until after now (VerifyDirOptions.ObjectLock): "<file> (<mode> until <RFC 3339>, <error>)".
	NotLocked []string `json:"not_locked,omitempty"`
}

// Status is the host's verdict: its copy's status (verify.Pass, verify.Incomplete, verify.Tampered),
// but verify.Tampered also when a receipt is not signed by the store key or a sealed segment is not
// under object lock. A sealed segment without the immutable flag does not change it.
func (h *HostReport) Status() string {
	if h.BadReceipts > 0 || len(h.NotLocked) > 0 {
		return verify.Tampered
	}
	return h.Report.Status
}

// DirReport is VerifyDir's verdict on a store directory.
type DirReport struct {
	Hosts []HostReport // one per host area, in the order of the areas' directory names
}

// Status is the worst of the hosts' statuses: verify.Tampered, verify.Incomplete, or verify.Pass
// (also for a store without hosts).
func (r *DirReport) Status() string {
	worst := verify.Pass
	for i := range r.Hosts {
		switch s := r.Hosts[i].Status(); {
		case s == verify.Tampered:
			return s
		case s == verify.Incomplete:
			worst = s
		}
	}
	return worst
}

// VerifyDir verifies the store directory dir host by host (docs/format.md, "Store directory"): each
// area's copy is verified like a host's archive (verify.Dir) under the identity key the host was
// enrolled with (host.pub), with the area's receipts, each of which must carry the store key's
// cosignature (store.pub); its sealed segments are checked for the immutable flag and, with
// opts.ObjectLock, for their retention in the object store; its evidence is counted. A problem found is
// in the report; an error means the store could not be verified at all (a key file, the hosts directory,
// receipts or a copy that cannot be read).
func VerifyDir(ctx context.Context, dir string, opts VerifyDirOptions) (*DirReport, error) {
	sk, err := receipt.LoadCosignVerifier(filepath.Join(dir, PubFile))
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(dir, HostsDir))
	if err != nil {
		return nil, err
	}
	rep := &DirReport{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		hr, err := verifyArea(ctx, filepath.Join(dir, HostsDir, e.Name()), e.Name(), sk, opts)
		if err != nil {
			return nil, err
		}
		rep.Hosts = append(rep.Hosts, *hr)
	}
	return rep, nil
}

// verifyArea verifies the host area hdir, whose directory name is name.
func verifyArea(ctx context.Context, hdir, name string, sk *receipt.CosignVerifier, opts VerifyDirOptions) (*HostReport, error) {
	origin, err := url.PathUnescape(name)
	if err != nil {
		origin = name
	}
	hk, _, err := archive.LoadVerifierKey(filepath.Join(hdir, HostKeyFile))
	if err != nil {
		return nil, err
	}
	hr := &HostReport{Host: origin}
	if segs, _ := filepath.Glob(filepath.Join(hdir, archive.SegmentPattern)); len(segs) == 0 {
		hr.Report = &verify.Report{Status: verify.Pass, Dir: hdir}
	} else {
		rs, bad, err := receipt.Read(filepath.Join(hdir, ReceiptsFile), sk)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		hr.Receipts, hr.BadReceipts = len(rs), bad
		r, err := verify.Dir(hdir, verify.Options{Key: hk, Receipts: rs})
		if err != nil {
			return nil, err
		}
		hr.Report = r
		hr.Immutable = ImmutableYes
		for _, s := range r.Segments {
			if !s.Sealed {
				continue
			}
			imm, err := IsImmutable(filepath.Join(hdir, s.File))
			switch {
			case err != nil:
				hr.Immutable = ImmutableUnsupported
			case !imm:
				hr.MutableSealed = append(hr.MutableSealed, s.File)
				hr.Immutable = ImmutablePartial
			}
			if opts.ObjectLock != nil {
				mode, until, err := opts.ObjectLock.Retention(ctx, name, s.File)
				if err != nil || mode != "COMPLIANCE" || !until.After(time.Now()) {
					hr.NotLocked = append(hr.NotLocked, fmt.Sprintf("%s (%s until %s, %v)", s.File, mode, until.Format(time.RFC3339), err))
				}
			}
		}
	}
	ev, _ := filepath.Glob(filepath.Join(hdir, EvidenceDir, "*.json"))
	hr.Evidence = len(ev)
	return hr, nil
}
