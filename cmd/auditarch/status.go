package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/elastic/go-libaudit/v2/rule"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/policy/freeze"
	"github.com/auditarch/auditarch/store"
)

// statusCmd: auditarch status [--json] [--config FILE] [--archive DIR] [--grace D] [--max-receipt-age D]
// [--max-lag N]. It gathers the facts (gatherStatus), builds the report from them alone (buildStatus, a
// pure function), prints it, and exits 3 when something needs attention.
func statusCmd(args []string, stdout io.Writer) error {
	fs := newFlags("status")
	asJSON := fs.Bool("json", false, "")
	configFile := fs.String("config", "", "")
	archiveDir := fs.String("archive", "", "")
	grace := fs.Duration("grace", archive.DefaultGrace, "")
	maxReceiptAge := fs.Duration("max-receipt-age", time.Minute, "")
	maxLag := fs.Uint64("max-lag", 100_000, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	cfg, err := loadConfig(*configFile)
	if err != nil {
		return err
	}
	if *archiveDir != "" {
		cfg.Archive = *archiveDir
	}
	if cfg.Archive == "" {
		return fmt.Errorf("%w: status needs --config FILE (with archive:) or --archive DIR", errUsage)
	}
	f := gatherStatus(cfg, time.Now())
	f.Limits = statusLimits{Heartbeat: cfg.HeartbeatInterval, Grace: *grace, MaxReceiptAge: *maxReceiptAge, MaxLag: *maxLag}
	rep := buildStatus(f)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.WriteText(stdout)
	}
	if len(rep.Attention) > 0 {
		return &exitError{code: 3, err: fmt.Errorf("status: %s", plural(len(rep.Attention), "thing needs", "things need")+" attention")}
	}
	return nil
}

// statusFacts is everything a status report is built from. gatherStatus reads it from the machine;
// tests write it by hand.
type statusFacts struct {
	Now     time.Time
	Archive string
	Limits  statusLimits

	// The daemon: the process holding the archive's lock, and the START leaf of the archive's newest run.
	Running   bool
	PID       int
	Start     *archive.Start // nil: none found
	StartTime time.Time
	DaemonErr string

	Kernel    *libaudit.AuditStatus // nil: unreadable (KernelErr)
	KernelErr string
	// KernelRules are the kernel's rules as auditctl -l prints them (the daemon's own exclusion rule
	// left out), ConfiguredRules those the configuration sets (rules.Set.Rules).
	KernelRules, ConfiguredRules []string
	RulesErr                     string

	Checkpoint    *checkpointFact // nil: none (CheckpointErr)
	CheckpointErr string

	Receipt    *receiptFact // nil: none (ReceiptErr)
	ReceiptErr string

	Consumers    []consumerFact
	ConsumersErr string

	ProtectMode string
	Pins        string
	Pinned      []string // what the pins directory holds
	Frozen      []freeze.Frozen
	FrozenErr   string
}

// statusLimits say when something needs attention.
type statusLimits struct {
	Heartbeat     time.Duration // the writer's heartbeat interval: checkpoints come at least this often
	Grace         time.Duration // a checkpoint older than Heartbeat+Grace needs attention
	MaxReceiptAge time.Duration // a newest receipt older than this, with leaves not covered, needs attention
	MaxLag        uint64        // a consumer more leaves behind than this needs attention
}

type checkpointFact struct {
	Size    uint64
	Time    time.Time
	Segment string
}

type receiptFact struct {
	Size     uint64
	Time     time.Time
	Verified bool // its cosignature was checked against the store key
}

type consumerFact struct {
	Name  string // sink NAME, or the cursor file's name
	Index uint64 // the next leaf it will take
}

