package mail

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/internal/durable"
)

// Spool limits and retry defaults (docs/mail.md).
const (
	DefaultMaxMessages  = 1000
	DefaultMaxBytes     = 64 << 20
	DefaultMaxBodyBytes = 1 << 20
	DefaultRetryMin     = time.Second
	DefaultRetryMax     = 5 * time.Minute

	// sentKeep is how many delivered ids the spool remembers to refuse re-enqueueing them.
	sentKeep = 4096
)

// Spool layout under its directory (docs/mail.md).
const (
	lockName    = "lock"
	queueDir    = "queue"   // <seq, 16 digits>.<id>.msg, one message each, complete
	tmpDir      = "tmp"     // being written; emptied on open
	badDir      = "bad"     // files that could not be read, kept for inspection and counted
	sentName    = "sent"    // ids the hub accepted, one a line, appended
	droppedName = "dropped" // the overflow count not yet reported (JSON)
	msgSuffix   = ".msg"
)

// ErrOverflow says Enqueue dropped the message because the spool is full. The drop is counted durably
// and reported by an overflow notice mail, so the caller may move on as if it had been enqueued.
var ErrOverflow = errors.New("mail spool full: message dropped and counted")

// ErrLocked says another process holds the spool.
var ErrLocked = errors.New("mail spool is in use by another process")

// SpoolOptions bounds a spool and paces its retries. Zero values take the defaults.
type SpoolOptions struct {
	MaxMessages  int           // queued messages at most; DefaultMaxMessages
	MaxBytes     int64         // bytes of queued files at most; DefaultMaxBytes
	MaxBodyBytes int           // a longer body is cut, with a note saying so; DefaultMaxBodyBytes
	RetryMin     time.Duration // first wait after a failed attempt; doubles up to RetryMax
	RetryMax     time.Duration
	Log          zerolog.Logger
}

// Spool is a durable queue of mails on disk and the loop that delivers them to the hub in order.
//
// Enqueue returns nil only once the message is on disk (written to tmp/, fsynced, renamed into queue/,
// directory fsynced): commit the alert cursor after it, never before. Run removes a message only after
// the hub accepted it (250 to the end of DATA). Delivery is at least once: a crash after the hub
// accepted a message and before the spool recorded it sends it again with the same Message-ID. An id
// recorded as accepted is never sent again, even if Enqueued again (the last 4096 ids are kept).
type Spool struct {
	dir  string
	r    *relay
	opt  SpoolOptions
	lock *os.File
	now  func() time.Time

	mu      sync.Mutex
	queue   []entry // by seq
	queued  map[string]bool
	bytes   int64
	nextSeq uint64
	sent    map[string]bool
	sentIDs []string // sent's ids in file order
	drop    dropState
	wake    chan struct{}

	// Test hooks: called after the hub accepted id, and after the acceptance was recorded.
	afterAccept, afterRecord func(id string)
}

type entry struct {
	seq  uint64
	id   string
	name string
	size int64
}

// stored is a queued message on disk.
type stored struct {
	V       int       `json:"v"`
	ID      string    `json:"id"`
	Subject string    `json:"subject"`
	Body    string    `json:"body"`
	Date    time.Time `json:"date"`
}

// dropState counts what the spool lost and has not reported yet.
type dropState struct {
	Epoch      uint64    `json:"epoch"`      // notices sent so far; names the next notice
	Dropped    uint64    `json:"dropped"`    // messages refused while full
	Unreadable uint64    `json:"unreadable"` // spool files moved to bad/
	First      string    `json:"first"`      // first and last dropped ids
	Last       string    `json:"last"`
	Since      time.Time `json:"since"` // the first loss
}

func (d dropState) pending() bool { return d.Dropped > 0 || d.Unreadable > 0 }

