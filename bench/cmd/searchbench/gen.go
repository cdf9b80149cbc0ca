package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
)

// The synthetic host: a bastion with 20 people on it (some much busier than others) and its daemons.
// Records are written as the kernel writes them (testdata/workload.cap): SYSCALL, then EXECVE, CWD, PATH,
// SOCKADDR as the syscall has them, then PROCTITLE.

type tool struct {
	path, comm string
	weight     int
}

// tools are what people run; weights are relative.
var tools = []tool{
	{"/usr/bin/bash", "bash", 150}, {"/usr/bin/ls", "ls", 120}, {"/usr/bin/cat", "cat", 100},
	{"/usr/bin/vim.basic", "vim", 80}, {"/usr/bin/grep", "grep", 80}, {"/usr/bin/sudo", "sudo", 60},
	{"/usr/bin/ssh", "ssh", 60}, {"/usr/bin/git", "git", 60}, {"/usr/bin/less", "less", 50},
	{"/usr/bin/python3.11", "python3", 50}, {"/usr/bin/curl", "curl", 40}, {"/usr/bin/systemctl", "systemctl", 30},
	{"/usr/bin/journalctl", "journalctl", 30}, {"/usr/bin/ps", "ps", 30}, {"/usr/bin/find", "find", 30},
	{"/usr/bin/tar", "tar", 20}, {"/usr/bin/docker", "docker", 20}, {"/usr/bin/kubectl", "kubectl", 20},
	{"/usr/bin/rsync", "rsync", 10}, {"/usr/bin/scp", "scp", 10}, {"/usr/bin/psql", "psql", 10},
	{"/usr/bin/wget", "wget", 10}, {"/usr/bin/rm", "rm", 40}, {"/usr/bin/mv", "mv", 20},
	{"/usr/bin/nc.openbsd", "nc", 1}, // rare: the needle of the full-scan query
}

// netTools are what connects.
var netTools = []tool{
	{"/usr/bin/ssh", "ssh", 300}, {"/usr/bin/git", "git", 200}, {"/usr/bin/curl", "curl", 200},
	{"/usr/bin/python3.11", "python3", 100}, {"/usr/bin/wget", "wget", 80}, {"/usr/bin/scp", "scp", 60},
	{"/usr/bin/rsync", "rsync", 50}, {"/usr/bin/psql", "psql", 30}, {"/usr/bin/nc.openbsd", "nc", 2},
}

// daemons act without a login uid.
var daemons = []tool{
	{"/usr/sbin/sshd", "sshd", 50}, {"/usr/sbin/cron", "cron", 30}, {"/usr/lib/systemd/systemd-tmpfiles", "systemd-tmpfile", 5},
	{"/usr/sbin/logrotate", "logrotate", 5}, {"/usr/bin/python3.11", "unattended-upgr", 5},
}

var (
	systemFiles = []string{"/etc/passwd", "/etc/group", "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf",
		"/etc/ld.so.cache", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/locale/locale-archive",
		"/var/log/syslog", "/var/log/auth.log", "/etc/ssh/ssh_config", "/etc/sudoers", "/var/lib/dpkg/status"}
	homeFiles = []string{".bashrc", ".profile", ".bash_history", ".ssh/known_hosts", ".ssh/config", ".gitconfig",
		".viminfo", "notes.txt", "projects/api/main.go", "projects/api/go.mod", "projects/deploy/values.yaml",
		"projects/deploy/Makefile", ".kube/config", ".cache/pip/selfcheck.json"}
	projects = []string{"api", "deploy", "infra", "web"}
	hosts    = []host{
		{[4]byte{10, 0, 1, 15}, 22, 300}, {[4]byte{10, 0, 1, 16}, 22, 200}, {[4]byte{10, 0, 2, 40}, 5432, 100},
		{[4]byte{10, 0, 3, 7}, 443, 150}, {[4]byte{140, 82, 121, 4}, 443, 150}, {[4]byte{151, 101, 1, 69}, 443, 100},
		{[4]byte{127, 0, 0, 53}, 53, 200}, {[4]byte{203, 0, 113, 7}, 4444, 1},
	}
)

type user struct {
	name string
	id   uint32
}

