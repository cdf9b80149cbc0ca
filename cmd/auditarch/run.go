package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	libaudit "github.com/elastic/go-libaudit/v2"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/internal/durable"
	"github.com/auditarch/auditarch/internal/keyfile"
	"github.com/auditarch/auditarch/policy"
	"github.com/auditarch/auditarch/policy/freeze"
	"github.com/auditarch/auditarch/rules"
)

func runCmd(args []string, stderr io.Writer) error {
	fs := newFlags("run")
	archiveDir := fs.String("archive", "", "")
	rulesFile := fs.String("rules", "", "")
	configFile := fs.String("config", "", "")
	lock := fs.Bool("lock", false, "")
	keyFile := fs.String("key", "", "")
	segDur := fs.Duration("segment-duration", 0, "")
	storeAddr := fs.String("store", "", "")
	storeKey := fs.String("store-key", "", "")
	storeDir := fs.String("store-dir", "", "")
	protect := fs.String("protect", "", "")
	protectPins := fs.String("protect-pins", "", "")
	supervised := fs.Bool("supervise", false, "")
	sandboxMode := fs.String("sandbox", "", "")
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
	if *rulesFile != "" {
		cfg.Rules = *rulesFile
	}
	cfg.Lock = cfg.Lock || *lock
	if *keyFile != "" {
		cfg.Key = *keyFile
	}
	if *storeAddr != "" {
		cfg.Store.Address = *storeAddr
	}
	if *storeKey != "" {
		cfg.Store.Key = *storeKey
	}
	if *storeDir != "" {
		cfg.Store.Dir = *storeDir
	}
	if *protect != "" {
		cfg.Protect.Mode = *protect
	}
	if *protectPins != "" {
		cfg.Protect.Pins = *protectPins
	}
	if *sandboxMode != "" {
		if *sandboxMode != SandboxOn && *sandboxMode != SandboxOff {
			return fmt.Errorf("%w: --sandbox %q: want %s or %s", errUsage, *sandboxMode, SandboxOn, SandboxOff)
		}
		cfg.Sandbox = *sandboxMode
	}
	switch cfg.Protect.Mode {
	case ProtectOff, ProtectDetect, ProtectEnforce, ProtectAuto:
	default:
		return fmt.Errorf("%w: protect mode %q: want %s, %s, %s or %s", errUsage, cfg.Protect.Mode, ProtectOff, ProtectDetect, ProtectEnforce, ProtectAuto)
	}
	if *segDur < 0 {
		return fmt.Errorf("%w: --segment-duration must be positive", errUsage)
	}
	if *segDur > 0 {
		cfg.SegmentDuration = *segDur
	}
	if cfg.Archive == "" {
		return fmt.Errorf("%w: run needs --archive DIR (or archive: in the config)", errUsage)
	}
	log := zerolog.New(stderr).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	if (cfg.Supervise || *supervised) && os.Getenv(supervisedEnv) == "" {
		return supervise(args, log)
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	return run(ctx, cfg, log)
}

// run is the daemon: register, program the rules, capture into the archive until ctx ends, then restore
// the kernel's rules and settings, unregister, drain and flush.
func run(ctx context.Context, cfg Config, log zerolog.Logger) error {
	set, err := cfg.ruleSet()
	if err != nil {
		return err
	}
	sd := newNotifier(log) // systemd (systemd.go); opened before the self-sandbox
	defer sd.close()
	// Protection first: pinned enforce-mode programs outlive a stop or a crash and refuse the audit
	// control messages (register, rules) of any process they do not protect, this one included until it
	// has adopted them and protected itself.
	var g *policy.Guard
	if cfg.Protect.Mode != ProtectOff {
		if g, err = startProtect(cfg.Protect.Mode, cfg.Protect.Pins, log); err != nil {
			return &hinted{fmt.Errorf("protect: %w", err), "protection needs BPF (root, a kernel with BTF) and a bpf filesystem; run with --protect off to go without"}
		}
		defer g.Close() // the pins stay: protection outlives the daemon
		log.Info().Str("mode", string(g.Mode())).Str("pins", cfg.Protect.Pins).Interface("hooks", g.Hooks()).Msg("protection")
	}
	conn, err := audit.Dial(cfg.ReceiveBuffer)
	if err != nil {
		return &hinted{err, "auditarch run needs root (CAP_AUDIT_CONTROL, CAP_AUDIT_READ) and a kernel with CONFIG_AUDIT"}
	}
	defer conn.Close()
	if err := conn.Register(); err != nil {
		var de *audit.DaemonError
		if errors.As(err, &de) {
			return &hinted{err, "stop the other audit daemon first (for auditd: service auditd stop, or kill its pid)"}
		}
		return err
	}
	st, err := conn.Control().GetStatus()
	if err != nil {
		conn.Unregister()
		return fmt.Errorf("read kernel audit status: %w", err)
	}
	id, created, err := loadOrCreateIdentity(cfg.Key)
	if err != nil {
		conn.Unregister()
		return err
	}
	if created {
		log.Warn().Str("key", cfg.Key).Str("public_key", id.VKey).Msg("created the host identity key; pin its public half where you verify")
	}
	w, err := writer.Create(cfg.Archive, cfg.archiveOptions(id, set, st, log))
	if err != nil {
		conn.Unregister()
		hint := "auditarch verify " + cfg.Archive + " says what is wrong with the archive"
		switch {
		case errors.Is(err, keyfile.ErrPermissions):
			hint = "the archive directory must not be accessible to others: chmod 0700 " + cfg.Archive
		case errors.Is(err, writer.ErrInUse):
			hint = "another auditarch run writes to this archive; stop it first"
		case errors.Is(err, unix.ENOSPC):
			hint = "the archive's filesystem is full: free space (a run keeps a small reserve to record its stop) and start again"
		}
		return &hinted{err, hint}
	}
	re := audit.NewReassembler(nil)
	re.Timeout, re.Grace = cfg.EventTimeout, cfg.GapGrace
	if err := resumeSerials(cfg.Archive, re, log); err != nil {
		log.Warn().Err(err).Msg("the previous runs' kernel serials could not be read: serials issued while no daemon was registered are not accounted")
	}
	ship, err := startShipping(cfg, id, w, log)
	if err != nil {
		conn.Unregister()
		w.Close()
		return err
	}
	sinks, stopSinks := startSinks(ctx, cfg, w, id, log) // SIEM sinks (forward.go)
	defer stopSinks()
	// Local retention (retention.go), stopped when run returns.
	defer startRetention(ctx, cfg, w, id, log)()
	alerts, err := startAlerts(cfg, w, ship, log)
	if err != nil {
		conn.Unregister()
		w.Close()
		ship.stop(w, time.Second)
		return err
	}
	defer alerts.stop(w) // after w.Close: alerts read to the archive's end
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case err := <-w.Failed():
			log.Error().Err(err).Msg("archive cannot be written and disk_full is exit: stopping")
			cancel()
		case <-ship.Failed(): // logged; run returns it (ship.stop)
			cancel()
		case <-ctx.Done():
		}
	}()
	var applied *rules.Applied
	if st.Enabled == 2 {
		log.Warn().Msg("kernel audit configuration is locked (-e 2) until reboot: capturing with the rules already loaded")
	} else {
		statePath := filepath.Join(cfg.Archive, kernelStateFile)
		found, err := readKernelState(statePath)
		if err != nil {
			conn.Unregister()
			w.Close()
			ship.stop(w, time.Second)
			return err
		}
		if found != nil {
			log.Warn().Int("rules", len(found.Rules)).Msg("the previous run was killed before it restored the kernel; restoring what it found when this run stops")
		}
		applied, err = rules.Apply(conn.Control(), set, rules.ApplyOptions{SelfPID: os.Getpid(), Lock: cfg.Lock, Found: found})
		if err != nil {
			conn.Unregister()
			w.Close()
			ship.stop(w, time.Second)
			return fmt.Errorf("program audit rules: %w", err)
		}
		if found == nil {
			if err := writeKernelState(statePath, applied.Found()); err != nil {
				log.Error().Err(err).Msg("save the kernel state found; after a crash the next run cannot restore it")
			}
		}
	}
	defended := make(chan struct{})
	frozen := &frozenSessions{} // the sessions frozen after an attempt, for watchThaws
	if g != nil {
		if g.Mode() == policy.ModeEnforce {
			// Kept through a crash (the pins hold them); a clean stop hands the files back.
			defer unprotectPaths(g, protectPaths(g, cfg, log), log)
		}
		go func() {
			defer close(defended)
			defend(ctx, g, w, frozen, log)
		}()
		go watchThaws(ctx, frozen, w, log)
	} else {
		close(defended)
	}
	// The run's first event: the serial it starts from, archived even if nothing else happens.
	if err := conn.Mark(fmt.Sprintf("op=auditarch-start pid=%d", os.Getpid())); err != nil {
		log.Warn().Err(err).Msg("mark the run's start in the audit trail")
	}
	backlog := st.BacklogLimit // as found; the rules may have set another
	if now, err := conn.Control().GetStatus(); err == nil {
		backlog = now.BacklogLimit
	}
	log.Info().Str("archive", w.Dir()).Int("pid", os.Getpid()).Uint32("kernel_lost", st.Lost).
		Uint32("backlog_limit", backlog).Msg("capturing")

	guarded := make(chan struct{}) // closed when the configuration guard has stopped
	c := &audit.Capture{Conn: conn, Reassembler: re, PollInterval: cfg.LostPoll, Log: log,
		BeforeUnregister: func() {
			<-guarded // the guard must not put back what Restore is about to undo
			// The run's last serial: the next run counts what it misses from here.
			if err := conn.Mark(fmt.Sprintf("op=auditarch-stop pid=%d", os.Getpid())); err != nil {
				log.Warn().Err(err).Msg("mark the run's end in the audit trail")
			}
			if applied == nil {
				return
			}
			if err := applied.Restore(); err != nil {
				log.Error().Err(err).Msg("restore kernel audit rules and settings")
				return
			}
			if err := os.Remove(filepath.Join(cfg.Archive, kernelStateFile)); err != nil && !os.IsNotExist(err) {
				log.Error().Err(err).Msg("remove the saved kernel state")
			}
		}}
	if applied != nil && !applied.Locked() {
		changes := make(chan struct{}, 1)
		c.ConfigChange = changes
		go func() {
			defer close(guarded)
			guardConfig(ctx, c, applied, w, changes, log)
		}()
	} else {
		close(guarded)
	}
	c.Since(st.Lost) // losses while this run started up (archive, rules) count too
	// The metrics endpoint (metrics.go) listens before the sandbox.
	defer startDaemonMetrics(cfg, w, c, ship, sinks, log)()
	// Confined from here on (docs/protect.md, "Self-sandbox"); capturing matters more than confinement.
	if err := applySandbox(&cfg, log); err != nil {
		log.Error().Err(err).Msg("self-sandbox not (fully) applied: the daemon goes on less confined")
	}
	var sink audit.Sink = w
	if cfg.Protect.Mode != ProtectOff {
		ps := &protectSink{Writer: w, hits: make(chan *audit.RawEvent, 256)}
		sink = ps
		go defendAudit(ctx, ps, w, frozen, log)
	}
	c.Alive = sd.alive                 // watchdog pings from the capture loop
	sd.start(ctx, w, shipLag(ship, w)) // READY=1 once capturing with a durable checkpoint; STATUS=; STOPPING=1
	capErr := c.Run(ctx, sink)
	<-defended // what the protection saw up to the stop is archived before it
	closeErr := w.Close()
	shipErr := ship.stop(w, 10*time.Second)
	appended, dropped, durable := w.Stats()
	log.Info().Uint64("events", appended).Uint64("dropped", dropped).Uint64("durable_leaves", durable).Msg("stopped")
	switch {
	case capErr != nil:
		return fmt.Errorf("capture: %w", capErr)
	case closeErr != nil:
		return closeErr
	case shipErr != nil:
		return fmt.Errorf("ship: %w", shipErr)
	}
	return nil
}

