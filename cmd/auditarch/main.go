// Command auditarch captures the kernel's audit events into a local archive, replacing auditd.
//
// main only wires: each subcommand is a small file with a run function returning an error, and os.Exit is
// called in one place.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `Usage:
    auditarch run --archive DIR [--rules FILE] [--config FILE] [--lock]
    auditarch show [--json] DIR
    auditarch rules [--rules FILE] [--config FILE]

Commands:
    run     Register as the kernel's audit daemon, program the audit rules and append every event,
            with its raw kernel records, to the archive in DIR. Runs in the foreground; SIGTERM or
            SIGINT flushes, restores the kernel's audit rules and settings, and exits 0.
    show    Print the events archived in DIR, one per line; --json prints one JSON object per line.
    rules   Print the effective audit rules in auditctl syntax.

Options:
    --archive DIR    Where events are archived (run).
    --rules FILE     An auditctl-syntax rule file (/etc/audit/rules.d style) instead of the built-in set.
    --config FILE    A YAML configuration file; flags override it.
    --lock           Lock the kernel's audit configuration until reboot (-e 2) once the rules are loaded.
    --json           One JSON object per event and line (show).

Examples:
    auditarch run --archive /var/lib/auditarch
    auditarch show --json /var/lib/auditarch | jq 'select(.syscall=="execve") | .args'
    auditarch rules --rules /etc/audit/rules.d/audit.rules`

// exitError carries a process exit status chosen by a subcommand.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errUsage marks command-line mistakes (exit status 2).
var errUsage = errors.New("usage")

// hinted is an error with advice for the user, printed on its own "hint:" line.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

func main() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) }

// Main runs the command line and returns the exit status. Tests call it in-process.
func Main(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "auditarch: error: %v\n", err)
	var h *hinted
	if errors.As(err, &h) && h.hint != "" {
		fmt.Fprintf(stderr, "auditarch: hint: %s\n", h.hint)
	}
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "auditarch: hint: run 'auditarch --help' for usage")
		return 2
	}
	return 1
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: missing command", errUsage)
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stderr)
	case "show":
		return showCmd(args[1:], stdout)
	case "rules":
		return rulesCmd(args[1:], stdout)
	case "-h", "-help", "--help", "help":
		return flag.ErrHelp
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// newFlags returns a flag set that reports errors instead of printing usage.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args, allowing flags after positional arguments (show DIR --json).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