// synthEvent is what the generator knows of an event it wrote: enough to count the expected matches of
// every query without decoding.
type synthEvent struct {
	kt      int64 // kernel timestamp, ms resolution, unix ns
	syscall int
	auid    uint32
	exe     string
	cwd     string
	paths   []string
	addr    string // ip:port for connect
}

type generator struct {
	rng    *rand.Rand
	users  []user
	uw     []int // cumulative user weights
	buf    []byte
	recs   []audit.Record
	ev     audit.RawEvent
	se     synthEvent
	serial uint32
	argv   []string
	stamp  []byte
}

func newGenerator(seed uint64) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), serial: 4_000_000}
	names := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
		"mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe"}
	sum := 0
	for i, n := range names {
		g.users = append(g.users, user{name: n, id: uint32(1000 + i)})
		sum += 1000 / (i + 1) // a few people do most of the work
		g.uw = append(g.uw, sum)
	}
	return g
}

// pick returns the index of an item chosen with probability proportional to its weight.
func pick[T any](rng *rand.Rand, items []T, weight func(T) int) int {
	total := 0
	for _, it := range items {
		total += weight(it)
	}
	n := rng.IntN(total)
	for i, it := range items {
		if n < weight(it) {
			return i
		}
		n -= weight(it)
	}
	return len(items) - 1
}

func pickTool(rng *rand.Rand, ts []tool) tool {
	return ts[pick(rng, ts, func(t tool) int { return t.weight })]
}

