package webserver

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// blockingGatherer counts its Gathers; each waits for release (if set) and
// returns families test_0 ... test_9 with the Gather's number as value.
type blockingGatherer struct {
	calls   atomic.Int64
	release chan struct{}
	err     error
	empty   bool
}

func (g *blockingGatherer) Gather() ([]*dto.MetricFamily, error) {
	n := g.calls.Add(1)
	if g.release != nil {
		<-g.release
	}
	if g.empty {
		return nil, g.err
	}
	reg := prometheus.NewRegistry()
	for i := range 10 {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "test_" + string(rune('0'+i)), Help: "Test.",
		}, func() float64 { return float64(n) }))
	}
	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	if g.err != nil {
		return families, g.err
	}
	return families, nil
}

func newTestScrapeHandler(g prometheus.Gatherer, maxRequests int) (*scrapeHandler, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	h := NewMetricsHandler(g, maxRequests, slog.New(slog.DiscardHandler), reg).(*scrapeHandler)
	return h, reg
}

func get(t *testing.T, h http.Handler, target string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// waitJoined waits until the running collection has n distinct keys.
func waitJoined(t *testing.T, h *scrapeHandler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		joined := 0
		if h.running != nil {
			joined = len(h.running.wanted)
		}
		h.mu.Unlock()
		if joined == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d requests did not join the collection", n)
}

// Requests that arrive while a collection runs share it: one Gather for
// all, each answered with what it asked for (here each its own name[]
// filter). A request after the end starts a fresh collection.
func TestScrapesShareOneCollection(t *testing.T) {
	g := &blockingGatherer{release: make(chan struct{})}
	h, reg := newTestScrapeHandler(g, 0)
	var wg sync.WaitGroup
	bodies := make([]string, 10)
	for i := range bodies {
		wg.Go(func() {
			rec := get(t, h, "/metrics?name[]=test_"+string(rune('0'+i)), nil)
			if rec.Code != http.StatusOK {
				t.Errorf("request %d: status %d", i, rec.Code)
			}
			bodies[i] = rec.Body.String()
		})
	}
	waitJoined(t, h, len(bodies))
	close(g.release)
	wg.Wait()
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d Gathers for %d concurrent requests, want 1", n, len(bodies))
	}
	for i, body := range bodies {
		want := "test_" + string(rune('0'+i)) + " 1\n"
		if !strings.Contains(body, want) || strings.Count(body, "# TYPE") != 1 {
			t.Errorf("request %d (name[]=test_%d) got:\n%s", i, i, body)
		}
	}
	g.release = nil
	if body := get(t, h, "/metrics", nil).Body.String(); !strings.Contains(body, "test_9 2\n") || strings.Count(body, "# TYPE") != 10 {
		t.Errorf("a request after the collection got:\n%s", body)
	}
	if n, _ := testutil.GatherAndCount(reg, "ipsec_exporter_scrape_collections_total"); n != 1 {
		t.Fatal("no ipsec_exporter_scrape_collections_total")
	}
	if v := testutil.ToFloat64(h.collections); v != 2 {
		t.Errorf("ipsec_exporter_scrape_collections_total %v, want 2", v)
	}
}