// startProtect loads (or adopts) the protection programs of mode pinned in pins, mounting the bpf
// filesystem at the pins' parent when it is not one, and protects this daemon and the process that
// started it (its supervisor, which may stop it: systemd, or the shell of `make run`); under run
// --supervise, also the process that started the supervisor.
func startProtect(mode, pins string, log zerolog.Logger) (*policy.Guard, error) {
	if mode == ProtectAuto {
		m, why := policy.ChooseMode()
		if why != nil {
			log.Warn().Err(why).Msg("protection: enforce mode is not available here; detect mode")
		}
		mode = string(m)
	}
	load := policy.Detect
	if mode == ProtectEnforce {
		load = policy.Enforce
	}
	g, err := load(policy.Options{PinDir: pins})
	if errors.Is(err, policy.ErrNotBPFFS) {
		parent := filepath.Dir(pins)
		if merr := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); merr != nil {
			return nil, fmt.Errorf("%w; mount a bpf filesystem on %s: %v", err, parent, merr)
		}
		g, err = load(policy.Options{PinDir: pins})
	}
	if err != nil {
		return nil, err
	}
	pids := []int{os.Getpid(), os.Getppid()}
	if os.Getenv(supervisedEnv) != "" { // and the process that started the supervisor
		if pp := ppidOf(os.Getppid()); pp > 1 {
			pids = append(pids, pp)
		}
	}
	for _, pid := range pids {
		if err := g.Protect(pid); err != nil {
			g.Close()
			return nil, fmt.Errorf("protect pid %d: %w", pid, err)
		}
	}
	return g, nil
}

