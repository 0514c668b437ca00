package watcher

// injectError hands err to the event loop as if the event source reported
// it (tests).
func (w *Watcher) injectError(err error) {
	select {
	case w.testErrs <- err:
	case <-w.ctx.Done():
	}
}
