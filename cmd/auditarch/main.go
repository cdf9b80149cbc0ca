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
    auditarch run --archive DIR [--key FILE] [--segment-duration D] [--rules FILE] [--config FILE] [--lock]
                  [--store ADDR --store-key PUBFILE | --store-dir DIR] [--protect MODE [--protect-pins DIR]]
                  [--supervise]
                  [--sandbox on|off]
    auditarch status [--json] [--config FILE] [--archive DIR] [--grace D] [--max-receipt-age D] [--max-lag N]
    auditarch store [--config FILE] --listen ADDR --dir DIR [--enroll PUBFILE]... [--grace D] [--stopped-alarm D]
                    [--metrics ADDR] [--s3-endpoint URL --s3-bucket B --s3-retention D [--s3-canary D]]
                    [--mail-config FILE]
    auditarch store enroll --dir DIR PUBFILE...
    auditarch store verify [--json] [--s3-endpoint URL --s3-bucket B] DIR
    auditarch keygen --out DIR [--origin NAME]
    auditarch verify [--key PUBFILE] [--json] [--witness FILE] [--store-key PUBFILE --receipts FILE]
                     [--grace D] DIR...
    auditarch show [--json] DIR
    auditarch search DIR [--since T] [--until T] [--syscall S] [--pid N] [--auid N] [--uid N]
                         [--exe P] [--path SUBSTR] [--addr IP[:PORT]] [--key K] [--json]
    auditarch export [--format ecs|rfc5424] [--original] [--host NAME] DIR [search options]
    auditarch rules [--rules FILE] [--config FILE]
    auditarch report [--since T] [--level L] [--config FILE] DIR
    auditarch alert test [--config FILE]
    auditarch protect status | thaw SESSION | unpin [DIR]

Commands:
    run     Register as the kernel's audit daemon, program the audit rules and append every event,
            with its raw kernel records, to the signed, hash-linked archive in DIR. Runs in the
            foreground; SIGTERM or SIGINT flushes, restores the kernel's audit rules and settings,
            and exits 0. Every durable block is shipped to the store (--store, pinned by --store-key);
            without one, run starts a store in-process on loopback (--store-dir, default "store"
            beside DIR) and ships to it.
    status  One screen on the daemon of this host (the archive of --config, or --archive): running or
            not (pid, since, version), the kernel's audit status and whether its rules are the
            configured set (digests), the last checkpoint and its age, the store's newest receipt
            (age, leaves behind), each consumer's lag (SIEM sinks' cursors), protection and frozen
            sessions. Exit status 0: all well; 3: something needs attention (listed); 1: error.
            Run as root: the kernel's status needs it. See docs/operate.md.
    store   The write-once store: accepts enrolled hosts over TLS 1.3, verifies what they send
            before it fsyncs and acknowledges with a signed receipt, keeps what contradicts its copy
            as evidence, and logs alarms (DIR/alarms.log). With --s3-*, sealed segments also go to
            S3 under Object Lock COMPLIANCE for --s3-retention (credentials: AWS_ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY). "store enroll" admits hosts by their host.pub; "store verify"
            verifies every host's copy, its receipts, immutable flags and, with a bucket, retention
            (exit status as verify).
    keygen  Create the host identity key pair: DIR/host.key (private, 0600) and DIR/host.pub.
    verify  Prove each archive complete and untampered, or say exactly what is missing or altered.
            Exit status 0: every check passed, and every kernel serial is archived or counted by a
            LOST leaf (listed); 3: evidence is incomplete (missing segments, a run that crashed or
            was killed, an unsigned tail, a silence, serials neither archived nor counted); 4:
            tampering (altered, re-signed, spliced, replayed, rolled-back or truncated data); 1: the
            archive could not be read, or a store receipt is not signed by the store key.
    show    Print the events archived in DIR, one per line; --json prints one JSON object per line.
    search  Print the events that match every given filter, like show, and on stderr how many
            events were scanned and matched.
    export  Write the events that match, as the SIEM sinks send them: ECS JSON or RFC 5424.
    rules   Print the effective audit rules in auditctl syntax.
    report  Print the logcheck-style report of the events archived in DIR since T (default 1h):
            attacks, violations and unusual events by rule file, and the archive's state; the
            same report the daemon mails every alert.report_interval (docs/alert.md).
    alert   "test" sends a test mail now through the relay in the config's alert.mail (sSMTP's
            "mail root" check; docs/mail.md).
    protect "status" shows what detect mode has pinned and the login sessions frozen after an
            attempt on the daemon (cgroup v2 freezer: SIGCONT cannot resume them); "thaw SESSION"
            releases one (root); "unpin" removes the pinned programs (an uninstall: the package's
            prerm runs it on remove, after stopping the daemon). See docs/protect.md.