// defend turns what the protection programs saw into POLICY leaves and freezes the doer's session: the
// kernel has already refused it (enforce) or stopped the doer (detect: SIGSTOP, which anyone's SIGCONT
// would undo); the cgroup freezer keeps its whole session still until an administrator thaws it
// (auditarch protect thaw). After ctx
// ends it drains what is still queued (the signal that stopped the daemon was recorded before it was
// delivered), then returns.
func defend(ctx context.Context, g *policy.Guard, w *writer.Writer, frozen *frozenSessions, log zerolog.Logger) {
	drain := time.NewTimer(time.Hour)
	drain.Stop()
	done := ctx.Done()
	for {
		select {
		case <-done:
			done = nil
			drain.Reset(200 * time.Millisecond)
			continue
		case <-drain.C:
			return
		case ev, ok := <-g.Events():
			if !ok {
				return
			}
			if ev.Kind == policy.KindSignal && !ev.Stopped && !ev.Denied && ev.StopErr == nil {
				continue // generated by the kernel (SIGCHLD, SIGPIPE, timers): nobody's attempt
			}
			p := raw.Policy{Action: ev.Kind.String(), Verdict: raw.PolicyVerdictRecorded,
				Sender: &raw.Process{PID: ev.PID, TGID: ev.TGID, UID: ev.UID, EUID: ev.EUID, AUID: ev.AUID, Ses: ev.SessionID,
					Comm: ev.Comm, Exe: exeOf(ev.TGID), Cgroup: strconv.FormatUint(ev.CgroupID, 10)},
				Target: &raw.Process{PID: ev.TargetPID, TGID: ev.TargetTGID}}
			detail := []string{}
			switch ev.Kind {
			case policy.KindSignal:
				detail = append(detail, fmt.Sprintf("signal %d (%s)", int(ev.Signal), unix.SignalName(ev.Signal)))
			case policy.KindFile:
				detail = append(detail, fmt.Sprintf("%s of %q (inode %d, %s)", policy.FileOp(ev.Code), ev.Name, ev.Ino, policy.PathFlag(ev.Result)))
			case policy.KindUmount:
				detail = append(detail, fmt.Sprintf("umount of the bpf filesystem %q (flags %#x)", ev.Name, ev.Code))
			case policy.KindAuditControl:
				detail = append(detail, fmt.Sprintf("audit netlink message type %d (set mask %#x)", ev.Code, ev.ID))
			case policy.KindCgroupFreeze:
				detail = append(detail, fmt.Sprintf("cgroup.freeze of %q (cgroup id %d), which holds a protected process", ev.Name, ev.Ino))
			}
			if ev.Denied {
				p.Verdict = raw.PolicyVerdictDenied
				detail = append(detail, "refused")
			}
			switch {
			case ev.Stopped || ev.Denied:
				f, err := freeze.Session(ev.TGID, freeze.Options{})
				if err != nil {
					detail = append(detail, "session not frozen: "+err.Error())
				} else {
					frozen.add(f)
					if !ev.Denied {
						p.Verdict = raw.PolicyVerdictFrozen
					}
					detail = append(detail, fmt.Sprintf("session %d frozen (%d processes, %s)", f.Session, len(f.Pids), filepath.Base(f.Cgroup)))
				}
				if ev.Kind == policy.KindPtrace && !ev.Denied {
					// The attach went through (detect mode refuses nothing): a tracer that never resumes the
					// daemon holds it at its next signal. Its death detaches it.
					if err := unix.Kill(ev.TGID, unix.SIGKILL); err == nil {
						p.Verdict = raw.PolicyVerdictKilled
						detail = append(detail, "tracer killed (it had attached to the daemon)")
					}
				}
			case ev.StopErr != nil:
				detail = append(detail, "not stopped: "+ev.StopErr.Error())
			}
			p.Detail = strings.Join(detail, "; ")
			w.Policy(p)
			log.Error().Str("action", p.Action).Str("verdict", p.Verdict).Int("sender_pid", ev.TGID).Str("sender_comm", ev.Comm).
				Uint32("sender_auid", ev.AUID).Str("detail", p.Detail).Msg("ALERT: attempt on the audit daemon")
			if done == nil {
				drain.Reset(200 * time.Millisecond)
			}
		}
	}
}

