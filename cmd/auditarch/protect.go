package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/auditarch/auditarch/policy"
	"github.com/auditarch/auditarch/policy/freeze"
)

// protectCmd is "auditarch protect status" and "auditarch protect thaw SESSION".
func protectCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: protect needs status or thaw SESSION", errUsage)
	}
	switch args[0] {
	case "unpin": // an uninstall (the package's prerm, on remove): the programs stop protecting anything
		dir := policy.DefaultPinDir
		if len(args) == 2 {
			dir = args[1]
		} else if len(args) > 2 {
			return fmt.Errorf("%w: protect unpin takes at most the pins' directory", errUsage)
		}
		if err := policy.Unpin(dir); err != nil {
			return &hinted{err, "stop the daemon first (systemctl stop auditarch): a running daemon keeps its pins"}
		}
		fmt.Fprintf(stdout, "unpinned %s: the protection programs detach once no daemon holds them\n", dir)
		return nil
	case "status":
		if len(args) != 1 {
			return fmt.Errorf("%w: protect status takes no argument", errUsage)
		}
		pins, err := os.ReadDir(policy.DefaultPinDir)
		switch {
		case err == nil:
			names := make([]string, len(pins))
			for i, p := range pins {
				names[i] = p.Name()
			}
			fmt.Fprintf(stdout, "detect mode pinned in %s: %s\n", policy.DefaultPinDir, strings.Join(names, " "))
		case os.IsNotExist(err):
			fmt.Fprintf(stdout, "detect mode: nothing pinned in %s (protect.mode off, or never started)\n", policy.DefaultPinDir)
		default:
			return err
		}
		frozen, err := freeze.List()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "frozen sessions: %d\n", len(frozen))
		for _, f := range frozen {
			fmt.Fprintf(stdout, "  session %d since %s: pids %v (%s)\n", f.Session, f.At.UTC().Format("2006-01-02T15:04:05Z"), f.Pids, f.Cgroup)
		}
		return nil
	case "thaw":
		if len(args) != 2 {
			return fmt.Errorf("%w: protect thaw needs the session id that status lists", errUsage)
		}
		sid, err := strconv.Atoi(args[1])
		if err != nil {
			return fmt.Errorf("%w: protect thaw: %q is not a session id", errUsage, args[1])
		}
		frozen, err := freeze.List()
		if err != nil {
			return err
		}
		for _, f := range frozen {
			if f.Session == sid {
				if err := freeze.Thaw(f.Cgroup); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "thawed session %d: pids %v back in their cgroups (%s removed)\n", sid, f.Pids, filepath.Base(f.Cgroup))
				return nil
			}
		}
		return fmt.Errorf("no frozen session %d (auditarch protect status lists them)", sid)
	}
	return fmt.Errorf("%w: protect %q: want status or thaw", errUsage, args[0])
}