// statusReport is what status prints, and its JSON form.
type statusReport struct {
	Time    time.Time `json:"time"`
	Archive string    `json:"archive"`
	Daemon  struct {
		Running bool      `json:"running"`
		PID     int       `json:"pid,omitempty"`
		Since   time.Time `json:"since,omitzero"`
		Version string    `json:"version,omitempty"`
		Error   string    `json:"error,omitempty"`
	} `json:"daemon"`
	Kernel struct {
		Enabled      *uint32 `json:"enabled,omitempty"`
		PID          uint32  `json:"pid"`
		Backlog      uint32  `json:"backlog"`
		BacklogLimit uint32  `json:"backlog_limit"`
		Lost         uint32  `json:"lost"`
		Error        string  `json:"error,omitempty"`
	} `json:"kernel"`
	Rules struct {
		Loaded           int    `json:"loaded"`
		LoadedDigest     string `json:"loaded_digest"`
		Configured       int    `json:"configured"`
		ConfiguredDigest string `json:"configured_digest"`
		Match            bool   `json:"match"`
		Error            string `json:"error,omitempty"`
	} `json:"rules"`
	Checkpoint struct {
		Index      uint64    `json:"index"`
		Time       time.Time `json:"time,omitzero"`
		AgeSeconds float64   `json:"age_seconds"`
		Segment    string    `json:"segment,omitempty"`
		Error      string    `json:"error,omitempty"`
	} `json:"checkpoint"`
	Store struct {
		ReceiptLeaves uint64    `json:"receipt_leaves"`
		ReceiptTime   time.Time `json:"receipt_time,omitzero"`
		AgeSeconds    float64   `json:"age_seconds"`
		LagLeaves     uint64    `json:"lag_leaves"`
		Verified      bool      `json:"verified"`
		Error         string    `json:"error,omitempty"`
	} `json:"store"`
	Consumers  []statusConsumer `json:"consumers"`
	Protection struct {
		Mode   string   `json:"mode"`
		Pins   string   `json:"pins"`
		Pinned []string `json:"pinned"`
	} `json:"protection"`
	Frozen    []statusFrozen `json:"frozen"`
	Attention []string       `json:"attention"`
}

type statusConsumer struct {
	Name      string `json:"name"`
	Index     uint64 `json:"index"`
	LagLeaves uint64 `json:"lag_leaves"`
}

type statusFrozen struct {
	Session int       `json:"session"`
	Since   time.Time `json:"since"`
	Pids    []int     `json:"pids"`
}