// protectSink passes every event to the writer and hands to defendAudit the ones that show someone else
// attacking the daemon through what the kernel audits: the protection watches (protectKey: a write to the
// archive, an access to the identity key) and changes of the audit configuration (CONFIG_CHANGE) made by
// another process's system call. The event itself is always archived first; when defendAudit is behind by
// more than the channel holds, the response (freeze, POLICY leaf) is skipped and counted in skipped, which
// the next POLICY leaf and the log report.
type protectSink struct {
	*writer.Writer
	hits    chan *audit.RawEvent
	skipped atomic.Uint64
}

var protectKeyField = []byte(` key="` + protectKey + `"`)

func (s *protectSink) Append(ev *audit.RawEvent) {
	s.Writer.Append(ev)
	// Only with protection on, and cheap: the record types are compared first; one bytes.Contains on the
	// SYSCALL record of events that carry a key.
	if len(ev.Records) == 0 || !attackOnDaemon(ev) {
		return
	}
	select {
	case s.hits <- ev.Clone():
	default:
		s.skipped.Add(1)
	}
}

// attackOnDaemon reports whether ev is a protection watch's hit or a configuration change that another
// process's system call made (the kernel adds that call's SYSCALL record to a CONFIG_CHANGE since 4.18;
// the daemon's own changes carry its pid and are left to the configuration guard).
func attackOnDaemon(ev *audit.RawEvent) bool {
	first := ev.Records[0]
	if first.Type == audit.TypeSyscall {
		return bytes.Contains(first.Text, protectKeyField)
	}
	if first.Type != audit.TypeConfigChange {
		return false
	}
	for _, r := range ev.Records[1:] {
		if r.Type == audit.TypeSyscall {
			return !bytes.Contains(r.Text, selfPIDField)
		}
	}
	return false
}