// The same collection in every format and encoding a scraper asks for.
func TestScrapeFormatsAndEncodings(t *testing.T) {
	h, _ := newTestScrapeHandler(&blockingGatherer{}, 0)
	plain := get(t, h, "/metrics", nil)
	if ct := plain.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	if plain.Header().Get("Content-Encoding") != "" || !strings.Contains(plain.Body.String(), "test_0 1\n") {
		t.Errorf("identity answer: %v\n%s", plain.Header(), plain.Body.String())
	}
	gz := get(t, h, "/metrics", http.Header{"Accept-Encoding": {"deflate, gzip;q=0.8"}})
	if gz.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip not used: %v", gz.Header())
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	text, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// The second collection: the same text with the value 2.
	if want := strings.ReplaceAll(plain.Body.String(), " 1\n", " 2\n"); string(text) != want {
		t.Errorf("the gzip body is not the identity one:\n%s\n---\n%s", text, want)
	}
	proto := get(t, h, "/metrics", http.Header{"Accept": {"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"}})
	if expfmt.Format(proto.Header().Get("Content-Type")).FormatType() != expfmt.TypeProtoDelim {
		t.Fatalf("protobuf not negotiated: %v", proto.Header())
	}
	dec := expfmt.NewDecoder(proto.Body, expfmt.Format(proto.Header().Get("Content-Type")))
	var mf dto.MetricFamily
	families := 0
	for dec.Decode(&mf) == nil {
		families++
	}
	if families != 10 {
		t.Errorf("%d families decoded from protobuf, want 10", families)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                    false,
		"gzip":                true,
		"GZIP":                true,
		"deflate, gzip":       true,
		"gzip;q=0":            false,
		"gzip; q=0.000":       false,
		"gzip;q=0.5":          true,
		"*":                   true,
		"br, zstd":            false,
		"identity, *;q=0":     false,
		"gzip;q=junk":         false,
		"x-gzip":              false,
		"identity;q=1, gzip ": true,
	} {
		if got := acceptsGzip(http.Header{"Accept-Encoding": {header}}); got != want {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", header, got, want)
		}
	}
}

// --web.max-requests bounds the requests waiting for a collection; a
// client that gives up frees its slot at once, and the collection still
// answers the others.
func TestScrapeSlots(t *testing.T) {
	g := &blockingGatherer{release: make(chan struct{})}
	h, _ := newTestScrapeHandler(g, 2)
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics?name[]=a", nil))
		gone <- rec.Code
	}()
	stays := make(chan *httptest.ResponseRecorder)
	go func() { stays <- get(t, h, "/metrics?name[]=test_1", nil) }()
	waitJoined(t, h, 2)
	if rec := get(t, h, "/metrics", nil); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("a third request with two slots: status %d, want 503", rec.Code)
	}
	cancel()
	<-gone
	if len(h.slots) != 1 {
		t.Errorf("%d slots taken after a client left, want 1", len(h.slots))
	}
	close(g.release)
	if rec := <-stays; rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "test_1 1") {
		t.Errorf("the request that stayed: %d\n%s", rec.Code, rec.Body.String())
	}
	if len(h.slots) != 0 {
		t.Errorf("%d slots still taken", len(h.slots))
	}
}

// A gather error with some families serves them (promhttp's
// ContinueOnError); without any it is a 500. Both are counted.
func TestScrapeGatherErrors(t *testing.T) {
	h, _ := newTestScrapeHandler(&blockingGatherer{err: errors.New("duplicate metric")}, 0)
	if rec := get(t, h, "/metrics", nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "test_0") {
		t.Errorf("partial gather: %d\n%s", rec.Code, rec.Body.String())
	}
	h2, _ := newTestScrapeHandler(&blockingGatherer{err: errors.New("nothing at all"), empty: true}, 0)
	if rec := get(t, h2, "/metrics", nil); rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "nothing at all") {
		t.Errorf("failed gather: %d\n%s", rec.Code, rec.Body.String())
	}
	for _, h := range []*scrapeHandler{h, h2} {
		if v := testutil.ToFloat64(h.errors.WithLabelValues("gathering")); v != 1 {
			t.Errorf("gathering errors %v, want 1", v)
		}
	}
}

// A panic in the gatherer fails that collection only.
func TestScrapeGatherPanic(t *testing.T) {
	h, _ := newTestScrapeHandler(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { panic("boom") }), 0)
	if rec := get(t, h, "/metrics", nil); rec.Code != http.StatusInternalServerError || !bytes.Contains(rec.Body.Bytes(), []byte("boom")) {
		t.Errorf("status %d\n%s", rec.Code, rec.Body.String())
	}
}