// rulesDigest is the first 12 hex digits of the SHA-256 of the rules, one a line.
func rulesDigest(lines []string) string {
	h := sha256.New()
	for _, l := range lines {
		fmt.Fprintln(h, l)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// buildStatus builds the report from the facts alone, and lists what needs attention.
func buildStatus(f statusFacts) statusReport {
	var r statusReport
	attention := func(format string, args ...any) { r.Attention = append(r.Attention, fmt.Sprintf(format, args...)) }
	r.Time, r.Archive = f.Now.UTC(), f.Archive
	d := &r.Daemon
	d.Running, d.Error = f.Running, f.DaemonErr
	if f.Running {
		d.PID = f.PID
		if f.Start != nil && f.Start.PID == f.PID {
			d.Since, d.Version = f.StartTime.UTC(), f.Start.Version
		}
	} else {
		attention("the daemon is not running: no process holds %s", filepath.Join(f.Archive, archive.LockFile))
	}
	k := &r.Kernel
	if f.Kernel == nil {
		k.Error = f.KernelErr
		attention("the kernel's audit status cannot be read: %s", f.KernelErr)
	} else {
		en := f.Kernel.Enabled
		k.Enabled, k.PID, k.Backlog, k.BacklogLimit, k.Lost = &en, f.Kernel.PID, f.Kernel.Backlog, f.Kernel.BacklogLimit, f.Kernel.Lost
		if en == 0 {
			attention("the kernel is not auditing (enabled 0)")
		}
		if f.Running && int(f.Kernel.PID) != f.PID {
			attention("the kernel's audit daemon is pid %d, not the daemon's pid %d", f.Kernel.PID, f.PID)
		}
	}
	ru := &r.Rules
	ru.Error = f.RulesErr
	if f.RulesErr == "" {
		ru.Loaded, ru.LoadedDigest = len(f.KernelRules), rulesDigest(f.KernelRules)
		ru.Configured, ru.ConfiguredDigest = len(f.ConfiguredRules), rulesDigest(f.ConfiguredRules)
		ru.Match = ru.LoadedDigest == ru.ConfiguredDigest
		if f.Running && !ru.Match {
			attention("the kernel's rules (%d, %s) are not the configured set (%d, %s)", ru.Loaded, ru.LoadedDigest, ru.Configured, ru.ConfiguredDigest)
		}
	} else if f.Kernel != nil {
		attention("the kernel's rules cannot be compared: %s", f.RulesErr)
	}
	ck := &r.Checkpoint
	var size uint64
	if f.Checkpoint == nil {
		ck.Error = f.CheckpointErr
		attention("no checkpoint in the archive: %s", f.CheckpointErr)
	} else {
		size = f.Checkpoint.Size
		ck.Index, ck.Time, ck.Segment = size, f.Checkpoint.Time.UTC(), f.Checkpoint.Segment
		age := f.Now.Sub(f.Checkpoint.Time)
		ck.AgeSeconds = seconds(age)
		if limit := f.Limits.Heartbeat + f.Limits.Grace; f.Running && age > limit {
			attention("the last checkpoint is %s old (heartbeat %s + grace %s)", age.Round(time.Second), f.Limits.Heartbeat, f.Limits.Grace)
		}
	}
	st := &r.Store
	if f.Receipt == nil {
		st.Error, st.LagLeaves = f.ReceiptErr, size
		attention("no store receipt in %s: %s", filepath.Join(f.Archive, receipt.ReceiptsFile), f.ReceiptErr)
	} else {
		st.ReceiptLeaves, st.ReceiptTime, st.Verified = f.Receipt.Size, f.Receipt.Time.UTC(), f.Receipt.Verified
		age := f.Now.Sub(f.Receipt.Time)
		st.AgeSeconds = seconds(age)
		st.LagLeaves = size - min(size, f.Receipt.Size)
		if st.LagLeaves > 0 && age > f.Limits.MaxReceiptAge {
			attention("the store's newest receipt is %s old and %d leaves behind the archive (limit %s)", age.Round(time.Second), st.LagLeaves, f.Limits.MaxReceiptAge)
		}
		if !f.Receipt.Verified {
			attention("the newest receipt's cosignature was not checked: no store key (store.key in the config)")
		}
	}
	r.Consumers = []statusConsumer{}
	for _, c := range f.Consumers {
		lag := size - min(size, c.Index)
		r.Consumers = append(r.Consumers, statusConsumer{Name: c.Name, Index: c.Index, LagLeaves: lag})
		if lag > f.Limits.MaxLag {
			attention("%s is %d leaves behind (limit %d)", c.Name, lag, f.Limits.MaxLag)
		}
	}
	if f.ConsumersErr != "" {
		attention("consumers' cursors: %s", f.ConsumersErr)
	}
	r.Protection.Mode, r.Protection.Pins, r.Protection.Pinned = f.ProtectMode, f.Pins, append([]string{}, f.Pinned...)
	r.Frozen = []statusFrozen{}
	for _, fr := range f.Frozen {
		r.Frozen = append(r.Frozen, statusFrozen{Session: fr.Session, Since: fr.At.UTC(), Pids: fr.Pids})
	}
	if len(f.Frozen) > 0 {
		attention("%s frozen after an attempt on the daemon (auditarch protect status; protect thaw SESSION)", plural(len(f.Frozen), "session", "sessions"))
	}
	if f.FrozenErr != "" {
		attention("frozen sessions cannot be listed: %s", f.FrozenErr)
	}
	if r.Attention == nil {
		r.Attention = []string{}
	}
	return r
}

// seconds is d in seconds, to the millisecond.
func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

// ago is a duration for a person: "3s", "2m5s", "4h0m".
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// WriteText prints the report as one screen for a person.
func (r *statusReport) WriteText(w io.Writer) {
	ts := func(t time.Time) string { return t.Format("2006-01-02 15:04:05Z") }
	now := r.Time
	d := r.Daemon
	switch {
	case d.Running && d.Version != "":
		fmt.Fprintf(w, "daemon      running, pid %d, since %s (%s ago), %s\n", d.PID, ts(d.Since), ago(now.Sub(d.Since)), d.Version)
	case d.Running:
		fmt.Fprintf(w, "daemon      running, pid %d\n", d.PID)
	default:
		fmt.Fprintf(w, "daemon      NOT RUNNING\n")
	}
	if d.Error != "" {
		fmt.Fprintf(w, "            (%s)\n", d.Error)
	}
	k := r.Kernel
	if k.Enabled == nil {
		fmt.Fprintf(w, "kernel      unreadable: %s\n", k.Error)
	} else {
		state := map[uint32]string{0: "NOT AUDITING (enabled 0)", 1: "auditing (enabled 1)", 2: "auditing, locked (enabled 2)"}[*k.Enabled]
		fmt.Fprintf(w, "kernel      %s, audit pid %d, backlog %d/%d, lost %d\n", state, k.PID, k.Backlog, k.BacklogLimit, k.Lost)
	}
	ru := r.Rules
	switch {
	case ru.Error != "":
		fmt.Fprintf(w, "rules       not compared: %s\n", ru.Error)
	case ru.Match:
		fmt.Fprintf(w, "rules       %d loaded, digest %s: the configured set\n", ru.Loaded, ru.LoadedDigest)
	default:
		fmt.Fprintf(w, "rules       %d loaded, digest %s; DIFFERENT from the configured set (%d, digest %s)\n", ru.Loaded, ru.LoadedDigest, ru.Configured, ru.ConfiguredDigest)
	}
	ck := r.Checkpoint
	if ck.Error != "" {
		fmt.Fprintf(w, "checkpoint  none: %s\n", ck.Error)
	} else {
		fmt.Fprintf(w, "checkpoint  %d leaves at %s (%s ago) in %s\n", ck.Index, ts(ck.Time), ago(time.Duration(ck.AgeSeconds*float64(time.Second))), ck.Segment)
	}
	st := r.Store
	if st.Error != "" {
		fmt.Fprintf(w, "store       no receipt: %s\n", st.Error)
	} else {
		check := ""
		if !st.Verified {
			check = " (cosignature not checked)"
		}
		fmt.Fprintf(w, "store       receipt for %d leaves at %s (%s ago), %d leaves behind%s\n", st.ReceiptLeaves, ts(st.ReceiptTime),
			ago(time.Duration(st.AgeSeconds*float64(time.Second))), st.LagLeaves, check)
	}
	if len(r.Consumers) == 0 {
		fmt.Fprintf(w, "consumers   none\n")
	}
	for i, c := range r.Consumers {
		label := "consumers"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-11s %s at leaf %d, %d leaves behind\n", label, c.Name, c.Index, c.LagLeaves)
	}
	p := r.Protection
	pinned := "nothing pinned"
	if len(p.Pinned) > 0 {
		pinned = "pinned: " + strings.Join(p.Pinned, " ")
	}
	fmt.Fprintf(w, "protection  %s, %s (%s)\n", p.Mode, p.Pins, pinned)
	fmt.Fprintf(w, "frozen      %s\n", plural(len(r.Frozen), "session", "sessions"))
	for _, fr := range r.Frozen {
		fmt.Fprintf(w, "            session %d since %s: pids %v\n", fr.Session, ts(fr.Since), fr.Pids)
	}
	if len(r.Attention) == 0 {
		fmt.Fprintf(w, "\nall well\n")
		return
	}
	fmt.Fprintf(w, "\nneeds attention:\n")
	for _, a := range r.Attention {
		fmt.Fprintf(w, "  - %s\n", a)
	}
}

// gatherStatus reads the facts from the machine: what holds the archive's lock, the archive's newest
// START and checkpoint, the kernel (needs root), the receipts and cursors in the archive, the pins and
// the frozen sessions.
func gatherStatus(cfg Config, now time.Time) statusFacts {
	f := statusFacts{Now: now, Archive: cfg.Archive, ProtectMode: cfg.Protect.Mode, Pins: cfg.Protect.Pins}
	var err error
	if f.PID, err = lockHolder(filepath.Join(cfg.Archive, archive.LockFile)); err != nil {
		f.DaemonErr = err.Error()
	}
	f.Running = f.PID > 0
	segs, err := archive.ListSegments(cfg.Archive)
	switch {
	case err != nil:
		f.CheckpointErr = err.Error()
	case len(segs) == 0:
		f.CheckpointErr = "the archive has no segment"
	default:
		f.Start, f.StartTime, _ = lastStart(segs)
		ck, err := lastCheckpoint(segs)
		if err != nil {
			f.CheckpointErr = err.Error()
		} else {
			f.Checkpoint = &ck
		}
	}
	if c, err := libaudit.NewAuditClient(nil); err != nil {
		f.KernelErr = fmt.Sprintf("%v (status needs root for the kernel's audit status)", err)
		f.RulesErr = "the kernel's rules cannot be read"
	} else {
		if f.Kernel, err = c.GetStatus(); err != nil {
			f.KernelErr = err.Error()
		}
		f.KernelRules, f.ConfiguredRules, err = compareRules(c, cfg, f.PID)
		if err != nil {
			f.RulesErr = err.Error()
		}
		c.Close()
	}
	if r, err := lastReceipt(cfg); err != nil {
		f.ReceiptErr = err.Error()
	} else {
		f.Receipt = r
	}
	f.Consumers, err = consumers(cfg.Archive)
	if err != nil {
		f.ConsumersErr = err.Error()
	}
	if ents, err := os.ReadDir(cfg.Protect.Pins); err == nil {
		for _, e := range ents {
			f.Pinned = append(f.Pinned, e.Name())
		}
	}
	if f.Frozen, err = freeze.List(); err != nil {
		f.FrozenErr = err.Error()
	}
	return f
}

// lockHolder returns the pid of the process that holds path's flock (/proc/locks), or 0.
func lockHolder(path string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, nil
		}
		return 0, err
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, err
	}
	// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
	for _, line := range strings.Split(string(data), "\n") {
		fl := strings.Fields(line)
		if len(fl) >= 6 && fl[1] == "FLOCK" && fl[5] == want {
			pid, err := strconv.Atoi(fl[4])
			if err == nil && pid > 0 {
				return pid, nil
			}
		}
	}
	return 0, nil
}

