package webserver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"
)

func testHash(t *testing.T, password string, cost int) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// fakeClock is the gate's clock in tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTestGate() (*authGate, *fakeClock) {
	g := newAuthGate(prometheus.NewRegistry())
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	g.now = clock.now
	return g, clock
}

func request(from string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	r.RemoteAddr = from
	return r
}

// Credentials that passed are remembered: no second comparison, and wrong
// passwords, however many, neither get remembered nor push them out.
func TestAuthGateRemembers(t *testing.T) {
	g, clock := newTestGate()
	hash := testHash(t, "right", bcrypt.MinCost)
	g.global.burst, g.perSource.burst = time.Hour, time.Hour // no throttling here
	if v := g.check(request("192.0.2.1:1"), "u", "right", hash, true); v != authOK {
		t.Fatalf("right password: %v", v)
	}
	for i := range maxVerified + 1 {
		clock.advance(time.Second)
		if v := g.check(request(fmt.Sprintf("192.0.2.%d:1", 2+i%200)), "u", fmt.Sprint("wrong", i), hash, true); v != authWrong {
			t.Fatalf("wrong password %d: %v", i, v)
		}
	}
	compared := testutil.ToFloat64(g.spent)
	if v := g.check(request("192.0.2.1:1"), "u", "right", hash, true); v != authOK {
		t.Fatalf("right password again: %v", v)
	}
	if testutil.ToFloat64(g.spent) != compared || testutil.ToFloat64(g.requests.WithLabelValues("remembered")) != 1 {
		t.Error("the remembered password was compared again")
	}
	if len(g.verified) != 1 {
		t.Errorf("%d credentials remembered, want 1", len(g.verified))
	}
	// The same password against a new hash (the user's password changed)
	// is compared again, and an unknown user is never let in.
	if v := g.check(request("192.0.2.1:1"), "u", "right", testHash(t, "other", bcrypt.MinCost), true); v != authWrong {
		t.Errorf("old password after a hash change: %v", v)
	}
	if v := g.check(request("192.0.2.1:1"), "nobody", "right", hash, false); v != authWrong {
		t.Errorf("unknown user with a matching hash: %v", v)
	}
}

// One source gets its budget, then waits for it to refill; another source
// still finds room; all sources together never get more than the global
// budget.
func TestAuthGateBudgets(t *testing.T) {
	g, clock := newTestGate()
	hash := testHash(t, "right", bcrypt.MinCost)
	// Budgets smaller than one comparison: each source gets one, then
	// must wait until what it spent has been refilled.
	g.perSource = budget{share: 0.05, burst: time.Nanosecond}
	g.global = budget{share: 0.2, burst: time.Nanosecond}
	attacker, other := request("198.51.100.7:1000"), request("203.0.113.9:2000")
	if v := g.check(attacker, "u", "x", hash, true); v != authWrong {
		t.Fatalf("first attempt: %v", v)
	}
	if v := g.check(attacker, "u", "y", hash, true); v != authThrottled {
		t.Fatalf("second attempt at once: %v", v)
	}
	spent := time.Duration(testutil.ToFloat64(g.spent) * float64(time.Second))
	// The global budget refills four times as fast as a source's.
	clock.advance(time.Duration(float64(spent)/0.2) + time.Millisecond)
	if v := g.check(attacker, "u", "z", hash, true); v != authThrottled {
		t.Errorf("the attacker after the global refill, before its own: %v", v)
	}
	if v := g.check(other, "u", "right", hash, true); v != authOK {
		t.Errorf("another source then: %v", v)
	}
	clock.advance(time.Hour)
	if v := g.check(attacker, "u", "right", hash, true); v != authOK {
		t.Errorf("the attacker's source after its own refill: %v", v)
	}
	if n := testutil.ToFloat64(g.requests.WithLabelValues("throttled")); n != 2 {
		t.Errorf("%v throttled, want 2", n)
	}
}

// A source with a comparison waiting or running is refused at once, so
// one source queues at most one comparison.
func TestAuthGateOneWaitingPerSource(t *testing.T) {
	g, _ := newTestGate()
	hash := testHash(t, "right", bcrypt.MinCost)
	g.compare.Lock() // the first comparison waits here
	done := make(chan authVerdict)
	go func() { done <- g.check(request("192.0.2.1:1"), "u", "right", hash, true) }()
	for {
		g.mu.Lock()
		s := g.sources[netip.MustParsePrefix("192.0.2.1/32")]
		waiting := s != nil && s.waiting
		g.mu.Unlock()
		if waiting {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if v := g.check(request("192.0.2.1:2"), "u", "right", hash, true); v != authThrottled {
		t.Errorf("a second request of the source while its first waits: %v", v)
	}
	g.compare.Unlock()
	if v := <-done; v != authOK {
		t.Errorf("the first request: %v", v)
	}
}

func TestSourcePrefix(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.1:80":              "192.0.2.1/32",
		"[::ffff:192.0.2.1]:80":     "192.0.2.1/32",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::1]:80":   "2001:db8:1:2::/64",
	} {
		if got := sourcePrefix(addr).String(); got != want {
			t.Errorf("%s: %s, want %s", addr, got, want)
		}
	}
}

// The per-source table stays bounded, forgetting sources with a full
// budget first.
func TestAuthGateSourcesBounded(t *testing.T) {
	g, clock := newTestGate()
	g.perSource.burst = time.Nanosecond
	for i := range 3 * maxSources {
		clock.advance(time.Millisecond)
		g.mu.Lock()
		s := g.source(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), clock.now())
		s.refill(clock.now())
		g.mu.Unlock()
	}
	if len(g.sources) > maxSources {
		t.Errorf("%d sources kept, bound %d", len(g.sources), maxSources)
	}
}

// The handler answers as exporter-toolkit's does (401 with a challenge
// without or with wrong credentials, the configured headers, the rate
// limit), and every refusal waits with its connection counted idle.
func TestAuthHandler(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web-config.yml")
	config := fmt.Sprintf("basic_auth_users:\n  alice: %s\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n",
		testHash(t, "secret", bcrypt.MinCost))
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	wc, err := loadWebConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	waits := 0
	gate := newAuthGate(prometheus.NewRegistry())
	gate.global.burst, gate.perSource.burst = time.Hour, time.Hour // budgets are TestAuthGateBudgets'
	h := &authHandler{
		config: wc, gate: gate,
		next: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) }),
		idle: func(*http.Request, time.Duration) { mu.Lock(); waits++; mu.Unlock() },
	}
	for _, c := range []struct {
		user, password string
		want           int
	}{
		{"", "", http.StatusUnauthorized},
		{"alice", "wrong", http.StatusUnauthorized},
		{"bob", "secret", http.StatusUnauthorized},
		{"alice", "secret", http.StatusOK},
		{"alice", "secret", http.StatusOK},
	} {
		r := request("192.0.2.1:1")
		if c.user != "" {
			r.SetBasicAuth(c.user, c.password)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != c.want {
			t.Errorf("%s/%s: status %d, want %d", c.user, c.password, rec.Code, c.want)
		}
		if rec.Header().Get("X-Frame-Options") != "deny" {
			t.Errorf("%s/%s: configured header missing", c.user, c.password)
		}
		if c.want == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") != "Basic" {
			t.Errorf("%s/%s: no challenge", c.user, c.password)
		}
	}
	if waits != 3 {
		t.Errorf("%d refusals waited, want 3", waits)
	}
	if testutil.ToFloat64(h.gate.requests.WithLabelValues("wrong")) != 2 {
		t.Error("the unknown user was not compared like a known one")
	}
}
