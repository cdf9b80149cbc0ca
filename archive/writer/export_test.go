package writer

// Exported for the external tests (package writer_test) only.

import (
	"testing"
	"time"
)

// FlushNow makes the flusher take what is buffered and waits until it has written it or failed.
func FlushNow(t *testing.T, w *Writer) {
	t.Helper()
	w.mu.Lock()
	pending := len(w.buf)
	w.mu.Unlock()
	if pending == 0 {
		t.Fatal("FlushNow: nothing buffered")
	}
	w.kick <- struct{}{}
	for deadline := time.Now().Add(10 * time.Second); ; {
		w.mu.Lock()
		done := len(w.buf) == 0 && (w.held == 0 || w.werr != nil)
		w.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("FlushNow: the flusher did not take the buffer")
		}
		time.Sleep(time.Millisecond)
	}
}

// WriteError is the last write's outcome (nil once the disk takes the blocks again).
func WriteError(w *Writer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.werr
}