// selfPIDField is this process's pid as a SYSCALL record writes it.
var selfPIDField = []byte(fmt.Sprintf(" pid=%d ", os.Getpid()))

// defendAudit freezes the session of whoever protectSink caught and writes a POLICY leaf: action file for
// the watches, audit-config for configuration changes (the configuration guard restores those and writes
// its own leaf). A burst from one process (auditctl -D removes rule by rule) gets one response. The doer
// has often exited by then (auditctl): its parent's session is frozen instead.
func defendAudit(ctx context.Context, s *protectSink, w *writer.Writer, frozen *frozenSessions, log zerolog.Logger) {
	seen := map[uint32]time.Time{} // pids answered in the last burstWindow
	var reported uint64            // s.skipped already reported
	for {
		var ev *audit.RawEvent
		select {
		case <-ctx.Done():
			return
		case ev = <-s.hits:
		}
		d := audit.Decode(ev)
		if d.PID == nil || int(*d.PID) == os.Getpid() {
			continue
		}
		now := time.Now()
		for p, at := range seen {
			if now.Sub(at) > burstWindow {
				delete(seen, p)
			}
		}
		if _, ok := seen[*d.PID]; ok {
			continue
		}
		seen[*d.PID] = now
		pid := int(*d.PID)
		sender := &raw.Process{PID: pid, TGID: pid, Comm: d.Comm, Exe: d.Exe}
		for dst, src := range map[*uint32]*uint32{&sender.UID: d.UID, &sender.EUID: d.EUID, &sender.AUID: d.AUID, &sender.Ses: d.Ses} {
			if src != nil {
				*dst = *src
			}
		}
		p := raw.Policy{Action: raw.PolicyActionFile, Verdict: raw.PolicyVerdictRecorded, Sender: sender}
		if ev.Records[0].Type == audit.TypeConfigChange {
			p.Action = raw.PolicyActionAuditConfig
			p.Detail = fmt.Sprintf("%s (audit serial %d)", configOp(ev.Records[0].Text), ev.Serial)
		} else {
			var paths []string
			for _, pa := range d.Paths {
				paths = append(paths, pa.Name)
			}
			p.Detail = fmt.Sprintf("%s on %s (audit serial %d)", d.Sys, strings.Join(paths, ", "), ev.Serial)
		}
		f, err := freeze.Session(pid, freeze.Options{})
		if err != nil && d.PPID != nil && errors.Is(err, unix.ESRCH) {
			f, err = freeze.Session(int(*d.PPID), freeze.Options{})
			if err == nil {
				p.Detail += fmt.Sprintf("; pid %d had exited, its parent %d's", pid, *d.PPID)
			}
		}
		if err != nil {
			p.Detail += "; session not frozen: " + err.Error()
		} else {
			frozen.add(f)
			p.Verdict = raw.PolicyVerdictFrozen
			p.Detail += fmt.Sprintf("; session %d frozen (%d processes)", f.Session, len(f.Pids))
		}
		if n := s.skipped.Load(); n > reported {
			p.Detail += fmt.Sprintf("; %d earlier catches got no response (the daemon was behind)", n-reported)
			reported = n
		}
		w.Policy(p)
		log.Error().Str("action", p.Action).Str("verdict", p.Verdict).Int("sender_pid", pid).Str("sender_comm", d.Comm).
			Str("detail", p.Detail).Msg("ALERT: attempt on the audit daemon")
	}
}

