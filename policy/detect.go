package policy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// DefaultPinDir is where Detect pins its programs, links and maps unless Options.PinDir says otherwise.
const DefaultPinDir = "/sys/fs/bpf/auditarch"

// Hooks: the tracepoints Detect attaches to, by the name their pins carry.
const (
	HookSignalGenerate = "signal_generate" // required
	HookSysEnter       = "sys_enter"       // optional: ptrace, process_vm_*, bpf, umount2 of the pins' bpffs
	HookCgroupFreeze   = "cgroup_freeze"   // optional: freezing a protected process's cgroup
)

var detectHooks = []string{HookSignalGenerate, HookSysEnter, HookCgroupFreeze}

// mapNames are the maps both modes share in the pin directory.
var mapNames = []string{"protected", "objects", "inodes", "cgroups", "bpffs", "events", "counters"}

// ErrIncompatible is returned by Detect when the maps pinned in the pin directory have another layout than
// this binary's (an older or newer version left them): Unpin them, then Detect again.
var ErrIncompatible = ebpf.ErrMapIncompatible

// ErrNotBPFFS is returned by Detect when the pin directory is not on a bpf filesystem.
var ErrNotBPFFS = errors.New("pin directory is not on a bpf filesystem")

// Options configures Detect. The zero value is usable.
type Options struct {
	// PinDir is the directory for the pins (see the package doc); DefaultPinDir when empty. Its parent
	// must be on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf).
	PinDir string
	// Buffer is the capacity of the Events channel; 64 when 0. When the channel is full the reader waits,
	// and the kernel's ring buffer (about 2900 records) takes up the slack before records are lost.
	Buffer int
}

// Guard is the loaded and attached detect mode. Its methods are safe for concurrent use.
type Guard struct {
	dir      string
	maps     detectMaps
	links    map[string]link.Link
	progs    map[string]*ebpf.Program
	adopted  map[string]bool
	reader   *ringbuf.Reader
	events   chan Event
	done     chan struct{}
	bootWall time.Time // the wall-clock time at CLOCK_BOOTTIME zero

	closeOnce sync.Once
	closeErr  error
}

// Detect loads the programs and attaches them (or adopts the ones pinned by a previous instance), and
// starts reading their records. It protects no process: call Protect, for the daemon with os.Getpid().
// The signal_generate hook is required; sys_enter and cgroup_freeze are attached where the kernel accepts
// them (Hooks says).
// Detect needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (root).
func Detect(opts Options) (*Guard, error) {
	spec, err := loadDetect()
	if err != nil {
		return nil, fmt.Errorf("policy: load spec: %w", err)
	}
	g, err := newGuard(opts, spec)
	if err != nil {
		return nil, err
	}
	replace := g.shared()
	for _, hook := range detectHooks {
		err := g.attach(spec, hook, replace)
		if err != nil && hook == HookSignalGenerate {
			g.release()
			return nil, err
		}
	}
	if err := g.start(); err != nil {
		g.release()
		return nil, err
	}
	return g, nil
}

// newGuard checks and makes the pin directory, loads (or reopens) the maps of spec pinned there, and
// returns a Guard holding them, for Detect and Enforce to attach their programs to.
func newGuard(opts Options, spec *ebpf.CollectionSpec) (*Guard, error) {
	dir := opts.PinDir
	if dir == "" {
		dir = DefaultPinDir
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 64
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(dir), &st); err != nil {
		return nil, fmt.Errorf("policy: pin directory %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return nil, fmt.Errorf("policy: %s: %w", filepath.Dir(dir), ErrNotBPFFS)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("policy: %w", err)
	}
	for name, m := range spec.Maps {
		switch {
		case name == ".bss":
			// It holds only unused_event, which keeps struct event in the BTF for bpf2go.
			delete(spec.Maps, name)
			delete(spec.Variables, "unused_event")
		case strings.HasPrefix(name, "."): // .rodata: each program's own constants, not pinned
		default:
			m.Pinning = ebpf.PinByName
		}
	}
	g := &Guard{
		dir:     dir,
		links:   map[string]link.Link{},
		progs:   map[string]*ebpf.Program{},
		adopted: map[string]bool{},
		events:  make(chan Event, opts.Buffer),
		done:    make(chan struct{}),
	}
	if err := spec.LoadAndAssign(&g.maps, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}); err != nil {
		return nil, fmt.Errorf("policy: maps in %s: %w", dir, err)
	}
	return g, nil
}

// shared returns the pinned maps by name, for loading programs that use them.
func (g *Guard) shared() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		"protected": g.maps.Protected, "objects": g.maps.Objects, "inodes": g.maps.Inodes, "cgroups": g.maps.Cgroups,
		"bpffs": g.maps.Bpffs, "events": g.maps.Events, "counters": g.maps.Counters,
	}
}

