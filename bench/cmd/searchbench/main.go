// Command searchbench times `auditarch search` over a 10-million-event archive that spans 90 days.
//
// The archive is generated once and cached (-dir, default OUT/search10m; -regen forces it): synthetic
// events modeled on testdata/workload.cap (SYSCALL, EXECVE, CWD, PATH, SOCKADDR and PROCTITLE records as
// the kernel writes them) from 20 people of uneven activity and the host's daemons, with office hours and
// quiet weekends, written through writer.Writer on a fake clock (Options.Now) with one-hour segments cut
// at each hour, as 90 days of capture leave an archive. Each query then runs as the auditarch binary
// does it for a user, once with the archive's pages evicted from the page cache (cold) and once warm,
// and its number of results is checked against what the generator knows it wrote.
//
// Target: a time-selective query (a one-hour window and --exe) answers in under 2 s. Full scans (no time
// window) are timed and reported too, without a target.
//
// Usage, from the module root:
//
//	go run ./bench/cmd/searchbench -out bench-out [-auditarch bin/auditarch]
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

const (
	targetSelective = 2 * time.Second
	formatVersion   = 1 // bump when the generator changes: cached archives are regenerated
)

// manifest describes a generated archive; it is written last, so an archive without one is incomplete.
type manifest struct {
	Version     int              `json:"version"`
	Events      int              `json:"events"`
	Days        int              `json:"days"`
	Start       string           `json:"start"`
	Seed        uint64           `json:"seed"`
	Writer      string           `json:"writer"` // SHA-256 of the archive package's sources that wrote it
	GeneratedAt string           `json:"generated_at"`
	GenSeconds  float64          `json:"generation_seconds"`
	CutSeconds  float64          `json:"generation_seconds_at_hour_cuts"` // waiting for the writer to rotate
	Bytes       int64            `json:"archive_bytes"`
	Segments    int              `json:"segments"`
	Expected    map[string]int64 `json:"expected"`
}

func (m *manifest) startTime() time.Time {
	t, _ := time.Parse(time.RFC3339, m.Start)
	return t
}

// query is one search command line and the generator's count of the events it must print.
type query struct {
	Name      string
	Args      []string
	Selective bool // time-selective: held to the target
	Expected  int64
	match     func(*synthEvent) bool
}

// result is one query's measurement.
type result struct {
	Name      string   `json:"name"`
	Args      []string `json:"args"`
	Selective bool     `json:"time_selective"`
	Expected  int64    `json:"expected"`
	Matches   int64    `json:"matches"`
	Cold      float64  `json:"cold_seconds"`
	Warm      float64  `json:"warm_seconds,omitempty"` // time-selective queries only
	CPU       float64  `json:"cpu_seconds"`            // user+system time of the last run
	Verdict   string   `json:"verdict,omitempty"`
}

func main() {
	out := flag.String("out", "bench-out", "output directory")
	dir := flag.String("dir", "", "archive cache directory (default OUT/search10m)")
	bin := flag.String("auditarch", "", "auditarch binary (default: build ./cmd/auditarch into OUT)")
	events := flag.Int("events", 10_000_000, "events to generate")
	days := flag.Int("days", 90, "days the archive spans")
	regen := flag.Bool("regen", false, "generate the archive even if a matching one is cached")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (generation) to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "searchbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *dir == "" {
		*dir = filepath.Join(*out, "search10m")
	}
	if err := run(*out, *dir, *bin, *events, *days, *regen); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "searchbench:", err)
		os.Exit(1)
	}
}