// event builds the next event at kernel time kt (unix ns, ms resolution) into g.ev and g.se.
func (g *generator) event(kt int64) {
	rng := g.rng
	g.serial++
	sec, msec := kt/1e9, kt%1e9/1e6
	stamp := append(g.stamp[:0], "audit("...)
	stamp = strconv.AppendInt(stamp, sec, 10)
	stamp = append(stamp, '.', byte('0'+msec/100), byte('0'+msec/10%10), byte('0'+msec%10), ':')
	stamp = strconv.AppendUint(stamp, uint64(g.serial), 10)
	stamp = append(stamp, "): "...)
	g.stamp = stamp
	se := &g.se
	*se = synthEvent{kt: kt, paths: se.paths[:0]}

	// Who.
	human := rng.IntN(100) < 85
	var u user
	var uid, auid uint32
	var tty string
	var ses uint32
	var home, cwd string
	if human {
		u = g.users[searchInts(g.uw, rng.IntN(g.uw[len(g.uw)-1]))]
		uid, auid = u.id, u.id
		if rng.IntN(10) == 0 {
			uid = 0 // under sudo
		}
		tty = "pts" + strconv.Itoa(int(u.id)%10)
		ses = uint32(kt/int64(24*time.Hour))%4000 + u.id
		home = "/home/" + u.name
		cwd = home
		if rng.IntN(3) == 0 {
			cwd = home + "/projects/" + projects[rng.IntN(len(projects))]
		}
	} else {
		auid, ses, tty, cwd = 4294967295, 4294967295, "(none)", "/"
	}
	se.auid, se.cwd = auid, cwd

	// What.
	k := rng.IntN(100)
	var t tool
	switch {
	case !human:
		t = pickTool(rng, daemons)
	case k >= 55 && k < 65:
		t = pickTool(rng, netTools)
	default:
		t = pickTool(rng, tools)
	}
	se.exe = t.path
	pid := uint32(1000 + rng.IntN(400_000))
	ppid := uint32(1000 + rng.IntN(400_000))

	var syscall int
	var success string
	var exit int64
	var a1, a2 uint64
	var items int
	g.argv = append(g.argv[:0], t.comm)
	switch {
	case k < 55: // openat
		syscall, items = 257, 1
		p := g.pickFile(human, home)
		se.paths = append(se.paths, p)
		g.argv = append(g.argv, p)
		success, exit, a1, a2 = "yes", int64(3+rng.IntN(20)), 0x7ffd00000000+rng.Uint64N(1<<32), 0x241
		if isSensitive(p) {
			a2 = 0x80000
		}
	case k < 65: // connect
		syscall = 42
		h := hosts[pickHost(rng)]
		se.addr = fmt.Sprintf("%d.%d.%d.%d:%d", h.ip[0], h.ip[1], h.ip[2], h.ip[3], h.port)
		g.argv = append(g.argv, fmt.Sprintf("%d.%d.%d.%d", h.ip[0], h.ip[1], h.ip[2], h.ip[3]))
		success, exit, a1, a2 = "yes", 0, 0x7ffd00000000+rng.Uint64N(1<<32), 0x10
		if rng.IntN(20) == 0 {
			success, exit = "no", -111
		}
	case k < 85 || !human: // execve
		syscall, items = 59, 2
		se.paths = append(se.paths, t.path, "/lib64/ld-linux-x86-64.so.2")
		switch rng.IntN(3) {
		case 0:
			g.argv = append(g.argv, g.pickFile(human, home))
		case 1:
			g.argv = append(g.argv, "--help")
		}
		success, exit, a1, a2 = "yes", 0, 0x55d500000000+rng.Uint64N(1<<32), 0x55d600000000+rng.Uint64N(1<<32)
	default: // unlinkat
		syscall, items = 263, 2
		dir := cwd
		name := dir + "/" + fmt.Sprintf("tmp.%06x", rng.IntN(1<<24))
		se.paths = append(se.paths, dir+"/", name)
		g.argv = append(g.argv, name)
		success, exit, a1, a2 = "yes", 0, 0x7ffd00000000+rng.Uint64N(1<<32), 0
	}
	se.syscall = syscall

	b := g.buf[:0]
	var offs [8][2]int
	var types [8]uint16
	n := 0
	rec := func(typ uint16, body func([]byte) []byte) {
		start := len(b)
		b = append(b, stamp...)
		b = body(b)
		types[n], offs[n] = typ, [2]int{start, len(b)}
		n++
	}
	rec(audit.TypeSyscall, func(b []byte) []byte {
		// arch=c000003e syscall=%d success=%s exit=%d a0=%s a1=%x a2=%x a3=0 items=%d ppid=%d pid=%d
		// auid=%d uid=%d gid=%d euid=%d suid=%d fsuid=%d egid=%d sgid=%d fsgid=%d tty=%s ses=%d
		// comm="%s" exe="%s" key="%s", without fmt: this runs 10 million times.
		b = append(b, "arch=c000003e syscall="...)
		b = strconv.AppendInt(b, int64(syscall), 10)
		b = append(b, " success="...)
		b = append(b, success...)
		b = append(b, " exit="...)
		b = strconv.AppendInt(b, exit, 10)
		b = append(b, " a0="...)
		b = append(b, a0(syscall)...)
		b = append(b, " a1="...)
		b = strconv.AppendUint(b, a1, 16)
		b = append(b, " a2="...)
		b = strconv.AppendUint(b, a2, 16)
		b = append(b, " a3=0 items="...)
		b = strconv.AppendInt(b, int64(items), 10)
		b = append(b, " ppid="...)
		b = strconv.AppendUint(b, uint64(ppid), 10)
		b = append(b, " pid="...)
		b = strconv.AppendUint(b, uint64(pid), 10)
		b = append(b, " auid="...)
		b = strconv.AppendUint(b, uint64(auid), 10)
		for _, k := range []string{" uid=", " gid=", " euid=", " suid=", " fsuid=", " egid=", " sgid=", " fsgid="} {
			b = append(b, k...)
			b = strconv.AppendUint(b, uint64(uid), 10)
		}
		b = append(b, " tty="...)
		b = append(b, tty...)
		b = append(b, " ses="...)
		b = strconv.AppendUint(b, uint64(ses), 10)
		b = append(b, ` comm="`...)
		b = append(b, t.comm...)
		b = append(b, `" exe="`...)
		b = append(b, t.path...)
		b = append(b, `" key="`...)
		b = append(b, key(syscall, se.paths)...)
		return append(b, '"')
	})
	if syscall == 59 {
		rec(audit.TypeExecve, func(b []byte) []byte {
			b = fmt.Appendf(b, "argc=%d", len(g.argv))
			for i, a := range g.argv {
				b = fmt.Appendf(b, ` a%d="%s"`, i, a)
			}
			return b
		})
	}
	if syscall != 42 {
		rec(audit.TypeCwd, func(b []byte) []byte { return append(append(append(b, `cwd="`...), cwd...), '"') })
		for i, p := range se.paths {
			nametype, mode := "NORMAL", "0100644"
			switch {
			case syscall == 263 && i == 0:
				nametype, mode = "PARENT", "040755"
			case syscall == 263:
				nametype = "DELETE"
			case syscall == 59:
				mode = "0100755"
			}
			rec(audit.TypePath, func(b []byte) []byte {
				b = append(b, "item="...)
				b = strconv.AppendInt(b, int64(i), 10)
				b = append(b, ` name="`...)
				b = append(b, p...)
				b = append(b, `" inode=`...)
				b = strconv.AppendInt(b, int64(100000+rng.IntN(9_000_000)), 10)
				b = append(b, " dev=fe:00 mode="...)
				b = append(b, mode...)
				b = append(b, " ouid="...)
				b = strconv.AppendUint(b, uint64(uid), 10)
				b = append(b, " ogid="...)
				b = strconv.AppendUint(b, uint64(uid), 10)
				b = append(b, " rdev=00:00 nametype="...)
				b = append(b, nametype...)
				return append(b, " cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0"...)
			})
		}
	} else {
		h := se.addr
		rec(audit.TypeSockaddr, func(b []byte) []byte {
			ip, port, _ := strings.Cut(h, ":")
			pn, _ := strconv.Atoi(port)
			b = fmt.Appendf(b, "saddr=0200%04X", pn)
			for _, o := range strings.Split(ip, ".") {
				v, _ := strconv.Atoi(o)
				b = fmt.Appendf(b, "%02X", v)
			}
			return append(b, "0000000000000000"...)
		})
	}
	rec(audit.TypeProctitle, func(b []byte) []byte {
		// The kernel hex-encodes the command line (NUL-separated) in upper case.
		const digits = "0123456789ABCDEF"
		b = append(b, "proctitle="...)
		for i, a := range g.argv {
			if i > 0 {
				b = append(b, "00"...)
			}
			for j := 0; j < len(a); j++ {
				b = append(b, digits[a[j]>>4], digits[a[j]&15])
			}
		}
		return b
	})
	g.buf = b
	g.recs = g.recs[:0]
	for i := 0; i < n; i++ {
		g.recs = append(g.recs, audit.Record{Type: types[i], Text: b[offs[i][0]:offs[i][1]:offs[i][1]]})
	}
	g.ev = audit.RawEvent{Kind: audit.KindEvent, Serial: g.serial, Sec: sec, Msec: int32(msec),
		Received: kt + 150*int64(time.Microsecond), EOE: true, Records: g.recs}
}

