package collector

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/peers"
)

// The node's known IPsec peers (internal/peers), shared by the collectors
// that need them: wire (which plaintext is unprotected traffic to a peer)
// and verdict (peer names). One tracker per process, started by the first
// collector that asks and stopped with the last.

var (
	peersForgetAfter = kingpin.Flag("peers.forget-after",
		"How long a peer stays known after its last SA and policy are gone, so that plaintext to a peer whose tunnel just died (dead peer detection, a stopped daemon) still counts as unprotected traffic. 0 forgets at once.").
		Default("1h").Duration()
	peersNamesFile = kingpin.Flag("peers.names-file",
		"File mapping peer addresses to names (YAML mapping, or \"address name\" lines; a regular file of at most 1 MiB): its addresses are always known peers, its names the peer_name label of the verdict metrics. Re-read when it changes.").
		Default("").String()
	// The flag's first name, kept so existing command lines keep working.
	verdictPeerNames = kingpin.Flag("collector.verdict.peer-names", "Old name of --peers.names-file.").
				Hidden().Default("").String()
)

// namespacePoll is how often the namespace directory is listed for
// namespaces that came or went (wire attaches in each, peers follows each).
const namespacePoll = 2 * time.Second

// shared is the process's tracker and namespace poller.
var shared = &sharedPeers{}

type sharedPeers struct {
	mu      sync.Mutex
	users   int
	tracker *peers.Tracker
	watch   *namespaceWatch
}

// peersNamesPath is the peer-names file of the flags, either name.
func peersNamesPath() (string, error) {
	switch {
	case *peersNamesFile != "" && *verdictPeerNames != "" && *peersNamesFile != *verdictPeerNames:
		return "", fmt.Errorf("--peers.names-file and --collector.verdict.peer-names name different files")
	case *peersNamesFile != "":
		return *peersNamesFile, nil
	}
	return *verdictPeerNames, nil
}

// acquirePeers returns the shared tracker, starting it for the first user;
// release stops it after the last.
func acquirePeers(logger *slog.Logger) (t *peers.Tracker, w *namespaceWatch, release func(), err error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.tracker == nil {
		path, err := peersNamesPath()
		if err != nil {
			return nil, nil, nil, err
		}
		if *peersForgetAfter < 0 {
			return nil, nil, nil, fmt.Errorf("--peers.forget-after=%s: must not be negative", *peersForgetAfter)
		}
		tr, err := peers.New(peers.Config{ForgetAfter: *peersForgetAfter, NamesFile: path, Logger: logger})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--peers.names-file: %w", err)
		}
		shared.tracker = tr
		shared.watch = startNamespaceWatch(netnsTargets, namespacePoll, logger)
		shared.watch.subscribe(tr.Watch)
	}
	shared.users++
	var once sync.Once
	return shared.tracker, shared.watch, func() {
		once.Do(func() {
			shared.mu.Lock()
			defer shared.mu.Unlock()
			if shared.users--; shared.users == 0 {
				shared.watch.stop()
				shared.tracker.Close()
				shared.tracker, shared.watch = nil, nil
			}
		})
	}, nil
}

// namespaceWatch lists the watched namespaces now and then and tells its
// subscribers the whole list whenever a namespace came, went or was
// recreated under its name.
type namespaceWatch struct {
	list   func() ([]netnsx.Target, error)
	logger *slog.Logger

	mu      sync.Mutex
	current []netnsx.Target
	ids     map[string]uint64 // inode by name, to see a recreation
	subs    []func([]netnsx.Target)

	done chan struct{}
	wg   sync.WaitGroup
}

func startNamespaceWatch(list func() ([]netnsx.Target, error), every time.Duration, logger *slog.Logger) *namespaceWatch {
	w := &namespaceWatch{list: list, logger: logger, done: make(chan struct{})}
	w.poll()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
				w.poll()
			}
		}
	}()
	return w
}

// subscribe calls fn with the current list now and on every change.
func (w *namespaceWatch) subscribe(fn func([]netnsx.Target)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subs = append(w.subs, fn)
	fn(slices.Clone(w.current))
}

func (w *namespaceWatch) poll() {
	targets, err := w.list()
	if err != nil {
		w.logger.Debug("listing namespaces", "err", err)
		return
	}
	ids := make(map[string]uint64, len(targets))
	var live []netnsx.Target
	for _, t := range targets {
		ino, err := netnsx.Inode(t)
		if err != nil {
			continue // not a namespace (yet, or any more)
		}
		ids[t.Name] = ino
		live = append(live, t)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ids != nil && equalIDs(ids, w.ids) {
		return
	}
	w.current, w.ids = live, ids
	for _, fn := range w.subs {
		fn(slices.Clone(live))
	}
}

func equalIDs(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (w *namespaceWatch) stop() {
	close(w.done)
	w.wg.Wait()
}
