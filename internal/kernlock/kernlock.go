// Package kernlock is the machine-wide lock that serialises everything that changes kernel audit state
// in tests and benchmarks: the state is global to the machine, so two of them at once corrupt each other.
package kernlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Path is the lock file; an flock on it is held for as long as kernel audit state is being changed.
const Path = "/run/lock/auditarch-kernel-test.lock"

// Acquire waits up to 10 minutes (or until ctx ends) for the lock. waiting, if not nil, is called once
// when the lock is busy. The returned function releases it.
func Acquire(ctx context.Context, waiting func()) (release func(), err error) {
	fd, err := unix.Open(Path, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open kernel lock: %w", err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Close(fd) }, nil
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("kernel lock %s not acquired: %w", Path, errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