func a0(syscall int) string {
	if syscall == 257 || syscall == 263 {
		return "ffffffffffffff9c" // AT_FDCWD
	}
	return "3"
}

func key(syscall int, paths []string) string {
	switch syscall {
	case 59:
		return "exec"
	case 42:
		return "net"
	case 263:
		return "delete"
	}
	if isSensitive(paths[0]) {
		return "sensitive_read"
	}
	return "file_write"
}

func isSensitive(p string) bool {
	return p == "/etc/shadow" || p == "/etc/sudoers" || strings.HasPrefix(p, "/etc/ssh/")
}

// pickFile names a file a process opens: mostly the person's own files, sometimes system files, rarely
// /etc/shadow.
func (g *generator) pickFile(human bool, home string) string {
	rng := g.rng
	switch n := rng.IntN(1000); {
	case n < 3:
		return "/etc/shadow"
	case n < 400 || !human:
		return systemFiles[rng.IntN(len(systemFiles))]
	case n < 500:
		return fmt.Sprintf("/tmp/tmp.%06x", rng.IntN(1<<24))
	default:
		return home + "/" + homeFiles[rng.IntN(len(homeFiles))]
	}
}

// host is a peer the synthetic workload connects to, with its weight.
type host struct {
	ip   [4]byte
	port uint16
	w    int
}

func pickHost(rng *rand.Rand) int {
	return pick(rng, hosts, func(h host) int { return h.w })
}

// searchInts returns the first index whose cumulative weight exceeds n.
func searchInts(cum []int, n int) int {
	i, _ := slices.BinarySearch(cum, n+1)
	return min(i, len(cum)-1)
}

// hourWeight is the relative activity in an hour (UTC): office hours on weekdays are busiest.
func hourWeight(t time.Time) float64 {
	w := 0.25
	switch h := t.Hour(); {
	case h >= 9 && h < 18:
		w = 1.6
	case h >= 7 && h < 9, h >= 18 && h < 22:
		w = 0.8
	case h >= 22:
		w = 0.4
	}
	if d := t.Weekday(); d == time.Saturday || d == time.Sunday {
		w *= 0.35
	}
	return w
}

