// Package confine runs a command in a Landlock domain that cannot reach outside itself: it may not send
// signals to processes outside the domain nor connect to abstract unix sockets created outside it
// (Landlock ABI 6 scopes), and, as with every Landlock domain, it may not ptrace processes outside it
// (which also covers /proc/PID/mem). A login session started this way cannot stop, freeze or inspect the
// audit daemon, even as root (after sudo or su): the domain is inherited across every execve, setuid
// ones included, and cannot be left.
//
// Enforcing a domain needs no_new_privs or CAP_SYS_ADMIN. Without the capability, Exec sets
// no_new_privs, and setuid programs (sudo, su) then run without their privileges. With it (the
// auditarch-confine wrapper carries it as a file capability, and drops it at the execve that follows),
// no_new_privs stays unset: sudo works inside the session, and its root shell stays confined.
// docs/protect.md says how to deploy it for ssh logins.
package confine

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Scopes are the Landlock scopes a confined session gets.
const Scopes = landlock.ScopedSet(ll.ScopeSignal | ll.ScopeAbstractUnixSocket)

// ErrUnsupported is returned when the kernel's Landlock cannot scope signals (ABI 6, Linux 6.12): a
// confinement that would not hold is refused, never silently skipped.
var ErrUnsupported = errors.New("this kernel's Landlock cannot scope signals (needs ABI 6, Linux 6.12 or later)")

// Exec confines the calling process (see the package comment) and replaces it with argv[0] (a path),
// with env. It returns only on failure; nothing has been executed then.
func Exec(argv, env []string) error {
	if len(argv) == 0 {
		return errors.New("confine: no command")
	}
	abi, err := llABI()
	if err != nil || abi < 6 {
		return fmt.Errorf("%w (ABI %d: %v)", ErrUnsupported, abi, err)
	}
	fd, flags, err := landlock.Config{Scoped: Scopes}.NewRulesetFD()
	if err != nil {
		return fmt.Errorf("confine: landlock ruleset: %w", err)
	}
	if fd < 0 {
		return ErrUnsupported
	}
	defer unix.Close(fd)
	runtime.LockOSThread() // never unlocked: the domain is this thread's until the execve below
	if !sysAdmin() {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("confine: no_new_privs: %w", err)
		}
	}
	if err := ll.LandlockRestrictSelf(fd, flags); err != nil {
		return fmt.Errorf("confine: landlock_restrict_self: %w", err)
	}
	return fmt.Errorf("confine: exec %s: %w", argv[0], unix.Exec(argv[0], argv, env))
}

// llABI is the kernel's Landlock ABI version.
func llABI() (int, error) { return ll.LandlockGetABIVersion() }

// sysAdmin reports whether the calling thread has CAP_SYS_ADMIN in its effective set.
func sysAdmin() bool {
	data, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_ADMIN) != 0
		}
	}
	return false
}

// Session returns the command line a confining login wrapper runs: the command ssh was asked for
// (SSH_ORIGINAL_COMMAND) through the user's shell, or else the user's shell as a login shell.
func Session(shell, original string) []string {
	if shell == "" {
		shell = "/bin/sh"
	}
	if original != "" {
		return []string{shell, "-c", original}
	}
	return []string{shell, "-l"}
}