// OpenSpool opens (creating it if needed) the spool in dir for the hub cfg describes, and takes its
// lock. Half-written files left by a crash are removed; messages already recorded as accepted are
// removed without sending. Close releases it.
func OpenSpool(dir string, cfg Config, opt SpoolOptions) (*Spool, error) {
	r, err := cfg.resolve(true)
	if err != nil {
		return nil, err
	}
	if opt.MaxMessages <= 0 {
		opt.MaxMessages = DefaultMaxMessages
	}
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = DefaultRetryMin
	}
	if opt.RetryMax < opt.RetryMin {
		opt.RetryMax = max(DefaultRetryMax, opt.RetryMin)
	}
	for _, d := range []string{dir, filepath.Join(dir, queueDir), filepath.Join(dir, tmpDir), filepath.Join(dir, badDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("mail spool: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mail spool: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
	}
	s := &Spool{dir: dir, r: r, opt: opt, lock: lock, now: time.Now, queued: map[string]bool{},
		sent: map[string]bool{}, wake: make(chan struct{}, 1)}
	if err := s.load(); err != nil {
		s.Close()
		return nil, fmt.Errorf("mail spool %s: %w", dir, err)
	}
	return s, nil
}

// Close releases the spool's lock. Run must have returned.
func (s *Spool) Close() error { return s.lock.Close() }

// load rebuilds the in-memory state from the directory.
func (s *Spool) load() error {
	// tmp/ holds only files whose rename never happened: their Enqueue did not return nil.
	tmps, err := os.ReadDir(filepath.Join(s.dir, tmpDir))
	if err != nil {
		return err
	}
	for _, t := range tmps {
		s.opt.Log.Warn().Str("file", t.Name()).Msg("mail spool: removing a half-written file")
		if err := os.Remove(filepath.Join(s.dir, tmpDir, t.Name())); err != nil {
			return err
		}
	}
	if err := s.loadSent(); err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, droppedName)); err == nil {
		if err := json.Unmarshal(b, &s.drop); err != nil {
			s.opt.Log.Error().Err(err).Msg("mail spool: overflow count unreadable; reporting it as one loss")
			s.quarantine(droppedName, s.dir)
			s.drop = dropState{Unreadable: 1, Since: s.now()}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	files, err := os.ReadDir(filepath.Join(s.dir, queueDir))
	if err != nil {
		return err
	}
	removed := false
	for _, f := range files {
		seq, id, ok := parseName(f.Name())
		fi, err := f.Info()
		if !ok || err != nil || !fi.Mode().IsRegular() || s.queued[id] {
			s.opt.Log.Error().Str("file", f.Name()).Msg("mail spool: not a spool file; moved to bad/")
			s.quarantine(f.Name(), filepath.Join(s.dir, queueDir))
			continue
		}
		if s.sent[id] {
			// Accepted and recorded, but the crash came before the removal.
			if err := os.Remove(filepath.Join(s.dir, queueDir, f.Name())); err != nil {
				return err
			}
			removed = true
			continue
		}
		s.queue = append(s.queue, entry{seq: seq, id: id, name: f.Name(), size: fi.Size()})
		s.queued[id] = true
		s.bytes += fi.Size()
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	if removed {
		if err := durable.SyncDir(filepath.Join(s.dir, queueDir)); err != nil {
			return err
		}
	}
	sort.Slice(s.queue, func(i, j int) bool { return s.queue[i].seq < s.queue[j].seq })
	return s.saveDrop()
}

// loadSent reads the accepted ids, keeping the newest sentKeep (and compacting the file when it has
// grown to twice that).
func (s *Spool) loadSent() error {
	path := filepath.Join(s.dir, sentName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if checkID(sc.Text()) == nil { // a torn last line is ignored
			ids = append(ids, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(ids) > 2*sentKeep {
		ids = ids[len(ids)-sentKeep:]
		if err := durable.Replace(path, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
			return err
		}
	}
	for _, id := range ids {
		s.sent[id] = true
	}
	s.sentIDs = ids
	return nil
}

// recordSent appends id to the sent file, fsynced; past 2·sentKeep ids the file is rewritten with the
// newest sentKeep, so neither it nor the set grows without bound.
func (s *Spool) recordSent(id string) error {
	path := filepath.Join(s.dir, sentName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := durable.WriteAll(f, []byte(id+"\n")); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	s.sent[id] = true
	s.sentIDs = append(s.sentIDs, id)
	if len(s.sentIDs) > 2*sentKeep {
		keep := slices.Clone(s.sentIDs[len(s.sentIDs)-sentKeep:])
		if err := durable.Replace(path, []byte(strings.Join(keep, "\n")+"\n"), 0o600); err != nil {
			return err
		}
		for _, old := range s.sentIDs[:len(s.sentIDs)-sentKeep] {
			delete(s.sent, old)
		}
		s.sentIDs = keep
	}
	return nil
}

func parseName(name string) (seq uint64, id string, ok bool) {
	base, found := strings.CutSuffix(name, msgSuffix)
	num, id, found2 := strings.Cut(base, ".")
	if !found || !found2 || len(num) != 16 || checkID(id) != nil {
		return 0, "", false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	return seq, id, err == nil
}

// quarantine moves dir/name to bad/ (best effort) and counts it as unreadable.
func (s *Spool) quarantine(name, dir string) {
	if !s.drop.pending() {
		s.drop.Since = s.now()
	}
	s.drop.Unreadable++
	dst := filepath.Join(s.dir, badDir, fmt.Sprintf("%d.%s", s.now().UnixNano(), name))
	if err := os.Rename(filepath.Join(dir, name), dst); err != nil {
		s.opt.Log.Error().Err(err).Str("file", name).Msg("mail spool: cannot move to bad/; removing")
		os.Remove(filepath.Join(dir, name))
	}
}

func (s *Spool) saveDrop() error {
	b, err := json.Marshal(s.drop)
	if err != nil {
		return err
	}
	return durable.Replace(filepath.Join(s.dir, droppedName), b, 0o600)
}

// Enqueue puts m on disk for delivery. nil means it is durable (or was already queued or accepted
// under the same ID): the caller may commit its cursor. An error wrapping ErrOverflow means the spool
// was full and m was dropped, counted durably for the overflow notice: the caller may commit too. Any
// other error means nothing was recorded: do not commit.
func (s *Spool) Enqueue(m Message) error {
	if err := checkID(m.ID); err != nil {
		return err
	}
	if m.Date.IsZero() {
		m.Date = s.now()
	}
	if len(m.Body) > s.opt.MaxBodyBytes {
		cut := len(m.Body) - s.opt.MaxBodyBytes
		m.Body = m.Body[:s.opt.MaxBodyBytes] + fmt.Sprintf("\n[auditarch: %d more bytes cut; `auditarch report` prints them]\n", cut)
	}
	data, err := json.Marshal(stored{V: 1, ID: m.ID, Subject: m.Subject, Body: m.Body, Date: m.Date})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued[m.ID] || s.sent[m.ID] {
		return nil
	}
	if len(s.queue)+1 > s.opt.MaxMessages || s.bytes+int64(len(data)) > s.opt.MaxBytes {
		d := s.drop
		if !d.pending() {
			d.Since = s.now()
		}
		if d.Dropped == 0 {
			d.First = m.ID
		}
		d.Dropped++
		d.Last = m.ID
		old := s.drop
		s.drop = d
		if err := s.saveDrop(); err != nil {
			s.drop = old
			return fmt.Errorf("mail spool: record a dropped message: %w", err)
		}
		s.signal()
		return fmt.Errorf("%w (%d queued, %d bytes; %d dropped since %s)", ErrOverflow, len(s.queue), s.bytes,
			d.Dropped, d.Since.Format(time.RFC3339))
	}
	name := fmt.Sprintf("%016d.%s%s", s.nextSeq, m.ID, msgSuffix)
	tmp := filepath.Join(s.dir, tmpDir, name)
	if err := durable.Create(tmp, data, 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mail spool: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, queueDir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mail spool: %w", err)
	}
	if err := durable.SyncDir(filepath.Join(s.dir, queueDir)); err != nil {
		return fmt.Errorf("mail spool: %w", err)
	}
	s.queue = append(s.queue, entry{seq: s.nextSeq, id: m.ID, name: name, size: int64(len(data))})
	s.queued[m.ID] = true
	s.bytes += int64(len(data))
	s.nextSeq++
	s.signal()
	return nil
}

// Holds reports whether the message id is queued or recorded as accepted (among the last ids kept): an
// Enqueue of it would queue nothing. A consumer that wrote down its intent to enqueue id before a crash
// asks this to learn whether the Enqueue completed.
func (s *Spool) Holds(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued[id] || s.sent[id]
}

func (s *Spool) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// SpoolStats is what a spool holds.
type SpoolStats struct {
	Queued     int
	Bytes      int64
	Dropped    uint64 // dropped and not yet reported
	Unreadable uint64 // moved to bad/ and not yet reported
}

// Stats returns what the spool holds now.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SpoolStats{Queued: len(s.queue), Bytes: s.bytes, Dropped: s.drop.Dropped, Unreadable: s.drop.Unreadable}
}

// job is the next thing to send: the overflow notice (notice set) or the head of the queue.
type job struct {
	msg    Message
	e      entry
	notice *dropState
}

// next returns the next job: the overflow notice first, so the administrator hears of losses before
// the backlog, then the oldest queued message. ok is false when there is nothing to send.
func (s *Spool) next() (j job, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drop.pending() {
		d := s.drop
		return job{msg: s.notice(d), notice: &d}, true
	}
	if len(s.queue) == 0 {
		return job{}, false
	}
	e := s.queue[0]
	b, err := os.ReadFile(filepath.Join(s.dir, queueDir, e.name))
	var st stored
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil && st.ID != e.id {
		err = fmt.Errorf("holds id %q", st.ID)
	}
	if err != nil {
		// Reported by the notice that now comes first.
		s.opt.Log.Error().Err(err).Str("file", e.name).Msg("mail spool: unreadable message; moved to bad/")
		s.quarantine(e.name, filepath.Join(s.dir, queueDir))
		s.pop()
		if err := s.saveDrop(); err != nil {
			s.opt.Log.Error().Err(err).Msg("mail spool: cannot record an unreadable message")
		}
		d := s.drop
		return job{msg: s.notice(d), notice: &d}, true
	}
	return job{msg: Message{ID: st.ID, Subject: st.Subject, Body: st.Body, Date: st.Date}, e: e}, true
}

// pop forgets the head of the queue. s.mu held.
func (s *Spool) pop() {
	e := s.queue[0]
	s.queue = s.queue[1:]
	delete(s.queued, e.id)
	s.bytes -= e.size
}

// notice is the overflow report for d. Its id names the notice's epoch: a notice resent after a crash
// carries the same Message-ID.
func (s *Spool) notice(d dropState) Message {
	var b strings.Builder
	fmt.Fprintf(&b, "The auditarch mail spool of %s (%s) lost mail since %s:\n\n", s.r.hostname, s.dir,
		d.Since.Format(subjectTime))
	if d.Dropped > 0 {
		fmt.Fprintf(&b, "%d message(s) dropped because the spool was full (limits: %d messages, %d bytes);\n"+
			"first dropped: %s, last dropped: %s.\n", d.Dropped, s.opt.MaxMessages, s.opt.MaxBytes, d.First, d.Last)
	}
	if d.Unreadable > 0 {
		fmt.Fprintf(&b, "%d spool file(s) could not be read and were moved to %s.\n", d.Unreadable,
			filepath.Join(s.dir, badDir))
	}
	b.WriteString("\nThe events are still in the archive: `auditarch report --since` prints them.\n")
	return Message{
		ID:      fmt.Sprintf("overflow.%d", d.Epoch),
		Subject: fmt.Sprintf("%s %s mail spool overflow: %d alert mail(s) lost", s.r.hostname, s.now().Format(subjectTime), d.Dropped+d.Unreadable),
		Body:    b.String(),
		Date:    d.Since,
	}
}

// done records that the hub accepted j, then forgets it.
func (s *Spool) done(j job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.notice != nil {
		s.drop.Dropped -= j.notice.Dropped
		s.drop.Unreadable -= j.notice.Unreadable
		s.drop.Epoch++
		if s.drop.Dropped == 0 {
			s.drop.First, s.drop.Last = "", ""
		}
		if s.drop.pending() {
			s.drop.Since = s.now()
		}
		return s.saveDrop()
	}
	// The sent record first: from then on a crash cannot resend it.
	if err := s.recordSent(j.e.id); err != nil {
		return err
	}
	if s.afterRecord != nil {
		s.afterRecord(j.e.id)
	}
	if err := os.Remove(filepath.Join(s.dir, queueDir, j.e.name)); err != nil {
		return err
	}
	s.pop()
	return durable.SyncDir(filepath.Join(s.dir, queueDir))
}

// Run delivers queued messages in order until ctx ends, then returns ctx's error. One connection
// carries messages while the queue has any; a failed attempt closes it and waits RetryMin, doubling up
// to RetryMax, before the same message is tried again: a later message never overtakes it.
func (s *Spool) Run(ctx context.Context) error {
	wait := time.Duration(0)
	var sess *session
	defer func() {
		if sess != nil {
			sess.close()
		}
	}()
	fail := func(err error, j job) {
		if wait == 0 {
			wait = s.opt.RetryMin
		} else {
			wait = min(2*wait, s.opt.RetryMax)
		}
		s.opt.Log.Warn().Err(err).Str("id", j.msg.ID).Dur("retry_in", wait).Msg("mail: delivery failed")
		if sess != nil {
			sess.close()
			sess = nil
		}
	}
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		j, ok := s.next()
		if !ok {
			if sess != nil {
				sess.close()
				sess = nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.wake:
			}
			continue
		}
		if sess == nil {
			var err error
			if sess, err = s.r.dial(ctx); err != nil {
				fail(err, j)
				continue
			}
		}
		accepted, err := sess.send(s.r, j.msg)
		if accepted {
			if s.afterAccept != nil {
				s.afterAccept(j.msg.ID)
			}
			if derr := s.done(j); derr != nil {
				// The hub has it; the record failed: it will be sent again (same Message-ID).
				s.opt.Log.Error().Err(derr).Str("id", j.msg.ID).Msg("mail spool: cannot record a delivery")
				fail(derr, j)
				continue
			}
			s.opt.Log.Debug().Str("id", j.msg.ID).Msg("mail: delivered")
			wait = 0
			if err != nil && sess != nil { // accepted, then RSET failed: reconnect for the next
				sess.close()
				sess = nil
			}
			continue
		}
		if err == nil {
			err = errors.New("not accepted")
		}
		fail(err, j)
	}
}