// burstWindow: catches from one pid within it get one response.
const burstWindow = 5 * time.Second

// configOp is the op= and what it set, from a CONFIG_CHANGE record's text ("op=remove_rule key=exec",
// "op=set audit_enabled=0 old=1").
func configOp(text []byte) string {
	var out []string
	for _, f := range strings.Fields(string(text)) {
		for _, k := range []string{"op=", "key=", "audit_enabled=", "audit_pid=", "audit_failure=", "audit_backlog_limit=", "old="} {
			if strings.HasPrefix(f, k) {
				out = append(out, f)
			}
		}
	}
	return strings.Join(out, " ")
}

// frozenSessions is what watchThaws compares the cgroup tree with: the frozen sessions it found at its
// last look, and those the daemon froze since (told at once, so that a thaw within the same second is
// seen).
type frozenSessions struct {
	mu sync.Mutex
	m  map[string]frozenSeen // by cgroup
}

type frozenSeen struct {
	freeze.Frozen
	added time.Time
}

// add records a session the daemon has just frozen.
func (s *frozenSessions) add(f freeze.Frozen) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]frozenSeen{}
	}
	s.m[f.Cgroup] = frozenSeen{f, time.Now()}
}

// watchThaws records every release of a frozen session: thawing needs nothing but root (docs/protect.md,
// "Thawing"), so every thaw is evidence. At each configCheck it compares the frozen sessions' cgroups with
// what it knew: a cgroup gone (auditarch protect thaw, or removed by hand) or a process no longer in it
// (moved out, which resumes it, or killed) gets a POLICY leaf (action thaw, verdict recorded).
func watchThaws(ctx context.Context, known *frozenSessions, w *writer.Writer, log zerolog.Logger) {
	t := time.NewTicker(configCheck)
	defer t.Stop()
	for {
		start := time.Now()
		list, err := freeze.List()
		if err != nil {
			log.Warn().Err(err).Msg("list the frozen sessions")
		} else {
			now := make(map[string]frozenSeen, len(list))
			for _, f := range list {
				now[f.Cgroup] = frozenSeen{f, start}
			}
			known.mu.Lock()
			for cg, before := range known.m {
				if before.added.After(start) {
					now[cg] = before // frozen after the listing began: next time
					continue
				}
				after, still := now[cg]
				var gone []int
				for _, p := range before.Pids {
					if !still || !slices.Contains(after.Pids, p) {
						gone = append(gone, p)
					}
				}
				if len(gone) == 0 {
					continue
				}
				var how []string
				for _, p := range gone {
					if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err == nil {
						how = append(how, fmt.Sprintf("%d running again", p))
					} else {
						how = append(how, fmt.Sprintf("%d exited", p))
					}
				}
				detail := fmt.Sprintf("session %d, frozen since %s: %s", before.Session, before.At.UTC().Format(time.RFC3339), strings.Join(how, ", "))
				if !still {
					detail += "; its cgroup was removed (auditarch protect thaw, or by hand)"
				}
				w.Policy(raw.Policy{Action: raw.PolicyActionThaw, Verdict: raw.PolicyVerdictRecorded, Detail: detail})
				log.Warn().Int("session", before.Session).Str("detail", detail).Msg("a frozen session was released")
			}
			known.m = now
			known.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// protectPaths has enforce mode refuse what others do to the daemon's files (policy.PathFlag): the
// entries of the archive directory and of its subdirectories (consumers' cursors), of the pins' directory
// and of the embedded store's; the identity key (not even read), its public half, the configuration file
// and the daemon's binary. A path that cannot be protected is logged and left: capture goes on. It returns
// the paths protected.
func protectPaths(g *policy.Guard, cfg Config, log zerolog.Logger) []string {
	type path struct {
		name  string
		flags policy.PathFlag
	}
	paths := []path{{cfg.Archive, policy.FlagDir}, {cfg.Protect.Pins, policy.FlagDir},
		{cfg.Key, policy.FlagFile | policy.FlagNoRead}, {filepath.Join(filepath.Dir(cfg.Key), archive.IdentityPubFile), policy.FlagFile}}
	if ents, err := os.ReadDir(cfg.Archive); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				paths = append(paths, path{filepath.Join(cfg.Archive, e.Name()), policy.FlagDir})
			}
		}
	}
	if cfg.Store.Address == "" {
		dir := cfg.Store.Dir
		if dir == "" {
			if abs, err := filepath.Abs(cfg.Archive); err == nil {
				dir = filepath.Join(filepath.Dir(abs), "store") // as startShipping
			}
		}
		paths = append(paths, path{dir, policy.FlagDir})
	}
	if cfg.source != "" {
		paths = append(paths, path{cfg.source, policy.FlagFile})
	}
	if exe, err := os.Executable(); err == nil {
		paths = append(paths, path{exe, policy.FlagFile})
	}
	var done, logged []string
	for _, p := range paths {
		if err := g.ProtectPath(p.name, p.flags); err != nil {
			log.Warn().Err(err).Str("path", p.name).Msg("protection: this path is not protected")
			continue
		}
		done = append(done, p.name)
		logged = append(logged, p.name+" ("+p.flags.String()+")")
	}
	log.Info().Strs("paths", logged).Msg("protection: files")
	return done
}

