package webserver

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// The metrics page. Reading the kernel's state is what a scrape costs, so
// scrapes share it: one collection runs at a time, and every request that
// arrives while it runs gets its result. When the collection ends it is
// encoded once per format (and name[] filter) those requests asked for,
// gzip-compressed, and the gathered families are dropped; requests then
// only copy shared bytes to their clients. So a client that never reads
// its answer holds a reference to a compressed body, not a collection of
// its own, and does not hold a --web.max-requests slot either: the slot
// covers the wait for a collection, which is what costs.

// slowCollection is when a collection still running is worth a warning.
const slowCollection = time.Minute

type scrapeHandler struct {
	gatherer prometheus.Gatherer
	slots    chan struct{} // nil: no limit
	logger   *slog.Logger

	mu      sync.Mutex
	running *collection // the collection new requests join; nil when none runs

	collections prometheus.Counter
	errors      *prometheus.CounterVec
}

// collection is one Gather and the bodies encoded from it.
type collection struct {
	done   chan struct{}
	wanted map[bodyKey]struct{} // guarded by scrapeHandler.mu while running
	bodies map[bodyKey][]byte   // gzip-compressed; set before done is closed
	err    error                // nothing could be gathered; set before done is closed
}

// bodyKey is one encoding of a collection: the negotiated format and the
// name[] filter (sorted names joined by newlines; "" for every family).
type bodyKey struct {
	format expfmt.Format
	names  string
}

// NewMetricsHandler serves what gatherer gathers, coalesced as above. At
// most maxRequests requests wait for a collection at once (0: no limit);
// more get 503. Its own metrics go to reg.
func NewMetricsHandler(gatherer prometheus.Gatherer, maxRequests int, logger *slog.Logger, reg prometheus.Registerer) http.Handler {
	h := &scrapeHandler{
		gatherer: gatherer,
		logger:   logger,
		collections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ipsec_exporter_scrape_collections_total",
			Help: "Collections run (every collector read once); concurrent scrape requests share one, so this grows slower than promhttp_metric_handler_requests_total when scrapes overlap.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ipsec_exporter_scrape_errors_total",
			Help: "Errors while serving the metrics page, by cause: gathering (a collector sent an invalid or duplicate metric; the rest was served) or encoding.",
		}, []string{"cause"}),
	}
	h.errors.WithLabelValues("gathering")
	h.errors.WithLabelValues("encoding")
	reg.MustRegister(h.collections, h.errors)
	if maxRequests > 0 {
		h.slots = make(chan struct{}, maxRequests)
	}
	return h
}

func (h *scrapeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.slots != nil {
		select {
		case h.slots <- struct{}{}:
		default:
			http.Error(w, fmt.Sprintf("%d scrapes are already waiting for a collection (--web.max-requests); try again later.", cap(h.slots)),
				http.StatusServiceUnavailable)
			return
		}
	}
	key := requestKey(r)
	c := h.join(key)
	select {
	case <-c.done:
	case <-r.Context().Done():
		// The client went away; the collection goes on for the others.
	}
	if h.slots != nil {
		<-h.slots
	}
	if err := r.Context().Err(); err != nil {
		h.aborted("waiting for the collection", err)
		return
	}
	if c.err != nil {
		http.Error(w, "An error has occurred while gathering metrics:\n\n"+c.err.Error(), http.StatusInternalServerError)
		return
	}
	body := c.bodies[key]
	header := w.Header()
	header.Set("Content-Type", string(key.format))
	header.Add("Vary", "Accept")
	header.Add("Vary", "Accept-Encoding")
	if acceptsGzip(r.Header) {
		header.Set("Content-Encoding", "gzip")
		header.Set("Content-Length", strconv.Itoa(len(body)))
		if _, err := w.Write(body); err != nil {
			h.aborted("sending the answer", err)
		}
		return
	}
	// Decompressed as it is sent: a client that does not read holds a
	// small decompressor, not the plain text.
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if _, err := io.Copy(w, zr); err != nil {
		h.aborted("sending the answer", err)
	}
}

