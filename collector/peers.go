package collector

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/alecthomas/kingpin/v2"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/peers"
)

// The node's known IPsec peers (internal/peers), shared by the collectors
// that need them: wire (which plaintext is unprotected traffic to a peer)
// and verdict (peer names). One tracker per process, following the
// namespaces of the exporter's namespace watcher, started by the first
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

// knownPeers is the exporter's tracker.
var knownPeers = shared[*trackedPeers]{open: func(logger *slog.Logger) (*trackedPeers, error) {
	path, err := peersNamesPath()
	if err != nil {
		return nil, err
	}
	t, err := peers.New(peers.Config{ForgetAfter: *peersForgetAfter, NamesFile: path, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("--peers.names-file: %w", err)
	}
	w, err := watchedNamespaces.acquire(logger)
	if err != nil {
		t.Close()
		return nil, err
	}
	tp := &trackedPeers{Tracker: t}
	tp.stop = followNamespaces(w, t.Watch)
	return tp, nil
}}

// trackedPeers holds the watcher for as long as the tracker follows it.
type trackedPeers struct {
	*peers.Tracker
	stop func()
}

func (t *trackedPeers) Close() error {
	t.stop()
	t.Tracker.Close()
	return watchedNamespaces.release()
}

// checkNamesFile checks the peer-names file a flag names, if any.
func checkNamesFile(path string) error {
	if path == "" {
		return nil
	}
	return peers.CheckNamesFile(path)
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

func init() {
	RegisterFlagCheck("peers.forget-after", func() error {
		if *peersForgetAfter < 0 {
			return fmt.Errorf("must not be negative, got %s", *peersForgetAfter)
		}
		return nil
	})
	RegisterFlagCheck("peers.names-file", func() error {
		if _, err := peersNamesPath(); err != nil {
			return err
		}
		return checkNamesFile(*peersNamesFile)
	})
	RegisterFlagCheck("collector.verdict.peer-names", func() error {
		return checkNamesFile(*verdictPeerNames)
	})
}

// followNamespaces calls fn with the watcher's whole list of namespaces
// now, and again (from a goroutine of its own, the latest list only) after
// every change, until the returned stop. The watcher's subscribers must
// return quickly; fn may take its time (it starts followers and attaches
// programs).
func followNamespaces(w *netnsx.Watcher, fn func([]netnsx.Namespace)) (stop func()) {
	var mu sync.Mutex
	var current []netnsx.Namespace
	kick := make(chan struct{}, 1)
	cancel := w.Subscribe(func(c netnsx.Change) {
		mu.Lock()
		defer mu.Unlock()
		current = slices.DeleteFunc(current, func(n netnsx.Namespace) bool { return slices.Contains(c.Removed, n) })
		current = append(current, c.Added...)
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	latest := func() []netnsx.Namespace {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(current)
	}
	<-kick
	fn(latest())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-kick:
				fn(latest())
			}
		}
	}()
	return func() {
		cancel()
		close(done)
		wg.Wait()
	}
}
