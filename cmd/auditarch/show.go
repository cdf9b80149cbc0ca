package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/search"
)

func showCmd(args []string, stdout io.Writer) error {
	fs := newFlags("show")
	asJSON := fs.Bool("json", false, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: show needs exactly one archive directory", errUsage)
	}
	return printEvents(pos[0], stdout, *asJSON, search.Query{}, "shown") // the zero Query selects every event
}

// printEvents prints the events of the archive in dir that q selects, one line (or JSON object) each.
// Damaged blocks are skipped and reported at the end with exit status 1; verb says what happened to the
// events before them.
func printEvents(dir string, stdout io.Writer, asJSON bool, q search.Query, verb string) error {
	out := bufio.NewWriterSize(stdout, 64<<10)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	err := search.Run(context.Background(), dir, q, func(ev *audit.Event) error {
		if asJSON {
			return enc.Encode(ev)
		}
		fmt.Fprintln(out, summary(ev))
		return nil
	})
	if archive.IsCorrupt(err) {
		out.Flush()
		return &exitError{code: 1, err: &hinted{err,
			"events before each damaged block were " + verb + "; a torn last block means the writer stopped mid-write"}}
	}
	return err
}

// summary renders one event on one line, in auditd's key=value spirit.
func summary(ev *audit.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s seq=%d", ev.Index, ev.Time, ev.Seq)
	if p := ev.Policy; p != nil {
		fmt.Fprintf(&b, " POLICY action=%s verdict=%s", p.Action, p.Verdict)
		for _, who := range []struct {
			name string
			p    *raw.Process
		}{{"sender", p.Sender}, {"target", p.Target}} {
			if who.p != nil {
				fmt.Fprintf(&b, " %s_pid=%d %s_auid=%d %s_comm=%s", who.name, who.p.PID, who.name, who.p.AUID, who.name, strconv.Quote(who.p.Comm))
			}
		}
		if p.Detail != "" {
			fmt.Fprintf(&b, " detail=%s", strconv.Quote(p.Detail))
		}
		return b.String()
	}
	if ev.Type == "LOST" {
		fmt.Fprintf(&b, " LOST reason=%s lost=%d unit=%s", ev.LostReason, *ev.LostCount, ev.LostUnit)
		if ev.LostFirst != 0 {
			fmt.Fprintf(&b, " first_seq=%d last_seq=%d", ev.LostFirst, ev.LostLast)
		}
		return b.String()
	}
	b.WriteString(" " + ev.Kind)
	kv := func(k, v string) {
		if v != "" {
			b.WriteString(" " + k + "=" + v)
		}
	}
	num := func(k string, p *uint32) {
		if p != nil {
			kv(k, strconv.FormatUint(uint64(*p), 10))
		}
	}
	kv("syscall", ev.Sys)
	if ev.Success != nil {
		kv("success", strconv.FormatBool(*ev.Success))
	}
	if ev.Exit != nil {
		kv("exit", strconv.FormatInt(*ev.Exit, 10))
	}
	if ev.ExitStatus != nil {
		kv("status", strconv.FormatInt(*ev.ExitStatus, 10))
	}
	num("pid", ev.PID)
	num("ppid", ev.PPID)
	num("uid", ev.UID)
	num("auid", ev.AUID)
	num("ses", ev.Ses)
	kv("tty", ev.TTY)
	kv("comm", strconv.Quote(ev.Comm))
	kv("exe", quoteIf(ev.Exe))
	kv("key", quoteIf(ev.Key))
	kv("cwd", quoteIf(ev.Cwd))
	if ev.Args != nil {
		q := make([]string, len(ev.Args))
		for i, a := range ev.Args {
			q[i] = strconv.Quote(a)
		}
		kv("args", "["+strings.Join(q, " ")+"]")
	}
	for _, p := range ev.Paths {
		kv("path", strconv.Quote(p.Name)+"("+strings.ToLower(p.NameType)+")")
	}
	if sa := ev.Sockaddr; sa != nil {
		switch {
		case sa.Port != nil:
			kv("sockaddr", sa.Family+":"+sa.Addr+"#"+strconv.Itoa(int(*sa.Port)))
		case sa.Abstract:
			kv("sockaddr", "unix:@"+strconv.Quote(sa.Path))
		case sa.Path != "":
			kv("sockaddr", "unix:"+strconv.Quote(sa.Path))
		default:
			kv("sockaddr", sa.Family)
		}
	}
	if ev.TargetPID != nil {
		kv("target_pid", strconv.Itoa(int(*ev.TargetPID)))
	}
	if ev.Signal != nil {
		kv("signal", strconv.Itoa(*ev.Signal))
	}
	kv("msg", quoteIf(ev.Msg))
	if ev.Late {
		b.WriteString(" late")
	}
	if ev.Partial {
		b.WriteString(" partial")
	}
	return b.String()
}

func quoteIf(s string) string {
	if s == "" {
		return ""
	}
	return strconv.Quote(s)
}