// start finishes a Detect or Enforce whose programs are attached: it lists the package's objects, drops
// stale protected entries and brings the cgroups and bpffs maps up to date, opens the ring buffer and
// starts reading it.
func (g *Guard) start() error {
	if err := g.listObjects(); err != nil {
		return err
	}
	if err := g.dropStale(); err != nil {
		return err
	}
	if err := g.syncCgroups(); err != nil {
		return err
	}
	if err := g.setBPFFS(); err != nil {
		return err
	}
	var err error
	if g.reader, err = ringbuf.NewReader(g.maps.Events); err != nil {
		return fmt.Errorf("policy: ring buffer: %w", err)
	}
	var boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	g.bootWall = time.Now().Add(-time.Duration(boot.Nano()))
	go g.read()
	return nil
}

// attach loads hook's program and makes sure a link running it is pinned: the pinned link is kept when its
// program has the same tag, else a new link is attached and pinned over it before the old one is released.
func (g *Guard) attach(spec *ebpf.CollectionSpec, hook string, replace map[string]*ebpf.Map) error {
	ps := spec.Copy()
	for name := range ps.Programs {
		if name != hook {
			delete(ps.Programs, name)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(ps, ebpf.CollectionOptions{MapReplacements: replace})
	if err != nil {
		return fmt.Errorf("policy: load %s program: %w", hook, err)
	}
	prog := coll.DetachProgram(hook)
	coll.Close()
	g.progs[hook] = prog

	progPin := filepath.Join(g.dir, "prog_"+hook)
	linkPin := filepath.Join(g.dir, "link_"+hook)
	if old, err := link.LoadPinnedLink(linkPin, nil); err == nil {
		if samePinnedProgram(old, progPin, prog) {
			g.links[hook] = old
			g.adopted[hook] = true
			return nil
		}
		defer old.Close() // released once the new link is pinned in its place
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		return fmt.Errorf("policy: attach %s: %w", hook, err)
	}
	if err := pinReplacing(l, linkPin); err != nil {
		l.Close()
		return err
	}
	g.links[hook] = l
	if err := pinReplacing(prog, progPin); err != nil {
		return err
	}
	return nil
}

// samePinnedProgram reports whether the pinned link runs the pinned program and that program has prog's tag.
func samePinnedProgram(l link.Link, progPin string, prog *ebpf.Program) bool {
	pinned, err := ebpf.LoadPinnedProgram(progPin, nil)
	if err != nil {
		return false
	}
	defer pinned.Close()
	li, err1 := l.Info()
	pi, err2 := pinned.Info()
	ni, err3 := prog.Info()
	if err1 != nil || err2 != nil || err3 != nil {
		return false
	}
	id, ok := pi.ID()
	return ok && li.Program == id && pi.Tag == ni.Tag
}

// pinReplacing pins obj at path, replacing what is pinned there: it pins under a temporary name and renames,
// so path always names a live object.
func pinReplacing(obj interface{ Pin(string) error }, path string) error {
	tmp := path + "_new" // bpffs refuses names with a dot
	os.Remove(tmp)
	if err := obj.Pin(tmp); err != nil {
		return fmt.Errorf("policy: pin %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	return nil
}

// bpf(2) commands whose id argument the sys_enter program watches.
const (
	bpfProgGetFDByID = 13
	bpfMapGetFDByID  = 14
	bpfLinkGetFDByID = 30
)

// listObjects fills the objects map with the ids of this package's programs, maps and links.
func (g *Guard) listObjects() error {
	var keys []detectObjectKey
	for _, m := range g.shared() {
		if info, err := m.Info(); err == nil {
			if id, ok := info.ID(); ok {
				keys = append(keys, detectObjectKey{Cmd: bpfMapGetFDByID, Id: uint32(id)})
			}
		}
	}
	for _, l := range g.links {
		if info, err := l.Info(); err == nil {
			keys = append(keys, detectObjectKey{Cmd: bpfLinkGetFDByID, Id: uint32(info.ID)},
				detectObjectKey{Cmd: bpfProgGetFDByID, Id: uint32(info.Program)})
		}
	}
	for _, p := range g.progs {
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				keys = append(keys, detectObjectKey{Cmd: bpfProgGetFDByID, Id: uint32(id)})
			}
		}
	}
	for _, k := range keys {
		if err := g.maps.Objects.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("policy: objects map: %w", err)
		}
	}
	return nil
}

// dropStale removes from the protected map the processes that have exited or whose pid was reused.
func (g *Guard) dropStale() error {
	var (
		pid   uint32
		start uint64
		stale []uint32
	)
	it := g.maps.Protected.Iterate()
	for it.Next(&pid, &start) {
		now, err := startTicks(int(pid))
		if err != nil || (start != 0 && now != start) {
			stale = append(stale, pid)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("policy: protected map: %w", err)
	}
	for _, p := range stale {
		if err := g.maps.Protected.Delete(p); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("policy: protected map: %w", err)
		}
	}
	return nil
}

// startTicks returns field 22 of /proc/PID/stat: the process's start time in clock ticks since boot.
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')') // comm may hold spaces and parentheses
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Protect adds the process pid to the protected set: from now on, signals sent to it and ptrace or
// process_vm access to it are recorded and stop their doer. The entry names the process by pid and start
// time, so it does not carry over to a process that reuses the pid. Its cgroup and its ancestors join
// the cgroups map (detect mode watches freezing them; enforce mode refuses opening their cgroup.kill and
// cgroup.freeze for write): Protect again after moving a protected process to another cgroup.
func (g *Guard) Protect(pid int) error {
	start, err := startTicks(pid)
	if err != nil {
		return fmt.Errorf("policy: protect %d: %w", pid, err)
	}
	if err := g.maps.Protected.Put(uint32(pid), start); err != nil {
		return fmt.Errorf("policy: protect %d: %w", pid, err)
	}
	return g.syncCgroups()
}