func run(out, dir, bin string, events, days int, regen bool) error {
	if err := os.MkdirAll(out, 0o750); err != nil {
		return err
	}
	if bin == "" {
		bin = filepath.Join(out, "auditarch")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/auditarch")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/auditarch: %w: %s", err, strings.TrimSpace(string(msg)))
		}
	}
	writer, err := writerDigest()
	if err != nil {
		return err
	}
	want := manifest{Version: formatVersion, Events: events, Days: days, Start: "2025-01-06T00:00:00Z", Seed: 42, Writer: writer}
	qs := queries(want.startTime(), days)
	m, cached, err := load(dir, want)
	if err != nil {
		return err
	}
	if !cached || regen {
		if m, err = build(dir, want, qs); err != nil {
			return err
		}
	}
	for _, q := range qs {
		q.Expected = m.Expected[q.Name]
	}
	arch := filepath.Join(dir, "archive")
	start := m.startTime()
	perEvent := float64(m.Bytes) / float64(m.Events)
	how := "in this run"
	if cached && !regen {
		how = "cached, generated " + m.GeneratedAt
	}
	fmt.Printf("\nauditarch search benchmark — %s\n", arch)
	fmt.Printf("archive: %d events over %d days (%s .. %s), %d one-hour segments, %.1f MB on disk (%.1f bytes/event)\n",
		m.Events, m.Days, start.Format(time.DateOnly), start.AddDate(0, 0, m.Days).Format(time.DateOnly), m.Segments,
		float64(m.Bytes)/1e6, perEvent)
	fmt.Printf("generation: %.1f s, %.0f events/s (%s); the writer's flusher (leaf hashing, zstd) sets the pace: the generator\n"+
		"  waited %.1f s of it at the %d hour cuts, where the flusher must take every event appended so far before the cut\n",
		m.GenSeconds, float64(m.Events)/m.GenSeconds, how, m.CutSeconds, m.Days*24-1)

	var results []result
	failed := false
	for _, q := range qs {
		r := result{Name: q.Name, Args: q.Args, Selective: q.Selective, Expected: q.Expected}
		if err := evict(arch); err != nil {
			return fmt.Errorf("evict the archive from the page cache: %w", err)
		}
		n, cold, cpu, err := search(bin, arch, q.Args)
		if err != nil {
			return err
		}
		r.Matches, r.Cold, r.CPU = n, cold.Seconds(), cpu.Seconds()
		if q.Selective {
			// Again with the archive in the page cache. Full scans are CPU-bound and long: once is enough.
			n2, warm, cpu, err := search(bin, arch, q.Args)
			if err != nil {
				return err
			}
			if n2 != n {
				n = -1
			}
			r.Warm, r.CPU = warm.Seconds(), cpu.Seconds()
		}
		if n != q.Expected {
			failed = true
			r.Verdict = fmt.Sprintf("WRONG: %d results, %d expected", r.Matches, q.Expected)
		} else if q.Selective {
			r.Verdict = verdict(r.Cold < targetSelective.Seconds() && r.Warm < targetSelective.Seconds())
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%-48s %8d results  cold %6.2fs", q.Name, r.Matches, r.Cold)
		if q.Selective {
			fmt.Fprintf(os.Stderr, "  warm %6.2fs", r.Warm)
		}
		fmt.Fprintln(os.Stderr)
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "query\tresults\texpected\tcold\twarm\tCPU (last run)\ttarget")
	for _, r := range results {
		target, warm := "- (full scan, no target)", "-"
		if r.Selective {
			target, warm = fmt.Sprintf("< %v %s", targetSelective, r.Verdict), fmt.Sprintf("%.2fs", r.Warm)
		} else if r.Verdict != "" {
			target = r.Verdict
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2fs\t%s\t%.2fs\t%s\n", r.Name, r.Matches, r.Expected, r.Cold, warm, r.CPU, target)
	}
	tw.Flush()
	fmt.Println("command: auditarch search " + arch + " ARGS (args below); cold: the archive's pages evicted from the page cache first (posix_fadvise DONTNEED)")
	for _, r := range results {
		fmt.Printf("  %-44s %s\n", r.Name+":", strings.Join(r.Args, " "))
	}
	js, _ := json.MarshalIndent(struct {
		Manifest manifest `json:"archive"`
		Results  []result `json:"queries"`
	}{m, results}, "", "  ")
	path := filepath.Join(out, "searchbench.json")
	if err := os.WriteFile(path, append(js, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("JSON: %s\n", path)
	if failed {
		return errors.New("a query returned the wrong number of results")
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// queries are the benchmark's searches: time-selective ones in the middle of the span, and full scans.
func queries(start time.Time, days int) []*query {
	day := start.AddDate(0, 0, days/2)
	for day.Weekday() == time.Saturday || day.Weekday() == time.Sunday {
		day = day.AddDate(0, 0, 1)
	}
	h0, h1 := day.Add(14*time.Hour), day.Add(15*time.Hour)
	d0, d1 := day, day.AddDate(0, 0, 1)
	rfc := func(t time.Time) string { return t.Format(time.RFC3339) }
	in := func(e *synthEvent, a, b time.Time) bool { return e.kt >= a.UnixNano() && e.kt < b.UnixNano() }
	hasPath := func(e *synthEvent, s string) bool {
		return strings.Contains(e.cwd, s) || slices.ContainsFunc(e.paths, func(p string) bool { return strings.Contains(p, s) })
	}
	return []*query{
		{Name: "1 h window + --exe /usr/bin/curl", Selective: true,
			Args:  []string{"--since", rfc(h0), "--until", rfc(h1), "--exe", "/usr/bin/curl"},
			match: func(e *synthEvent) bool { return in(e, h0, h1) && e.exe == "/usr/bin/curl" }},
		{Name: "1 h window, every event", Selective: true,
			Args:  []string{"--since", rfc(h0), "--until", rfc(h1)},
			match: func(e *synthEvent) bool { return in(e, h0, h1) }},
		{Name: "1 day window + --syscall execve --auid 1003", Selective: true,
			Args:  []string{"--since", rfc(d0), "--until", rfc(d1), "--syscall", "execve", "--auid", "1003"},
			match: func(e *synthEvent) bool { return in(e, d0, d1) && e.syscall == 59 && e.auid == 1003 }},
		{Name: "full scan: --exe /usr/bin/nc.openbsd",
			Args:  []string{"--exe", "/usr/bin/nc.openbsd"},
			match: func(e *synthEvent) bool { return e.exe == "/usr/bin/nc.openbsd" }},
		{Name: "full scan: --path /etc/shadow",
			Args:  []string{"--path", "/etc/shadow"},
			match: func(e *synthEvent) bool { return hasPath(e, "/etc/shadow") }},
		{Name: "full scan: --addr 203.0.113.7:4444",
			Args:  []string{"--addr", "203.0.113.7:4444"},
			match: func(e *synthEvent) bool { return e.addr == "203.0.113.7:4444" }},
	}
}

// load returns the cached archive's manifest when it was generated with want's parameters.
func load(dir string, want manifest) (manifest, bool, error) {
	var m manifest
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if errors.Is(err, os.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, false, nil
	}
	ok := m.Version == want.Version && m.Events == want.Events && m.Days == want.Days && m.Start == want.Start &&
		m.Seed == want.Seed && m.Writer == want.Writer
	if !ok {
		fmt.Fprintf(os.Stderr, "the cached archive in %s was made by another generator or archive writer: making it again\n", dir)
	}
	return m, ok, nil
}

// writerDigest hashes the archive package's sources: an archive cached by another version of the writer
// is generated again, so that the benchmark always searches what the current writer lays out.
func writerDigest() (string, error) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "github.com/auditarch/auditarch/archive").Output()
	if err != nil {
		return "", fmt.Errorf("go list archive: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "*.go"))
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range files { // Glob sorts
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// build generates the archive into dir (removing what was there) and writes its manifest.
func build(dir string, m manifest, qs []*query) (manifest, error) {
	if err := os.RemoveAll(dir); err != nil {
		return m, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return m, err
	}
	fmt.Fprintf(os.Stderr, "generating %d events over %d days into %s (once; cached afterwards)\n", m.Events, m.Days, dir)
	begin := time.Now()
	if err := generate(dir, &m, qs, func(done int) {
		fmt.Fprintf(os.Stderr, "  %d events, %.0fs\n", done, time.Since(begin).Seconds())
	}); err != nil {
		return m, fmt.Errorf("generate: %w", err)
	}
	m.GenSeconds = time.Since(begin).Seconds()
	m.GeneratedAt = time.Now().UTC().Format(time.RFC3339)
	var err error
	if m.Bytes, m.Segments, err = dirSize(filepath.Join(dir, "archive")); err != nil {
		return m, err
	}
	m.Expected = map[string]int64{}
	for _, q := range qs {
		m.Expected[q.Name] = q.Expected
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return m, os.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o600)
}

// search runs auditarch search and returns the number of lines it printed, the wall time and its CPU time.
func search(bin, arch string, args []string) (int64, time.Duration, time.Duration, error) {
	cmd := exec.Command(bin, append([]string{"search", arch}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	var n int64
	br := bufio.NewReaderSize(stdout, 256<<10)
	buf := make([]byte, 256<<10)
	for {
		k, err := br.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, 0, err
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, 0, 0, fmt.Errorf("auditarch search %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	wall := time.Since(begin)
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return n, wall, cpu, nil
}

// evict drops the archive's files from the page cache, so that the next search reads them from disk.
func evict(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		err = errors.Join(f.Sync(), unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name(), err)
		}
	}
	return nil
}
