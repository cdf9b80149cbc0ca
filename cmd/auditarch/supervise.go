package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// supervisedEnv marks the daemon process that a supervisor (run --supervise) started.
const supervisedEnv = "AUDITARCH_SUPERVISED"

// Supervision's restart delays: the first restart is immediate when the daemon had run for at least
// restartReset, else the delay doubles from restartMin up to restartMax (a daemon that cannot start, say
// because another audit daemon is registered, is retried at that pace, for ever).
const (
	restartMin   = time.Second
	restartMax   = time.Minute
	restartReset = 30 * time.Second
)

// supervise is run --supervise where no service manager restarts the daemon: this process stays small
// and restarts the daemon (the same command line, in a child) whenever it exits other than by a stop this
// process passed on (SIGTERM, SIGINT) or a usage error (exit status 2). The daemon protects its parent,
// so with protection on an attempt on the supervisor is caught like one on the daemon. In detect mode a
// SIGKILL cannot be refused: the supervisor starts a new daemon at once, which adopts the pinned programs
// and archives what they recorded meanwhile (the kill, with the killer's identity).
//
// It returns when the daemon stopped for good, with the daemon's last error as an exit status.
func supervise(args []string, log zerolog.Logger) error {
	log = log.With().Str("component", "supervisor").Logger()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	defer signal.Stop(sigs)
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("supervise: %w", err)
	}
	delay := time.Duration(0)
	stopping := false
	for {
		cmd := exec.Command(self, append([]string{"run"}, args...)...)
		cmd.Env = append(os.Environ(), supervisedEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
		started := time.Now()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("supervise: start the daemon: %w", err)
		}
		log.Info().Int("pid", cmd.Process.Pid).Msg("daemon started")
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		stopWatch := make(chan struct{})
		go resumeStopped(cmd.Process.Pid, stopWatch, log)
		var waitErr error
	wait:
		for {
			select {
			case s := <-sigs:
				if s != unix.SIGHUP {
					stopping = true
				}
				cmd.Process.Signal(s)
			case waitErr = <-done:
				break wait
			}
		}
		close(stopWatch)
		code := cmd.ProcessState.ExitCode()
		if stopping || code == 0 || code == 2 {
			if waitErr != nil {
				return &exitError{code: max(code, 1), err: fmt.Errorf("daemon: %w", waitErr)}
			}
			return nil
		}
		if time.Since(started) >= restartReset {
			delay = 0
		} else {
			delay = min(max(2*delay, restartMin), restartMax)
		}
		how := cmd.ProcessState.String() // "signal: killed", "exit status 1"
		log.Error().Int("pid", cmd.Process.Pid).Str("exit", how).Dur("restart_in", delay).Msg("ALERT: the daemon exited; restarting it")
		select {
		case <-time.After(delay):
		case s := <-sigs:
			if s != unix.SIGHUP {
				return nil
			}
		}
	}
}

// stoppedCheck is how often the supervisor looks whether the daemon was stopped.
const stoppedCheck = 100 * time.Millisecond

// resumeStopped continues the daemon whenever it is found stopped (SIGSTOP, SIGTSTP: detect mode cannot
// refuse them, and a stopped daemon makes every audited process wait once the kernel's backlog is full)
// until done is closed. The supervisor is protected, so its SIGCONT passes; the sender was stopped by
// the protection and is frozen by the daemon once it runs again.
func resumeStopped(pid int, done <-chan struct{}, log zerolog.Logger) {
	t := time.NewTicker(stoppedCheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 0 && f[0] == "T" {
			if err := unix.Kill(pid, unix.SIGCONT); err == nil {
				log.Error().Int("pid", pid).Msg("ALERT: the daemon was stopped; resumed it")
			}
		}
	}
}
