package webserver

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The connection bound (--web.max-connections). Every open connection
// costs a goroutine and its buffers (about 20 KiB; 5,000 idle keep-alive
// connections took 110 MiB), so their number is bounded. At the bound a new
// connection makes room by closing the one that has been idle longest:
// a keep-alive connection between requests, or one accepted that has not
// sent a whole request yet. Closing it costs its client nothing but a new
// connection. Only when every connection is in the middle of a request is
// the new one closed instead; requests end by themselves, within
// --web.write-timeout at the latest.

type connTable struct {
	max int

	mu    sync.Mutex
	conns map[net.Conn]*connEntry // by the accepted connection (under TLS)

	evicted prometheus.Counter
	refused prometheus.Counter
}

type connEntry struct {
	serving int       // requests being answered (more than one with HTTP/2)
	since   time.Time // when it was accepted or last stopped serving
}

func newConnTable(max int, reg prometheus.Registerer) *connTable {
	t := &connTable{
		max:   max,
		conns: map[net.Conn]*connEntry{},
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ipsec_exporter_http_connections_evicted_total",
			Help: "Idle HTTP connections closed to make room for a new one at --web.max-connections.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ipsec_exporter_http_connections_refused_total",
			Help: "New HTTP connections closed at once because --web.max-connections were all busy with a request.",
		}),
	}
	reg.MustRegister(t.evicted, t.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ipsec_exporter_http_connections",
		Help: "Open HTTP connections (at most --web.max-connections).",
	}, func() float64 {
		t.mu.Lock()
		defer t.mu.Unlock()
		return float64(len(t.conns))
	}))
	return t
}

// limit wraps l so that its connections count against the table.
func (t *connTable) limit(l net.Listener) net.Listener {
	return &limitListener{Listener: l, table: t}
}

type limitListener struct {
	net.Listener
	table *connTable
}

// sendBuffer bounds what the kernel queues for one connection (SO_SNDBUF;
// the kernel doubles it for its bookkeeping). Autotuned, Linux lets a
// client that does not read make it queue 4 MB per connection, which is
// kernel memory charged to the exporter's memory cgroup: 40 such clients
// queued 155 MB. 128 KiB still sends a compressed scrape in a few round
// trips.
const sendBuffer = 128 << 10

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.table.admit(c) {
			if tcp, ok := c.(*net.TCPConn); ok {
				_ = tcp.SetWriteBuffer(sendBuffer) // the kernel's default if it fails
			}
			return c, nil
		}
		_ = c.Close()
	}
}

// admit adds c, closing the connection idle longest when at the bound.
func (t *connTable) admit(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.conns) >= t.max {
		var victim net.Conn
		var since time.Time
		for conn, e := range t.conns {
			if e.serving == 0 && (victim == nil || e.since.Before(since)) {
				victim, since = conn, e.since
			}
		}
		if victim == nil {
			t.refused.Inc()
			return false
		}
		delete(t.conns, victim)
		_ = victim.Close() // its server goroutine sees the error and ends
		t.evicted.Inc()
	}
	t.conns[c] = &connEntry{since: time.Now()}
	return true
}

// connKey carries a request's connection in its context (set by the
// server's ConnContext).
type connKey struct{}

func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, underlying(c))
}

// underlying is the accepted connection under TLS: the one admit saw.
func underlying(c net.Conn) net.Conn {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		return tc.NetConn()
	}
	return c
}

// serving marks a request's connection busy while next answers it.
func (t *connTable) serving(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(net.Conn)
		t.mark(c, +1)
		defer t.mark(c, -1)
		next.ServeHTTP(w, r)
	})
}

// idle waits d, or until the request ends, with the request's connection
// counted as idle, so that waiting costs no connection slot.
func (t *connTable) idle(r *http.Request, d time.Duration) {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	t.mark(c, -1)
	defer t.mark(c, +1)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-r.Context().Done():
	}
}

func (t *connTable) mark(c net.Conn, delta int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.conns[c]; ok {
		e.serving += delta
		e.since = time.Now()
	}
}

// track is the http.Server's ConnState hook: it forgets closed connections.
func (t *connTable) track(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, underlying(c))
}