// unprotectPaths ends protectPaths' protection of paths.
func unprotectPaths(g *policy.Guard, paths []string, log zerolog.Logger) {
	for _, p := range paths {
		if err := g.UnprotectPath(p); err != nil {
			log.Warn().Err(err).Str("path", p).Msg("protection: release a path")
		}
	}
}

// ppidOf is pid's parent (field 4 of /proc/PID/stat), or 0.
func ppidOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// exeOf is the executable of process pid, or "" once it is gone.
func exeOf(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		exe = helperExe(pid) // confined: the link of a process outside the sandbox is out of reach
	}
	return exe
}

// configCheck is how often the guard compares the kernel's audit configuration with what the run applied,
// besides at every CONFIG_CHANGE record.
const configCheck = time.Second

// guardConfig puts back the audit rules and settings the run applied whenever someone else changes them
// (auditctl -D, -e 0, -b ...), at once after the CONFIG_CHANGE record that reports it and at least every
// configCheck, and records each restoration in a POLICY leaf. It returns when ctx ends.
func guardConfig(ctx context.Context, c *audit.Capture, applied *rules.Applied, w *writer.Writer, changes <-chan struct{}, log zerolog.Logger) {
	t := time.NewTicker(configCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-t.C:
		}
		var what string
		err := c.Control(func(*libaudit.AuditClient) (err error) {
			what, err = applied.Reassert()
			return err
		})
		if what != "" {
			verdict := raw.PolicyVerdictRestored
			if err != nil {
				verdict = raw.PolicyVerdictRecorded
			}
			w.Policy(archive.Policy{Action: raw.PolicyActionAuditConfig, Verdict: verdict, Detail: what})
			log.Warn().Str("changed", what).Str("verdict", verdict).AnErr("restore_error", err).
				Msg("the kernel's audit configuration was changed by someone else")
		} else if err != nil {
			log.Warn().Err(err).Msg("check the kernel's audit configuration")
		}
	}
}