// lastStart returns the START leaf of the archive's newest run: the first leaf of the newest segment that
// starts a run (its header names no epoch key).
func lastStart(segs []string) (*archive.Start, time.Time, error) {
	for i := len(segs) - 1; i >= 0; i-- {
		h, err := archive.ReadSegmentHeader(segs[i])
		if err != nil || h.EpochKey != "" {
			continue
		}
		sr, err := archive.OpenSegment(segs[i])
		if err != nil {
			return nil, time.Time{}, err
		}
		defer sr.Close()
		for {
			typ, p, err := sr.Next()
			if err != nil {
				return nil, time.Time{}, err
			}
			if typ != archive.EntryLeaf {
				continue
			}
			var l archive.Leaf
			if err := archive.DecodeLeaf(p, &l); err != nil || l.Kind != archive.LeafStart {
				return nil, time.Time{}, fmt.Errorf("%s does not start with START", filepath.Base(segs[i]))
			}
			var s archive.Start
			if err := json.Unmarshal(l.Body, &s); err != nil {
				return nil, time.Time{}, err
			}
			return &s, time.Unix(0, l.Time), nil
		}
	}
	return nil, time.Time{}, errors.New("no segment starts a run")
}

// lastCheckpoint returns the newest checkpoint in the archive's segments: in the last whole block that
// holds one, read without decompressing the blocks before it (their headers give their lengths). Its
// time is that of the last leaf before it in its block (a checkpoint signs the leaves its block adds).
func lastCheckpoint(segs []string) (checkpointFact, error) {
	for i := len(segs) - 1; i >= 0; i-- {
		f, err := os.Open(segs[i])
		if err != nil {
			return checkpointFact{}, err
		}
		ck, ok, err := segmentCheckpoint(f)
		f.Close()
		if err != nil {
			return checkpointFact{}, fmt.Errorf("%s: %w", filepath.Base(segs[i]), err)
		}
		if ok {
			ck.Segment = filepath.Base(segs[i])
			return ck, nil
		}
	}
	return checkpointFact{}, errors.New("no segment holds a checkpoint")
}

