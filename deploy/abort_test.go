package deploy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAbortedScrapesLogQuietly: clients that give up on a scrape (a
// Prometheus scrape timeout, curl | head, a port scanner) are their own
// business. The exporter of cebdf7d logged one "broken pipe" error per
// metric family left to send, about 40 lines per aborted scrape; now it is
// at most one line per aborted scrape, and only at debug level. The test
// aborts scrapes in three ways against a large answer (3,000 policies with
// per-policy series, about 1 MB of text) and counts the lines the exporter
// wrote meanwhile at --log.level=debug (but the collectors' own debug
// lines, which every collection writes): at most one each, none above
// debug.
func TestAbortedScrapesLogQuietly(t *testing.T) {
	const each = 5
	aborts := []struct {
		name    string
		request string
		read    int // bytes read before closing; 0: close at once
	}{
		// While the collection runs.
		{"at once", "GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n", 0},
		// While the plain text is being sent.
		{"plain text", "GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n", 4096},
		// While the compressed answer is being sent.
		{"gzip", "GET /metrics HTTP/1.1\r\nHost: exporter\r\nAccept-Encoding: gzip\r\n\r\n", 4096},
	}
	e := loadedExporter(t, 3000, "--collector.policy.max-series=0", "--log.level=debug")
	code, body := e.scrape(t)
	if code != http.StatusOK || len(body) < 500_000 {
		t.Fatalf("first scrape: status %d, %d bytes; want a large answer", code, len(body))
	}
	before := logLines(e)
	for _, a := range aborts {
		for range each {
			abortScrape(t, e, a.request, a.read)
		}
	}
	// Let the collections of the aborted scrapes end and their answers
	// fail.
	time.Sleep(3 * time.Second)
	if code, _ := e.scrape(t); code != http.StatusOK {
		t.Errorf("a scrape after the aborted ones: status %d", code)
	}
	var added, above []string
	for _, line := range logLines(e)[len(before):] {
		// Every collection logs this at debug level, aborted or not.
		if strings.Contains(line, `msg="collector succeeded"`) {
			continue
		}
		added = append(added, line)
		if !strings.Contains(line, "level=DEBUG") {
			above = append(above, line)
		}
	}
	aborted := len(aborts) * each
	t.Logf("%d aborted scrapes, %d log lines:\n%s", aborted, len(added), strings.Join(added, "\n"))
	if len(added) > aborted {
		t.Errorf("%d log lines for %d aborted scrapes, want at most one each", len(added), aborted)
	}
	if len(above) > 0 {
		t.Errorf("%d lines above debug level (the default --log.level=info would show them):\n%s", len(above), strings.Join(above, "\n"))
	}
}

// abortScrape sends request on a new connection, reads read bytes of the
// answer and closes the connection with a reset (SO_LINGER 0), as a client
// that gives up does.
func abortScrape(t *testing.T, e *exporter, request string, read int) {
	t.Helper()
	c, err := e.dial(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	if read > 0 {
		if _, err := io.ReadFull(bufio.NewReader(c), make([]byte, read)); err != nil {
			t.Fatalf("reading the first %d bytes of a scrape: %v", read, err)
		}
	}
	_ = c.(*net.TCPConn).SetLinger(0)
}

// logLines is what the exporter has written to stdout and stderr, by line.
func logLines(e *exporter) []string {
	return strings.Split(strings.TrimSpace(e.output.String()), "\n")
}
