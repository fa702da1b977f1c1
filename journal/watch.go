package journal

import (
	"context"
	"sync"
)

// hub fans one source of wake-ups (a listener, a file watch, local commits)
// out to any number of watchers. Each watcher's channel holds at most one
// pending wake-up, so a slow watcher coalesces instead of blocking the hub.
type hub struct {
	startOnce sync.Once
	mu        sync.Mutex
	subs      map[chan struct{}]struct{}
}

func newHub() *hub { return &hub{subs: make(map[chan struct{}]struct{})} }

// subscribe returns a channel woken by wake until ctx or closed ends; then
// it is closed.
func (h *hub) subscribe(ctx, closed context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-closed.Done():
		}
		h.mu.Lock()
		delete(h.subs, ch)
		close(ch)
		h.mu.Unlock()
	}()
	return ch
}

func (h *hub) wake() {
	h.mu.Lock()
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	h.mu.Unlock()
}