Options:
    --archive DIR          Where events are archived (run).
    --key FILE             run: the host identity key, created on first run if missing
                           (default /etc/auditarch/keys/host.key); verify: the pinned public key (host.pub).
    --segment-duration D   Cut segments at multiples of D (default 1h).
    --rules FILE           An auditctl-syntax rule file (/etc/audit/rules.d style) instead of the built-in set.
    --protect MODE         run: off (default), detect, enforce or auto (enforce where the kernel runs BPF
                           LSM programs, else detect). BPF programs catch any signal, ptrace or bpf()
                           access aimed at the daemon: enforce refuses it (EPERM), detect stops the doer
                           at once; either way the daemon freezes the doer's session and writes a POLICY
                           leaf (docs/protect.md). The process that started the daemon (its supervisor)
                           may signal it.
    --protect-pins DIR     run: where the programs are pinned (default /sys/fs/bpf/auditarch).
    --supervise            run: restart the daemon whenever it dies other than by SIGTERM/SIGINT (a
                           SIGKILL in detect mode, a crash), from a small parent process that the daemon
                           protects; for hosts where no service manager restarts it (config supervise).
    --sandbox on|off       run: once set up, the daemon confines itself (Landlock, seccomp, capabilities;
                           default on, config sandbox:). off is for diagnosis (docs/protect.md).
    --config FILE          A YAML configuration file; flags override it (run: /etc/auditarch/auditarch.yaml
                           in the package; store: /etc/auditarch/store.yaml, the flags' names as keys).
    --lock                 Lock the kernel's audit configuration until reboot (-e 2) once the rules are loaded.
    --store ADDR           run: the store's host:port (config store.address).
    --store-key FILE       run: the store's public key to pin (store.pub); verify: see below.
    --store-dir DIR        run: the embedded store's directory when no --store is given.
    --listen ADDR          store: where to accept hosts, e.g. :7361.
    --dir DIR              store: the store's directory (created 0700 with its key on first use).
    --enroll FILE          store: admit the host whose identity key is FILE (host.pub); repeatable.
    --witness FILE         verify: a checkpoint seen before must still be in the archive (no rollback, no
                           fork); FILE is updated to the newest checkpoint when the archive passes.
    --store-key FILE       verify: the store's public key (store.pub). Every store receipt in --receipts
                           must carry its cosignature, and the archive must still hold the newest:
                           fewer leaves, or leaves missing below it, is a truncation, another root a fork.
                           Leaves that retention removed (DIR/PRUNED) count as pruned, not missing, when
                           the receipt recorded with them carries its cosignature and the archive kept
                           reaches that receipt's root; the report says so ("pruned: leaves 0..N").
    --receipts FILE        verify: the store's receipts for this host (hosts/<origin>/receipts on the
                           store). The host's own DIR/receipts is no evidence: root on the host can cut it.
    --grace D              verify, store, status: how much longer than the heartbeat a silence may last
                           (default 5s).
    --mail-config FILE     store: mail the store's alarms (fork, tampered, silence, canary...) as the daemon
                           mails its alerts: FILE is an auditarch config whose alert section (mail, rules,
                           level, spool: default DIR/mail-spool) is used (docs/alert.md).
    --max-receipt-age D    status: a newest store receipt older than D while leaves are not covered needs
                           attention (default 1m).
    --max-lag N            status: a consumer more than N leaves behind needs attention (default 100000).
    --metrics ADDR         store: serve Prometheus metrics on ADDR's /metrics, a loopback address such as
                           127.0.0.1:9762 (the daemon: metrics.listen in the config). See docs/operate.md.
    --stopped-alarm D      store: alarm when a host whose daemon stopped cleanly has not started again
                           within D of its STOP (default 10m); a stopped host raises no silence alarm.
    --json                 One JSON object per event and line (show, search); the report (verify).
    --since T              report: from T, an RFC 3339 time, a date or a duration back from now (2h, 7d).
    --level L              report: workstation, server or paranoid (default alert.level, server).

Examples:
    auditarch keygen --out /etc/auditarch/keys
    auditarch run --archive /var/lib/auditarch --key /etc/auditarch/keys/host.key
    auditarch verify --key host.pub /var/lib/auditarch
    auditarch verify --key host.pub --store-key store.pub --receipts receipts-from-store /var/lib/auditarch
    auditarch store --listen :7361 --dir /var/lib/auditarch-store --enroll web1.pub
    auditarch store verify /var/lib/auditarch-store
    auditarch status --config /etc/auditarch/auditarch.yaml
    auditarch search /var/lib/auditarch --since 2h --syscall execve --auid 1000
    auditarch show --json /var/lib/auditarch | jq 'select(.syscall=="execve") | .args'
    auditarch rules --rules /etc/audit/rules.d/audit.rules
    auditarch report --since 24h --config /etc/auditarch/auditarch.yaml /var/lib/auditarch
    auditarch alert test --config /etc/auditarch/auditarch.yaml`

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
	case "protect":
		return protectCmd(args[1:], stdout)
	case "keygen":
		return keygenCmd(args[1:], stdout)
	case "verify":
		return verifyCmd(args[1:], stdout)
	case "search":
		return searchCmd(args[1:], stdout, stderr)
	case "export":
		return exportCmd(args[1:], stdout)
	case "store":
		return storeCmd(args[1:], stdout, stderr)
	case "report":
		return reportCmd(args[1:], stdout)
	case "alert":
		return alertCmd(args[1:], stdout)
	case "status":
		return statusCmd(args[1:], stdout)
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
