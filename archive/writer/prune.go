package writer

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// PruneRetry is how long the writer waits before it asks Options.Prune for room again after a call that
// freed nothing.
const PruneRetry = time.Second

// SetPrune sets (or, with nil, clears) Options.Prune on a running writer: a daemon builds its pruner
// once the writer has opened the archive.
func (w *Writer) SetPrune(f func(need int64) (freed int64)) {
	if f == nil {
		w.prune.Store(nil)
		return
	}
	w.prune.Store(&f)
}

// pruned asks the Prune hook for room after a write that err refused for want of space, and reports
// whether it freed any (the write is then tried again). Only the flusher calls it.
func (w *Writer) pruned(err error) bool {
	f := w.prune.Load()
	if f == nil || !(errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) {
		return false
	}
	now := time.Now()
	if now.Before(w.pruneNext) {
		return false
	}
	w.mu.Lock()
	need := int64(w.held)
	w.mu.Unlock()
	if freed := (*f)(need); freed > 0 {
		w.opts.Log.Warn().Int64("freed", freed).Msg("archive disk full: retention removed segments the store holds, to make room")
		w.pruneNext = time.Time{}
		return true
	}
	w.pruneNext = now.Add(PruneRetry)
	return false
}