// kernelStateFile, in the archive directory, holds the kernel audit state a run found (rules.Found, JSON)
// from the moment it programs the kernel until it has restored it. A run that finds the file knows the run
// before it was killed, and restores that state instead of the killed run's rules.
const kernelStateFile = "kernel-state.json"

func readKernelState(path string) (*rules.Found, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read saved kernel state: %w", err)
	}
	var f rules.Found
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, &hinted{fmt.Errorf("saved kernel state %s: %w", path, err),
			"remove the file to restore the kernel as this run finds it"}
	}
	return &f, nil
}

// writeKernelState writes f durably (durable.Replace).
func writeKernelState(path string, f rules.Found) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return durable.Replace(path, data, 0o600)
}

// resumeSerials continues the serial accounting of the archive's previous runs of this boot, if any.
func resumeSerials(dir string, re *audit.Reassembler, log zerolog.Logger) error {
	boot, err := bootTime()
	if err != nil {
		return err
	}
	s, err := archive.ScanSerials(dir, boot)
	if err != nil || s.Last == 0 {
		return err
	}
	re.Resume(s.Last, s.LastLeaf, s.Missing, time.Now().UnixNano())
	log.Info().Uint32("last_serial", s.Last).Time("since", time.Unix(0, s.LastLeaf)).Int("unreported_gaps", len(s.Missing)).
		Bool("hold_queue", holdQueue()).Msg("continuing the previous runs' kernel serials")
	return nil
}

// bootTime is when the kernel booted (/proc/stat btime): kernel serials restart at every boot.
func bootTime() (time.Time, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(sec, 0), err
		}
	}
	return time.Time{}, errors.New("/proc/stat has no btime")
}

// holdQueue reports whether the kernel keeps records while no daemon is registered: only when booted
// with audit=1 (audit_default), in a hold queue of at most backlog_limit records (0: unbounded;
// kernel/audit.c, kauditd_hold_skb), and the next daemon receives them first. Without it, records
// issued between two runs are printed to the kernel log (rate-limited) and lost.
func holdQueue() bool {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return false
	}
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "audit="); ok {
			return v == "1" || strings.EqualFold(v, "on")
		}
	}
	return false
}

// version is recorded in every START leaf.
const version = "auditarch 0.3.0-dev"

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// archiveOptions builds the writer's options; the START leaf records the configuration's digest and the
// kernel's audit status.
func (c Config) archiveOptions(id *archive.Identity, set *rules.Set, st *libaudit.AuditStatus, log zerolog.Logger) writer.Options {
	h := sha256.New()
	fmt.Fprintf(h, "%+v\n", c)
	set.Format(h)
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return writer.Options{
		Identity:        id,
		SegmentDuration: c.SegmentDuration,
		EpochDuration:   c.EpochDuration,

		HeartbeatInterval: c.HeartbeatInterval,
		FlushInterval:     c.FlushInterval,
		Sync:              c.Sync,
		DiskFull:          c.DiskFull,
		Log:               log,
		Start: archive.Start{
			Version:      version,
			Hostname:     host,
			BootID:       strings.TrimSpace(string(boot)),
			ConfigDigest: hex.EncodeToString(h.Sum(nil)),
			Kernel: map[string]uint32{"enabled": st.Enabled, "failure": st.Failure, "pid": st.PID,
				"rate_limit": st.RateLimit, "backlog_limit": st.BacklogLimit, "lost": st.Lost, "backlog": st.Backlog,
				"backlog_wait_time": st.BacklogWaitTime, "hold_queue": b2u(holdQueue())},
		},
	}
}