// segmentCheckpoint finds the last checkpoint of the segment f.
func segmentCheckpoint(f *os.File) (checkpointFact, bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return checkpointFact{}, false, err
	}
	var offs []int64
	h := make([]byte, archive.BlockHeaderSize)
	for off := int64(len(archive.SegmentMagic)); off+archive.BlockHeaderSize <= fi.Size(); {
		if _, err := f.ReadAt(h, off); err != nil {
			return checkpointFact{}, false, err
		}
		l, err := archive.BlockLength(h)
		if err != nil || off+int64(l) > fi.Size() {
			break // a torn or damaged end: the blocks before it
		}
		offs = append(offs, off)
		off += int64(l)
	}
	var buf []byte
	for j := len(offs) - 1; j >= 1; j-- { // block 0 is the header
		if _, err := f.ReadAt(h, offs[j]); err != nil {
			return checkpointFact{}, false, err
		}
		l, _ := archive.BlockLength(h)
		blk := make([]byte, l)
		if _, err := f.ReadAt(blk, offs[j]); err != nil {
			return checkpointFact{}, false, err
		}
		if buf, err = archive.OpenBlock(blk, buf); err != nil {
			continue
		}
		var ck *checkpointFact
		var leafTime int64
		for p := buf; len(p) > 0; {
			typ, payload, rest, err := archive.NextEntry(p)
			if err != nil {
				break
			}
			p = rest
			switch typ {
			case archive.EntryLeaf:
				leafTime = leafTimeOf(payload)
			case archive.EntryCheckpoint:
				c, err := archive.PeekCheckpoint(payload)
				if err == nil {
					ck = &checkpointFact{Size: c.Size, Time: time.Unix(0, leafTime)}
				}
			}
		}
		if ck != nil {
			if leafTime == 0 {
				ck.Time = fi.ModTime()
			}
			return *ck, true, nil
		}
	}
	return checkpointFact{}, false, nil
}