// fakeClock is the writer's clock: the generator sets it to the time of the event it appends. It counts
// how often the writer reads it: the flusher reads it once at the start of each cycle.
type fakeClock struct{ ns, reads atomic.Int64 }

func (c *fakeClock) Now() time.Time {
	c.reads.Add(1)
	return time.Unix(0, c.ns.Load())
}

// cutAt sets the clock to t, a segment boundary, and returns once the writer has run a cycle that read
// it: that cycle took every event appended before and rotated. The flusher reads the clock once, at the
// start of each cycle, and cycles one at a time: the first read after the set starts that cycle, and the
// durable size grows when it has written the seal (or the next read starts the cycle after it).
func (c *fakeClock) cutAt(t time.Time, w *writer.Writer) {
	c.ns.Store(t.UnixNano())
	r0 := c.reads.Load()
	for c.reads.Load() == r0 {
		time.Sleep(50 * time.Microsecond)
	}
	_, _, d1 := w.Stats()
	for {
		if _, _, d := w.Stats(); d > d1 || c.reads.Load() > r0+1 {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// generate writes m.Events events over m.Days days from m.Start into dir, one-hour segments cut exactly
// at each hour, and counts the expected matches of qs.
func generate(dir string, m *manifest, qs []*query, progress func(done int)) error {
	keys := filepath.Join(dir, "keys")
	arch := filepath.Join(dir, "archive")
	if _, err := archive.Keygen(keys, "auditarch/searchbench"); err != nil {
		return err
	}
	id, err := archive.LoadIdentity(filepath.Join(keys, archive.IdentityKeyFile))
	if err != nil {
		return err
	}
	start := m.startTime()
	hours := m.Days * 24
	weights := make([]float64, hours)
	var total float64
	for h := range weights {
		weights[h] = hourWeight(start.Add(time.Duration(h) * time.Hour))
		total += weights[h]
	}
	clock := &fakeClock{}
	clock.ns.Store(start.UnixNano())
	w, err := writer.Create(arch, writer.Options{Identity: id, Now: clock.Now, SegmentDuration: time.Hour,
		FlushInterval: 5 * time.Millisecond, Sync: writer.SyncNone,
		Start: archive.Start{Version: "searchbench", Hostname: "bastion-1"}})
	if err != nil {
		return err
	}
	g := newGenerator(m.Seed)
	var times []int64
	done, cum := 0, 0.0
	for h := 0; h < hours; h++ {
		hs := start.Add(time.Duration(h) * time.Hour)
		cum += weights[h]
		n := int(float64(m.Events)*cum/total+0.5) - done
		times = times[:0]
		for range n {
			times = append(times, hs.UnixNano()+g.rng.Int64N(int64(time.Hour))/1e6*1e6)
		}
		slices.Sort(times)
		for _, kt := range times {
			g.event(kt)
			clock.ns.Store(g.ev.Received)
			w.Append(&g.ev)
			for _, q := range qs {
				if q.match(&g.se) {
					q.Expected++
				}
			}
			done++
			if done%256 == 0 {
				backpressure(w)
			}
			if done%1_000_000 == 0 {
				progress(done)
			}
		}
		// Cut the segment at the hour, as a writer running through it would (within 100 ms).
		if h+1 < hours {
			w0 := time.Now()
			clock.cutAt(hs.Add(time.Hour), w)
			m.CutSeconds += time.Since(w0).Seconds()
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if appended, dropped, _ := w.Stats(); appended != uint64(m.Events) || dropped != 0 {
		return fmt.Errorf("writer took %d events (%d dropped), generated %d", appended, dropped, m.Events)
	}
	return nil
}

// backpressure keeps the generator at most a few batches ahead of the writer: Append never blocks, and
// beyond MaxPending it would drop events.
func backpressure(w *writer.Writer) {
	for {
		appended, _, durable := w.Stats()
		if appended < durable+16384 {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// dirSize returns the bytes and the number of segment files under dir.
func dirSize(dir string) (bytes int64, segments int, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return 0, 0, err
		}
		if fi.Mode().IsRegular() {
			bytes += fi.Size()
			if strings.HasSuffix(e.Name(), ".aseg") {
				segments++
			}
		}
	}
	return bytes, segments, nil
}
