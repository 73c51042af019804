package deploy_test

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestBruteForceBasicAuth (issue 13 finding 4): with TLS and basic auth
// (the example web config, bcrypt cost 10, plus a second user), 48
// attackers on three source addresses try random passwords as fast as
// they can over keep-alive connections. Each wrong password costs a bcrypt
// comparison (tens of milliseconds of CPU) unless something bounds it, and
// a scraper whose cached credentials got pushed out waited behind the
// attackers' comparisons. The exporter must spend at most a bounded share
// of one core on them; a scraper authenticated before the attack must stay
// fast; and one authenticating for the first time during the attack, from
// another address, must get in at once.
func TestBruteForceBasicAuth(t *testing.T) {
	const (
		attackers = 48
		sources   = 3
	)
	attack := *bruteForceDuration
	setup := newTLSSetup(t)
	// Two more users, each authenticating for the first time: one before
	// the attack (the yardstick: what a first authentication takes on this
	// machine now) and one during it.
	const newUser, newPassword = "second", "another-example-password"
	const firstUser, firstPassword = "third", "yet-another-example-password"
	config := readFile(t, setup.configPath)
	for user, password := range map[string]string{newUser: newPassword, firstUser: firstPassword} {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), 10)
		if err != nil {
			t.Fatal(err)
		}
		config += fmt.Sprintf("  %s: %s\n", user, hash)
	}
	writeFile(t, setup.configPath, config)

	ns := newTestNetns(t)
	e := startExporterIn(t, ns, "--collector.netns.dir=", "--web.config.file="+setup.configPath)
	e.waitListening(t)
	url := "https://" + e.addr + "/metrics"
	legit := &http.Client{Timeout: 30 * time.Second, Transport: ns.transport(setup.tls, "127.0.0.1")}
	if code, d := authScrape(t, legit, url, exampleUser, examplePassword); code != http.StatusOK {
		t.Fatalf("scrape before the attack: status %d (%v)", code, d)
	}
	first := &http.Client{Timeout: 30 * time.Second, Transport: ns.transport(setup.tls, "127.0.0.21")}
	code, yardstick := authScrape(t, first, url, firstUser, firstPassword)
	if code != http.StatusOK {
		t.Fatalf("a first authentication before the attack: status %d", code)
	}

	var tries atomic.Int64
	var mu sync.Mutex
	statuses := map[int]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	cpuBefore, start := e.cpuTime(t), time.Now()
	for i := range attackers {
		wg.Go(func() {
			source := fmt.Sprintf("127.0.0.%d", 2+i%sources)
			client := &http.Client{Timeout: 30 * time.Second, Transport: ns.transport(setup.tls, source)}
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, _ := authScrape(t, client, url, exampleUser, rand.Text())
				tries.Add(1)
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		})
	}
	var latencies []time.Duration
	legitCodes := map[int]int{}
	for time.Since(start) < attack {
		time.Sleep(500 * time.Millisecond)
		code, d := authScrape(t, legit, url, exampleUser, examplePassword)
		legitCodes[code]++
		latencies = append(latencies, d)
	}
	// A scraper that never authenticated before, from its own address.
	newcomer := &http.Client{Timeout: 30 * time.Second, Transport: ns.transport(setup.tls, "127.0.0.20")}
	newCode, newLatency := authScrape(t, newcomer, url, newUser, newPassword)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	cores := (e.cpuTime(t) - cpuBefore).Seconds() / elapsed.Seconds()
	slices.Sort(latencies)
	median, worst := latencies[len(latencies)/2], latencies[len(latencies)-1]
	t.Logf("%d attackers on %d addresses, %.1fs: %d wrong passwords tried (%.1f/s), answers %v; exporter CPU %.2f cores; "+
		"scraper authenticated before: %v, latency median %.3fs, max %.3fs; newcomer: status %d in %.3fs (before the attack: %.3fs)",
		attackers, sources, elapsed.Seconds(), tries.Load(), float64(tries.Load())/elapsed.Seconds(), statuses, cores,
		legitCodes, median.Seconds(), worst.Seconds(), newCode, newLatency.Seconds(), yardstick.Seconds())
	if statuses[http.StatusOK] > 0 {
		t.Errorf("%d random passwords were accepted", statuses[http.StatusOK])
	}
	if cores > bruteForceBudgetCores {
		t.Errorf("the exporter spent %.2f cores under the attack, budget %.2f (docs/deploy.md)", cores, bruteForceBudgetCores)
	}
	if legitCodes[http.StatusOK] != len(latencies) {
		t.Errorf("scrapes authenticated before the attack: %v, want all 200", legitCodes)
	}
	// The median: one slow scrape on a loaded machine is not the attack.
	if median > time.Second {
		t.Errorf("scrapes authenticated before the attack took %.2fs (median) under it", median.Seconds())
	}
	// Its own comparison after at most one per attacking source, not a
	// queue of every attacker's: within sources+2 first authentications
	// without an attack, and a second.
	if limit := time.Duration(sources+2)*yardstick + time.Second; newCode != http.StatusOK || newLatency > limit {
		t.Errorf("a new scraper from another address during the attack: status %d in %.2fs, want 200 within %.2fs",
			newCode, newLatency.Seconds(), limit.Seconds())
	}
}

// bruteForceDuration is how long the attack lasts: 10 s in make test,
// longer for the figures of docs/deploy.md.
var bruteForceDuration = flag.Duration("bruteforce.duration", 10*time.Second, "how long TestBruteForceBasicAuth attacks")

// bruteForceBudgetCores is the documented bound on what unauthenticated
// clients can make the exporter spend (docs/deploy.md, "Resources").
const bruteForceBudgetCores = 0.35

// authScrape GETs url as user with password and returns the status code
// (0 for a transport error) and how long it took.
func authScrape(t *testing.T, client *http.Client, url, user, password string) (int, time.Duration) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, password)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, time.Since(start)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
