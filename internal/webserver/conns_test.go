package webserver

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A real server on loopback with a bound of 3 connections: idle ones make
// room for new ones, the one idle longest first; connections answering a
// request are never closed for a newcomer, which is refused instead.
func TestConnectionBound(t *testing.T) {
	release := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	s, err := Listen(Options{
		ListenAddresses: []string{"127.0.0.1:0"}, MaxConnections: 3,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(handler) }()
	t.Cleanup(func() { _ = s.Close() })
	addr := s.listeners[0].Addr().String()

	// Three connections, each answered once and then idle, oldest first.
	var idle []net.Conn
	for range 3 {
		c := dialAndGet(t, addr, "/")
		idle = append(idle, c)
		time.Sleep(10 * time.Millisecond)
	}
	// A fourth closes the oldest and is served.
	fourth := dialAndGet(t, addr, "/")
	if !closedByServer(idle[0]) {
		t.Error("the connection idle longest was not closed for a new one")
	}
	for _, c := range idle[1:] {
		if closedByServer(c) {
			t.Error("a younger idle connection was closed")
		}
	}
	// Now the three open ones get slow requests: none is idle, so a new
	// connection is refused and they all finish.
	busy := append([]net.Conn{fourth}, idle[1:]...)
	for _, c := range busy {
		_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	waitFor(t, func() bool { return serving(s.conns) == 3 })
	refused, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if !closedByServer(refused) {
		t.Error("a connection beyond the bound was kept while all were busy")
	}
	close(release)
	for _, c := range busy {
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("a busy connection's request: %v", err)
		}
	}
	if testutil.ToFloat64(s.conns.evicted) != 1 || testutil.ToFloat64(s.conns.refused) != 1 {
		t.Errorf("evicted %v, refused %v; want 1 and 1", testutil.ToFloat64(s.conns.evicted), testutil.ToFloat64(s.conns.refused))
	}
}

// A connection that sent part of its headers and stalls (a slow loris)
// counts as idle: it is closed for a newcomer.
func TestConnectionBoundSlowLoris(t *testing.T) {
	s, err := Listen(Options{
		ListenAddresses: []string{"127.0.0.1:0"}, MaxConnections: 1,
		ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: time.Minute,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.Serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	}()
	t.Cleanup(func() { _ = s.Close() })
	addr := s.listeners[0].Addr().String()
	loris, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(loris, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	time.Sleep(50 * time.Millisecond)
	dialAndGet(t, addr, "/")
	if !closedByServer(loris) {
		t.Error("the stalled connection kept its slot")
	}
}

func dialAndGet(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("GET %s: %q", path, body)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// closedByServer tells whether the server closed c (a read sees EOF or a
// reset within a second).
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	_ = c.SetReadDeadline(time.Time{})
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}

func serving(t *connTable) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, e := range t.conns {
		if e.serving > 0 {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 10s")
}

// The timeouts of finding 2 (cebdf7d had only ReadHeaderTimeout): under
// the connection bound, a connection that sends nothing, one idle after a
// request, and one that never reads a long answer are each closed by the
// server within their timeout.
func TestTimeouts(t *testing.T) {
	const timeout = time.Second
	long := strings.Repeat("x", 64<<20) // more than the socket buffers hold
	s, err := Listen(Options{
		ListenAddresses: []string{"127.0.0.1:0"}, MaxConnections: 100,
		ReadTimeout: timeout, WriteTimeout: timeout, IdleTimeout: timeout,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/long" {
				_, _ = io.WriteString(w, long)
				return
			}
			_, _ = io.WriteString(w, "ok")
		}))
	}()
	t.Cleanup(func() { _ = s.Close() })
	addr := s.listeners[0].Addr().String()

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	idle := dialAndGet(t, addr, "/")
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stalled.Close() })
	_, _ = io.WriteString(stalled, "GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
	start := time.Now()
	for name, c := range map[string]net.Conn{"connection that sends nothing": silent, "keep-alive connection idle after a request": idle} {
		if !closedWithin(c, 5*timeout) {
			t.Errorf("a %s is still open %.1fs after it started", name, time.Since(start).Seconds())
		}
	}
	// The stalled reader: once the write timeout has passed, reading
	// what was queued ends in EOF or a reset, well short of the answer.
	time.Sleep(2 * timeout)
	_ = stalled.SetReadDeadline(time.Now().Add(5 * timeout))
	n, err := io.Copy(io.Discard, stalled)
	if err == nil && n > int64(len(long)) {
		t.Errorf("a reader that stalled past the write timeout got the whole answer (%d bytes)", n)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("a reader that stalled past the write timeout: the connection is still open after %d bytes", n)
	}
	waitFor(t, func() bool {
		s.conns.mu.Lock()
		defer s.conns.mu.Unlock()
		return len(s.conns.conns) == 0
	})
}

// closedWithin tells whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}
