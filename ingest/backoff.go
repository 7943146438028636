package ingest

import (
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// delayRefusal waits before a failed password login is refused, as long
// as the failure backoff says for its address and user (auth.Backoff). It
// waits on the client's own connection goroutine: no other client, and no
// login that succeeds, waits with it. The broker closing ends the wait.
func (h *hook) delayRefusal(cl *mqtt.Client, user string, known bool) {
	b := h.b
	if b.backoff == nil {
		return
	}
	d := b.backoff.Failed(cl.Net.Remote, user, known)
	if d <= 0 {
		return
	}
	b.metrics.AuthDelayed.WithLabelValues(cl.Net.Listener).Inc()
	b.metrics.AuthWaiting.Inc()
	defer b.metrics.AuthWaiting.Dec()
	b.rlog.Log(slog.LevelWarn, "auth_backoff:"+cl.Net.Listener,
		"repeated failed logins from this address or for this user: the refusal waits",
		"listener", cl.Net.Listener, "client", cl.ID, "remote", cl.Net.Remote, "user", user, "delay", d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.ctx.Done():
	}
	// The connection's deadline (connect_timeout) may have passed meanwhile:
	// leave the refusal time to be written.
	_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(b.cfg.Limits.ConnectTimeout))
}