// aborted logs a scrape its client gave up on, once per scrape and at
// debug level: a client closing early (a scrape timeout, a curl | head) is
// its own business, and the answer is written in one piece, so a closed
// connection is one error, not one per metric family as with promhttp.
func (h *scrapeHandler) aborted(stage string, err error) {
	h.logger.Debug("scrape aborted by the client", "stage", stage, "err", err)
}

// join returns the running collection, after adding key to what it must
// encode, or starts one.
func (h *scrapeHandler) join(key bodyKey) *collection {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.running
	if c == nil {
		c = &collection{done: make(chan struct{}), wanted: map[bodyKey]struct{}{}}
		h.running = c
		go h.run(c)
	}
	c.wanted[key] = struct{}{}
	return c
}

// run gathers, detaches the collection so that later requests start a new
// one, and encodes what the joined requests asked for.
func (h *scrapeHandler) run(c *collection) {
	defer close(c.done)
	start := time.Now()
	slow := time.AfterFunc(slowCollection, func() {
		h.logger.Warn("a collection is still running; the scrapes that arrive meanwhile wait for it (a stuck collector? ipsec_scrape_collector_duration_seconds names it once the collection ends)",
			"running_seconds", time.Since(start).Seconds())
	})
	families, err := h.gather()
	slow.Stop()
	h.mu.Lock()
	h.running = nil
	wanted := c.wanted
	h.mu.Unlock()
	h.collections.Inc()
	if err != nil {
		h.errors.WithLabelValues("gathering").Inc()
		h.logger.Error("error gathering metrics", "err", err)
		if len(families) == 0 {
			c.err = err
			return
		}
	}
	c.bodies = make(map[bodyKey][]byte, len(wanted))
	for key := range wanted {
		c.bodies[key] = h.encode(families, key)
	}
}

// gather is the gatherer's Gather; a panic there (the collectors' own are
// recovered by the fan-out) fails this collection, not the process.
func (h *scrapeHandler) gather() (families []*dto.MetricFamily, err error) {
	defer func() {
		if r := recover(); r != nil {
			h.logger.Error("gathering metrics panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			families, err = nil, fmt.Errorf("gathering metrics panicked: %v", r)
		}
	}()
	return h.gatherer.Gather()
}

func (h *scrapeHandler) encode(families []*dto.MetricFamily, key bodyKey) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // the level is valid
	enc := expfmt.NewEncoder(zw, key.format)
	var names []string
	if key.names != "" {
		names = strings.Split(key.names, "\n")
	}
	for _, mf := range families {
		if names != nil && !slices.Contains(names, mf.GetName()) {
			continue
		}
		if err := enc.Encode(mf); err != nil {
			h.errors.WithLabelValues("encoding").Inc()
			h.logger.Error("error encoding metric family", "family", mf.GetName(), "err", err)
		}
	}
	if closer, ok := enc.(expfmt.Closer); ok {
		if err := closer.Close(); err != nil {
			h.errors.WithLabelValues("encoding").Inc()
			h.logger.Error("error encoding metrics", "err", err)
		}
	}
	_ = zw.Close() // writes to memory
	return buf.Bytes()
}

// requestKey is what the request asks for: its negotiated format and its
// name[] filter (promhttp's query parameter, kept for the same URLs).
func requestKey(r *http.Request) bodyKey {
	key := bodyKey{format: expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)}
	if r.URL != nil {
		if names := r.URL.Query()["name[]"]; len(names) > 0 {
			names = slices.Clone(names)
			slices.Sort(names)
			key.names = strings.Join(slices.Compact(names), "\n")
		}
	}
	return key
}

// acceptsGzip reads Accept-Encoding: gzip (or *) with a quality above 0.
func acceptsGzip(h http.Header) bool {
	for _, value := range h.Values("Accept-Encoding") {
		for _, part := range strings.Split(value, ",") {
			coding, params, _ := strings.Cut(part, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "*" {
				continue
			}
			if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if v, err := strconv.ParseFloat(q, 64); err != nil || v <= 0 {
					continue
				}
			}
			return true
		}
	}
	return false
}
