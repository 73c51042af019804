package webserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/config"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// Basic auth (basic_auth_users of the web config) with a bounded price.
// A bcrypt comparison costs tens of milliseconds of CPU on purpose, and
// anyone who can reach the port can make the exporter run one per request
// by sending a random password. So:
//   - a request without credentials, or from a source that already has a
//     comparison waiting, is refused without bcrypt;
//   - credentials that passed are remembered (an HMAC of user, password and
//     hash under a key of this process, not the password): a scraper
//     that authenticated once never runs bcrypt again, and wrong passwords
//     are never remembered, so they cannot push it out;
//   - comparisons run one at a time, and their CPU time is charged to two
//     budgets: all sources together may use authShare of one core, one
//     source (an IPv4 address, an IPv6 /64) sourceShare. A request over
//     budget gets 429 and Retry-After, without bcrypt. A single attacker
//     gets sourceShare, and a scraper from elsewhere still finds room; many
//     attacking sources together get authShare, never more;
//   - every refusal (401, 429) comes after unauthenticatedDelay, while its
//     connection counts as idle (the first to close at
//     --web.max-connections). So a client without the password gets at
//     most one answer per connection per second however fast it sends, and
//     what those cheap answers cost is bounded by the connection bound, not
//     by the client's speed.

const (
	// authShare bounds what comparisons cost all sources together, as a
	// share of one core; authBurst is how much may be spent at once.
	authShare = 0.2
	authBurst = 500 * time.Millisecond
	// sourceShare and sourceBurst are the same for one source: a few
	// comparisons at bcrypt cost 10 (about 60 ms each) at once, then one
	// every second or so.
	sourceShare = 0.05
	sourceBurst = 300 * time.Millisecond
	// maxSources bounds the per-source budgets kept; sources whose budget
	// is full again are forgotten first (they lose nothing).
	maxSources = 4096
	// maxVerified bounds the remembered good credentials.
	maxVerified = 64
	// unauthenticatedDelay is how long a refusal waits.
	unauthenticatedDelay = time.Second
)

type authVerdict int

const (
	authOK authVerdict = iota
	authWrong
	authThrottled
)

// authGate decides on credentials.
type authGate struct {
	key [32]byte // the HMAC key of remembered credentials

	mu        sync.Mutex
	verified  map[[32]byte]time.Time // remembered good credentials: when added
	global    budget
	sources   map[netip.Prefix]*sourceState
	perSource budget // what a new source starts with

	compare sync.Mutex // one bcrypt comparison at a time

	requests *prometheus.CounterVec
	spent    prometheus.Counter
	// now is time.Now, replaced in tests.
	now func() time.Time
}

// budget is CPU time that may be spent, refilled at share seconds per
// second up to burst; a comparison may start while it is positive and is
// charged when it ends, so it can go below zero by one comparison.
type budget struct {
	left  time.Duration
	at    time.Time
	share float64
	burst time.Duration
}

func (b *budget) refill(now time.Time) {
	if b.at.IsZero() {
		b.left, b.at = b.burst, now
		return
	}
	b.left = min(b.burst, b.left+time.Duration(float64(now.Sub(b.at))*b.share))
	b.at = now
}

type sourceState struct {
	budget
	waiting bool // a comparison of this source is waiting or running
}

func newAuthGate(reg prometheus.Registerer) *authGate {
	g := &authGate{
		verified:  map[[32]byte]time.Time{},
		global:    budget{share: authShare, burst: authBurst},
		sources:   map[netip.Prefix]*sourceState{},
		perSource: budget{share: sourceShare, burst: sourceBurst},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipsec_exporter_basic_auth_requests_total",
			Help: "Requests to a server with basic_auth_users, by result: remembered (credentials that passed before, no bcrypt), verified (bcrypt said yes), wrong (bcrypt said no), missing (no credentials), throttled (refused without bcrypt: the comparison budget of all sources or of this one is spent). Many wrong or throttled ones are a brute-force attempt.",
		}, []string{"result"}),
		spent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ipsec_exporter_basic_auth_compare_seconds_total",
			Help: "CPU time spent in bcrypt comparisons of basic auth passwords; its rate is bounded (docs/deploy.md, Resources).",
		}),
		now: time.Now,
	}
	for _, r := range []string{"remembered", "verified", "wrong", "missing", "throttled"} {
		g.requests.WithLabelValues(r)
	}
	reg.MustRegister(g.requests, g.spent)
	if _, err := rand.Read(g.key[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return g
}

// check tells whether password is user's, given the user's bcrypt hash
// (known false: an unknown user, compared against a hash of the same cost
// so that the answer takes as long).
func (g *authGate) check(r *http.Request, user, password, hash string, known bool) authVerdict {
	mac := hmac.New(sha256.New, g.key[:])
	for _, s := range []string{user, password, hash} {
		mac.Write([]byte(s))
		mac.Write([]byte{0})
	}
	var id [32]byte
	mac.Sum(id[:0])

	source := sourcePrefix(r.RemoteAddr)
	g.mu.Lock()
	if _, ok := g.verified[id]; ok && known {
		g.mu.Unlock()
		g.requests.WithLabelValues("remembered").Inc()
		return authOK
	}
	now := g.now()
	s := g.source(source, now)
	g.global.refill(now)
	s.refill(now)
	if s.waiting || s.left <= 0 || g.global.left <= 0 {
		g.mu.Unlock()
		g.requests.WithLabelValues("throttled").Inc()
		return authThrottled
	}
	s.waiting = true
	g.mu.Unlock()

	g.compare.Lock()
	spent, err := compareTimed(hash, password)
	g.compare.Unlock()
	g.spent.Add(spent.Seconds())

	ok := err == nil && known
	g.mu.Lock()
	defer g.mu.Unlock()
	s.waiting = false
	s.left -= spent
	g.global.left -= spent
	if !ok {
		g.requests.WithLabelValues("wrong").Inc()
		return authWrong
	}
	g.requests.WithLabelValues("verified").Inc()
	g.remember(id)
	return authOK
}

// compareTimed runs the bcrypt comparison and returns the CPU time it took:
// the thread's own (CLOCK_THREAD_CPUTIME_ID, with the goroutine locked to
// the thread), which is what the budgets bound, and which unlike the
// elapsed time does not grow when other processes take the CPU.
func compareTimed(hash, password string) (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after unix.Timespec
	start := time.Now()
	errBefore := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &before)
	err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
	if errBefore != nil || unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &after) != nil {
		return time.Since(start), err
	}
	return time.Duration(after.Nano() - before.Nano()), err
}

