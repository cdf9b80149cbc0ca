// Command auditarch-confine starts a login session (or the command given) that cannot signal, stop,
// ptrace or reach by abstract unix socket any process outside it, the audit daemon included, even as
// root after sudo (package policy/confine). It is deliberately tiny: installed with the file capability
// cap_sys_admin (so that no_new_privs need not be set and sudo keeps working inside), it does nothing but
// confine itself and exec, which drops the capability. Deployment for ssh: docs/protect.md.
//
// Usage: auditarch-confine [COMMAND [ARG...]]
//
// Without a command it runs what ssh was asked for (SSH_ORIGINAL_COMMAND) through $SHELL, or $SHELL as
// a login shell.
package main

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/auditarch/auditarch/policy/confine"
)

func main() {
	argv := os.Args[1:]
	if len(argv) == 0 {
		argv = confine.Session(os.Getenv("SHELL"), os.Getenv("SSH_ORIGINAL_COMMAND"))
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "auditarch-confine:", err)
		os.Exit(127)
	}
	argv[0] = path
	// Exec returns only on failure, and then nothing ran: no session starts unconfined.
	fmt.Fprintln(os.Stderr, "auditarch-confine:", confine.Exec(argv, os.Environ()))
	os.Exit(126)
}
