package deploy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Load tests of the HTTP side (issue 13 finding 2), with the real binary
// and real clients, bounded in count and time. Each logs what it measured
// (the figures in docs/deploy.md "Resources") and fails when the exporter
// goes past the documented budget.

// loadedExporter runs the exporter in a namespace of its own holding
// policies IPsec policies, and waits until it serves.
func loadedExporter(t *testing.T, policies int, args ...string) *exporter {
	t.Helper()
	ns := newTestNetns(t)
	ns.addPolicies(t, policies)
	e := startExporterIn(t, ns, append([]string{"--collector.netns.dir="}, args...)...)
	e.waitListening(t)
	return e
}

// cpuTime is the exporter's user plus system CPU time so far.
func (e *exporter) cpuTime(t *testing.T) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name's closing parenthesis; utime and
	// stime are the 14th and 15th of the whole line, in clock ticks (100/s).
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseUint(fields[11], 10, 64)
	stime, _ := strconv.ParseUint(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// memory returns the exporter's VmRSS and VmHWM in MiB.
func (e *exporter) memory(t *testing.T) (rss, hwm float64) {
	t.Helper()
	r, h := memoryKB(t, e.cmd.Process.Pid)
	return float64(r) / 1024, float64(h) / 1024
}

// TestConcurrentScrapersMemory: 50 scrapers at once, each scraping 4 times,
// against a node with 10,000 policies (ten times the default per-policy
// series cap: each scrape dumps them all). Concurrent scrapes share one kernel read, so memory
// stays within the budget; every answer is a full scrape or, beyond
// --web.max-requests, a 503.
func TestConcurrentScrapersMemory(t *testing.T) {
	const scrapers, rounds = 50, 4
	e := loadedExporter(t, 10000)
	code, body := e.scrape(t)
	if code != http.StatusOK {
		t.Fatalf("first scrape: status %d", code)
	}
	_, idleHWM := e.memory(t)
	t.Logf("one scrape: %d bytes, %d lines; VmHWM %.1f MiB", len(body), strings.Count(body, "\n"), idleHWM)
	time.Sleep(500 * time.Millisecond) // the server closes its side of that scrape's connection
	socketsBefore := e.openSockets(t)

	client := e.client(120 * time.Second)
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for range scrapers {
		wg.Go(func() {
			for range rounds {
				resp, err := client.Get("http://" + e.addr + "/metrics")
				if err != nil {
					t.Errorf("scrape: %v", err)
					return
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status := resp.StatusCode
				if status == http.StatusOK && (err != nil || n < int64(len(body))/2) {
					t.Errorf("a scrape returned %d bytes (%v), the first %d", n, err, len(body))
				}
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	rss, hwm := e.memory(t)
	_, after := e.scrape(t)
	collections, _ := metricValue(after, "ipsec_exporter_scrape_collections_total")
	t.Logf("%d scrapers x %d scrapes in %.1fs: statuses %v, %s collections; VmRSS %.1f MiB, VmHWM %.1f MiB",
		scrapers, rounds, elapsed.Seconds(), statuses, collections, rss, hwm)
	// Concurrent requests share collections: far fewer than requests.
	if n := parseFloat(t, collections); n > float64(statuses[http.StatusOK])/4 {
		t.Errorf("%v collections for %d scrapes: concurrent scrapes did not share them", n, statuses[http.StatusOK])
	}
	for status := range statuses {
		if status != http.StatusOK && status != http.StatusServiceUnavailable {
			t.Errorf("status %d answered (%d times)", status, statuses[status])
		}
	}
	if statuses[http.StatusOK] < scrapers {
		t.Errorf("only %d full scrapes of %d", statuses[http.StatusOK], scrapers*rounds)
	}
	if hwm > scrapeBudgetMiB {
		t.Errorf("VmHWM %.1f MiB under %d concurrent scrapers: above the %d MiB budget (docs/deploy.md)", hwm, scrapers, scrapeBudgetMiB)
	}
	// Nothing leaks: once the clients close their connections the
	// exporter holds the sockets it held before.
	client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for e.openSockets(t) > socketsBefore && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.openSockets(t); n > socketsBefore {
		t.Errorf("%d sockets open after the scrapers left, %d before", n, socketsBefore)
	}
}

// scrapeBudgetMiB is the documented peak RSS under load (docs/deploy.md,
// "Resources"), well inside the DaemonSet's 128 MiB limit.
const scrapeBudgetMiB = 64

// TestIdleConnectionsMemory: 5,000 clients each make one request and then
// keep their connection open and idle (keep-alive), as a careless
// neighbour or a slow-loris attacker would. The exporter bounds its
// connections, so memory stays within the budget, and a scraper that comes
// afterwards is still served.
func TestIdleConnectionsMemory(t *testing.T) {
	const conns = 5000
	e := loadedExporter(t, 0)
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	work := make(chan int)
	var wg sync.WaitGroup
	refused := 0
	for range 50 {
		wg.Go(func() {
			for range work {
				c, err := e.dial(10 * time.Second)
				if err != nil {
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				}
				// One cheap request (the landing page), then idle.
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: exporter\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				_ = c.SetDeadline(time.Time{})
				mu.Lock()
				open = append(open, c)
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := range conns {
		work <- i
	}
	close(work)
	wg.Wait()
	time.Sleep(time.Second) // let the exporter settle with what it holds
	rss, hwm := e.memory(t)
	held := e.openSockets(t)
	t.Logf("%d idle connections opened in %.1fs (%d refused): the exporter holds %d sockets; VmRSS %.1f MiB, VmHWM %.1f MiB",
		conns, time.Since(start).Seconds(), refused, held, rss, hwm)

	begin := time.Now()
	code, _ := e.scrape(t)
	t.Logf("a new scraper meanwhile: status %d in %.2fs", code, time.Since(begin).Seconds())
	if code != http.StatusOK {
		t.Errorf("a scrape among %d idle connections: status %d", conns, code)
	}
	if hwm > scrapeBudgetMiB {
		t.Errorf("VmHWM %.1f MiB with %d idle connections: above the %d MiB budget (docs/deploy.md)", hwm, conns, scrapeBudgetMiB)
	}
}

// openSockets counts the exporter's open sockets.
func (e *exporter) openSockets(t *testing.T) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", e.cmd.Process.Pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range entries {
		if target, err := os.Readlink(dir + "/" + fd.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// TestStalledReaders: 40 clients ask for a large exposition (20,000
// policies, per-policy series uncapped: 5 MB of text) and never read the
// answer. Each used to hold its own collection until the client went away
// (and a --web.max-requests slot); now they share a compressed body, so
// they add little beyond what one scrape of that size takes, and a scraper
// that comes meanwhile is served.
func TestStalledReaders(t *testing.T) {
	const stalled = 40
	e := loadedExporter(t, 20000, "--collector.policy.max-series=0")
	code, body := e.scrape(t)
	if code != http.StatusOK {
		t.Fatalf("first scrape: status %d", code)
	}
	_, idleHWM := e.memory(t)
	t.Logf("one scrape: %.1f MB, %d lines; VmHWM %.1f MiB", float64(len(body))/1e6, strings.Count(body, "\n"), idleHWM)

	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	start := time.Now()
	for range stalled {
		c, err := e.dial(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// Identity encoding, the largest answer; then never read.
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Second)
	rss, hwm := e.memory(t)
	queued := e.sendQueued(t)
	t.Logf("%d clients not reading, %.0fs later: VmRSS %.1f MiB, VmHWM %.1f MiB; %.1f MB queued in the exporter's socket send buffers",
		stalled, time.Since(start).Seconds(), rss, hwm, float64(queued)/1e6)
	// Kernel memory, charged to the exporter's cgroup like its RSS: each
	// connection's send buffer is bounded (256 KiB, plus a segment).
	if queued > stalled*320<<10 {
		t.Errorf("%.1f MB queued in the send buffers of %d connections: more than 320 KiB each", float64(queued)/1e6, stalled)
	}
	begin := time.Now()
	if code, _ := e.scrape(t); code != http.StatusOK {
		t.Errorf("a scrape beside %d stalled clients: status %d", stalled, code)
	}
	t.Logf("a new scraper meanwhile: served in %.2fs", time.Since(begin).Seconds())
	if hwm > idleHWM+stalledBudgetMiB {
		t.Errorf("VmHWM %.1f MiB with %d stalled clients, %.1f MiB after one scrape: they may add at most %d MiB (docs/deploy.md)",
			hwm, stalled, idleHWM, stalledBudgetMiB)
	}
}

// stalledBudgetMiB is what clients that do not read may add to the peak of
// one scrape (docs/deploy.md, "Resources").
const stalledBudgetMiB = 32

// sendQueued sums the bytes waiting in the send queues of the exporter's
// TCP connections (kernel memory, charged to its memory cgroup).
func (e *exporter) sendQueued(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(e.addr)
	args := []string{"-tnH", "state", "established", "sport", "= :" + port}
	if e.ns != nil {
		args = append([]string{"-N", e.ns.name}, args...)
	}
	total := 0
	for _, line := range strings.Split(runCmd(t, "ss", args...), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 {
			n, _ := strconv.Atoi(fields[1])
			total += n
		}
	}
	return total
}

// TestResourceBudgetDocumented: the budgets these tests enforce are the
// ones docs/deploy.md states.
func TestResourceBudgetDocumented(t *testing.T) {
	raw, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, want := range []string{
		fmt.Sprintf("**%d MiB** peak RSS under 50 concurrent scrapers and under 5,000", scrapeBudgetMiB),
		fmt.Sprintf("adding at most **%d MiB**", stalledBudgetMiB),
		fmt.Sprintf("**%.2f of a core**", bruteForceBudgetCores),
		"at most 320 KiB queued per connection",
		"**6 series**",
		fmt.Sprintf("fails above %d new series", floodSeriesBound),
	} {
		if !strings.Contains(strings.Join(strings.Fields(doc), " "), want) {
			t.Errorf("docs/deploy.md does not state the tested budget %q", want)
		}
	}
}