// leafTimeOf is when a leaf was written (control leaves) or received (events), unix ns; 0 if unknown.
func leafTimeOf(p []byte) int64 {
	switch k := archive.LeafKind(p[0]); {
	case k.Control() && len(p) >= 9:
		return int64(binary.LittleEndian.Uint64(p[1:]))
	case !k.Control() && len(p) >= 26:
		return int64(binary.LittleEndian.Uint64(p[18:]))
	}
	return 0
}

// receiptTail is how much of the end of a receipts file lastReceipt reads: more than one receipt.
const receiptTail = 2*receipt.MaxReceiptSize + 64

// lastReceipt returns the last receipt in the archive's receipts file (the shipper appends them, each
// covering more than the one before), its cosignature checked when the store key is known: the
// configured store.key, or the embedded store's store.pub.
func lastReceipt(cfg Config) (*receiptFact, error) {
	path := filepath.Join(cfg.Archive, receipt.ReceiptsFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	start := max(fi.Size()-receiptTail, 0)
	tail := make([]byte, fi.Size()-start)
	if _, err := f.ReadAt(tail, start); err != nil {
		return nil, err
	}
	// The last record is the one whose header line's length ends exactly at the end of the file.
	var last []byte
	for i := bytes.LastIndex(tail, []byte("receipt ")); i >= 0; i = bytes.LastIndex(tail[:i], []byte("receipt ")) {
		if i > 0 && tail[i-1] != '\n' && !(start == 0 && i == 0) {
			continue
		}
		nl := bytes.IndexByte(tail[i:], '\n')
		if nl < 0 {
			continue
		}
		n, err := strconv.Atoi(string(tail[i+len("receipt ") : i+nl]))
		if err == nil && i+nl+1+n == len(tail) {
			last = tail[i+nl+1:]
			break
		}
	}
	if last == nil {
		return nil, errors.New("no whole receipt at the end of the receipts file")
	}
	keyFile := cfg.Store.Key
	if cfg.Store.Address == "" {
		dir := cfg.Store.Dir
		if dir == "" {
			if abs, err := filepath.Abs(cfg.Archive); err == nil {
				dir = filepath.Join(filepath.Dir(abs), "store") // as startShipping
			}
		}
		keyFile = filepath.Join(dir, store.PubFile)
	}
	if sk, err := receipt.LoadCosignVerifier(keyFile); err == nil {
		c, at, err := receipt.Open(last, sk)
		if err != nil {
			return nil, fmt.Errorf("the newest receipt: %w", err)
		}
		return &receiptFact{Size: c.Size, Time: at, Verified: true}, nil
	}
	// No key to check it with: its text and time, unverified.
	text, sigs, ok := bytes.Cut(last, []byte("\n\n"))
	if !ok {
		return nil, errors.New("the newest receipt is not a signed note")
	}
	c, err := archive.ParseCheckpoint(string(text) + "\n")
	if err != nil {
		return nil, err
	}
	at, err := cosignTime(sigs)
	if err != nil {
		return nil, err
	}
	return &receiptFact{Size: c.Size, Time: at}, nil
}

// cosignTime reads the timestamp of a receipt's last signature line without checking it: a cosignature
// is 4 bytes of key hash, 8 of big-endian unix seconds, 64 of signature.
func cosignTime(sigs []byte) (time.Time, error) {
	lines := strings.Split(strings.TrimSpace(string(sigs)), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 3 {
		return time.Time{}, errors.New("the newest receipt has no cosignature")
	}
	sig, err := archive.DecodeBase64(f[len(f)-1])
	if err != nil || len(sig) != 4+8+64 {
		return time.Time{}, errors.New("the newest receipt's cosignature is malformed")
	}
	return time.Unix(int64(binary.BigEndian.Uint64(sig[4:])), 0), nil
}

// consumers lists the cursors under the archive's cursors/ directory: SIEM sinks (sink-NAME.json) and any
// other consumer's.
func consumers(dir string) ([]consumerFact, error) {
	files, err := filepath.Glob(filepath.Join(dir, "cursors", "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []consumerFact
	var errs []error
	for _, p := range files {
		c, err := archive.LoadCursor(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		if s, ok := strings.CutPrefix(name, "sink-"); ok {
			name = "sink " + s
		}
		out = append(out, consumerFact{Name: name, Index: c.Index})
	}
	return out, errors.Join(errs...)
}

// compareRules returns the kernel's rules, as auditctl -l prints them, without the exclusion rule of the
// daemon pid (rules.SelfRule), and the rules the configuration sets.
func compareRules(c *libaudit.AuditClient, cfg Config, pid int) (kernel, configured []string, err error) {
	set, err := cfg.ruleSet()
	if err != nil {
		return nil, nil, err
	}
	if configured, err = set.Rules(); err != nil {
		return nil, nil, err
	}
	raw, err := c.GetRules()
	if err != nil {
		return nil, nil, fmt.Errorf("get the kernel's rules: %w", err)
	}
	self := fmt.Sprintf("-F pid=%d", pid)
	for _, w := range raw {
		line, err := rule.ToCommandLine(w, false)
		if err != nil {
			return nil, nil, fmt.Errorf("decode a kernel rule: %w", err)
		}
		if pid > 0 && strings.HasPrefix(line, "-a never,exit") && strings.HasSuffix(line, self) {
			continue
		}
		kernel = append(kernel, line)
	}
	return kernel, configured, nil
}