// Unprotect removes the process pid from the protected set. It is not an error if pid was not in it.
func (g *Guard) Unprotect(pid int) error {
	if err := g.maps.Protected.Delete(uint32(pid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("policy: unprotect %d: %w", pid, err)
	}
	return g.syncCgroups()
}

// Hooks returns the hooks attached (detect mode: HookSignalGenerate, and HookSysEnter and HookCgroupFreeze
// where the kernel accepted them; enforce mode: all of enforce's), and
// for each whether it was adopted from the pins of a previous instance rather than attached by this one.
func (g *Guard) Hooks() map[string]bool {
	out := map[string]bool{}
	for h := range g.links {
		out[h] = g.adopted[h]
	}
	return out
}

// Lost returns the number of records the kernel dropped because the ring buffer was full, since the pins
// were created. The doers were stopped all the same.
func (g *Guard) Lost() (uint64, error) {
	var n uint64
	if err := g.maps.Counters.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("policy: counters: %w", err)
	}
	return n, nil
}

// Events returns the records, oldest first, beginning with those the kernel kept while no instance read
// them. The channel is closed by Close. A record is taken off the kernel's ring buffer when it is put on the
// channel: one in the channel when the process dies is lost.
func (g *Guard) Events() <-chan Event { return g.events }

func (g *Guard) read() {
	defer close(g.events)
	var rec ringbuf.Record
	for {
		if err := g.reader.ReadInto(&rec); err != nil {
			return // ringbuf.ErrClosed from Close; nothing else is expected from a ring buffer
		}
		var raw detectEvent
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &raw); err != nil {
			continue // a short record: not written by this program
		}
		select {
		case g.events <- g.decode(&raw):
		case <-g.done:
			return
		}
	}
}

// Close stops reading and releases this process's handles. The pinned programs stay attached and keep
// protecting the processes in the protected set, and recording into the ring buffer for the next Detect.
func (g *Guard) Close() error {
	g.closeOnce.Do(func() {
		close(g.done)
		if g.reader != nil {
			g.closeErr = g.reader.Close()
		}
		g.release()
	})
	return g.closeErr
}

func (g *Guard) release() {
	for _, l := range g.links {
		l.Close()
	}
	for _, p := range g.progs {
		p.Close()
	}
	g.maps.Close()
}

// Unpin removes the pins and the pin directory: an explicit uninstall. The programs detach when the last
// handle is closed (this Guard's, at Close). Never call it on a crash path: the pins are what protects the
// processes while no daemon runs.
func (g *Guard) Unpin() error {
	return Unpin(g.dir)
}

// Unpin removes the pins Detect and Enforce create in dir, and dir. Entries it did not create are left, and so is dir
// then. Removing a pin does not detach a link another process holds open.
func Unpin(dir string) error {
	var errs []error
	// Stop watching umount2 of the pins' file system first: a link released by removing its pin detaches
	// asynchronously, and unmounting that file system is what an uninstall does next.
	if m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "bpffs"), nil); err == nil {
		var none detectBpffsPath
		if err := m.Put(uint32(0), &none); err != nil {
			errs = append(errs, fmt.Errorf("policy: bpffs map: %w", err))
		}
		m.Close()
	}
	var names []string
	for _, h := range append(append([]string{}, detectHooks...), enforceHooks...) {
		names = append(names, "link_"+h, "prog_"+h)
	}
	for _, name := range append(names, mapNames...) {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