// source returns the state of source, making room if there are too many.
// Called with g.mu held.
func (g *authGate) source(source netip.Prefix, now time.Time) *sourceState {
	if s, ok := g.sources[source]; ok {
		return s
	}
	if len(g.sources) >= maxSources {
		for p, s := range g.sources {
			s.refill(now)
			if !s.waiting && s.left >= s.burst {
				delete(g.sources, p)
			}
		}
	}
	s := &sourceState{budget: g.perSource}
	if len(g.sources) < maxSources {
		g.sources[source] = s
	} else {
		// Still full: every kept source spent its budget recently. This one
		// shares an empty budget, so it is throttled like them.
		s.left, s.at = 0, now
	}
	return s
}

// remember adds good credentials, forgetting the oldest beyond the bound.
// Called with g.mu held.
func (g *authGate) remember(id [32]byte) {
	if len(g.verified) >= maxVerified {
		var oldest [32]byte
		var at time.Time
		for k, t := range g.verified {
			if at.IsZero() || t.Before(at) {
				oldest, at = k, t
			}
		}
		delete(g.verified, oldest)
	}
	g.verified[id] = g.now()
}

// sourcePrefix is who a request comes from, for its budget: the address,
// or its /64 for IPv6 (one host usually has a whole /64).
func sourcePrefix(remoteAddr string) netip.Prefix {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits) // bits fits the family
	return p
}

// authHandler applies the web config to each request before the page: the
// rate limit, the configured headers, then basic auth. The same order and
// answers as exporter-toolkit's, with the price of basic auth bounded.
type authHandler struct {
	config  *webConfig
	limiter *rate.Limiter // rate_limit of the config at start-up, as in the toolkit; nil: none
	gate    *authGate
	next    http.Handler
	logger  *slog.Logger
	// idle waits d with the request's connection counted as idle.
	idle func(r *http.Request, d time.Duration)
	// fakeHashes are hashes of nothing, by bcrypt cost, compared against
	// for unknown users so that they take as long as known ones.
	fakeHashes sync.Map
}

func (h *authHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, _, err := h.config.get()
	if err != nil {
		h.logger.Error("unable to use the web config file", "file", h.config.path, "err", err)
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	if h.limiter != nil && !h.limiter.Allow() {
		http.Error(w, http.StatusText(http.StatusTooManyRequests), http.StatusTooManyRequests)
		return
	}
	for k, v := range c.HTTPConfig.Header {
		w.Header().Set(k, v)
	}
	if len(c.Users) == 0 {
		h.next.ServeHTTP(w, r)
		return
	}
	user, password, ok := r.BasicAuth()
	if !ok {
		h.gate.requests.WithLabelValues("missing").Inc()
		h.idle(r, unauthenticatedDelay)
		unauthorized(w)
		return
	}
	hash, known := c.Users[user]
	if !known {
		hash = config.Secret(h.fakeHash(c.Users))
	}
	switch h.gate.check(r, user, password, string(hash), known) {
	case authOK:
		h.next.ServeHTTP(w, r)
	case authThrottled:
		h.idle(r, unauthenticatedDelay)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "Too many authentication attempts; try again later.", http.StatusTooManyRequests)
	default:
		h.idle(r, unauthenticatedDelay)
		unauthorized(w)
	}
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", "Basic")
	http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
}

// fakeHash returns a hash of nothing at the highest cost of the configured
// users' hashes (web.Validate checked they are bcrypt hashes).
func (h *authHandler) fakeHash(users map[string]config.Secret) string {
	cost := bcrypt.MinCost
	for _, hash := range users {
		if c, err := bcrypt.Cost([]byte(hash)); err == nil && c > cost {
			cost = c
		}
	}
	if v, ok := h.fakeHashes.Load(cost); ok {
		return v.(string)
	}
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	hash, _ := bcrypt.GenerateFromPassword(random, cost) // cost is that of a valid hash
	v, _ := h.fakeHashes.LoadOrStore(cost, string(hash))
	return v.(string)
}
