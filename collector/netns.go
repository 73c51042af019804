package collector

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// The namespaces the kernel-state collectors (sa, policy, events,
// xfrm_stat) and the wire collector read: the exporter's own, labelled
// netns="", and every named namespace in --collector.netns.dir, labelled
// with its name. IPsec often lives outside the exporter's namespace (a VPN
// gateway namespace, a pod), and SAs, policies, /proc/net/xfrm_stat and
// interfaces are all per namespace.
//
// One watcher (internal/netnsx.Watcher) follows the directory for the whole
// exporter, and one event listener per namespace (internal/xfrmnl.Listeners)
// serves the events and sa collectors: both are opened by the first
// collector that needs them and closed with the last. The netns collector
// reports what the watcher sees.

var (
	netnsDir = kingpin.Flag("collector.netns.dir",
		"Directory of named network namespaces to read besides the exporter's own (where `ip netns add` puts them), followed as namespaces come and go. Entering them needs CAP_SYS_ADMIN; without it they are skipped and counted in ipsec_netns_skipped. Empty: only the exporter's own namespace.").
		Default("/var/run/netns").String()
	netnsNames = kingpin.Flag("collector.netns.name",
		"Read only this named namespace from --collector.netns.dir (repeatable). Default: all of them.").
		Strings()
)

func init() {
	RegisterFlagCheck("collector.netns.dir", func() error {
		dir := *netnsDir
		if dir == "" {
			return nil
		}
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("must be an absolute directory, or empty for the exporter's own namespace only, got %q", dir)
		}
		if st, err := os.Stat(dir); err == nil && !st.IsDir() {
			return fmt.Errorf("%q is not a directory", dir)
		}
		return nil // one that does not exist yet is followed once it does
	})
	RegisterFlagCheck("collector.netns.name", func() error {
		for _, name := range *netnsNames {
			if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
				return fmt.Errorf("must be a file name in --collector.netns.dir, got %q", name)
			}
		}
		if len(*netnsNames) > 0 && *netnsDir == "" {
			return errors.New("needs --collector.netns.dir")
		}
		return nil
	})
}

// shared is one resource for every collector that uses it: opened by the
// first acquire, closed by the last release.
type shared[T io.Closer] struct {
	open func(*slog.Logger) (T, error)

	mu    sync.Mutex
	v     T
	users int
}

func (s *shared[T]) acquire(logger *slog.Logger) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users == 0 {
		v, err := s.open(logger)
		if err != nil {
			var zero T
			return zero, err
		}
		s.v = v
	}
	s.users++
	return s.v, nil
}

func (s *shared[T]) release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users--
	if s.users > 0 {
		return nil
	}
	var zero T
	v := s.v
	s.v = zero
	return v.Close()
}

// watchedNamespaces is the exporter's namespace watcher.
var watchedNamespaces = shared[*netnsx.Watcher]{open: func(logger *slog.Logger) (*netnsx.Watcher, error) {
	return netnsx.NewWatcher(netnsx.Config{Dir: *netnsDir, Names: *netnsNames, Logger: logger})
}}

// eventListeners is the exporter's event listener per watched namespace.
var eventListeners = shared[*followedListeners]{open: func(logger *slog.Logger) (*followedListeners, error) {
	w, err := watchedNamespaces.acquire(logger)
	if err != nil {
		return nil, err
	}
	ls := xfrmnl.Follow(w, xfrmnl.ListenOptions{RcvBuf: *eventsRcvBuf, Logger: logger})
	return &followedListeners{Listeners: ls, watcher: w}, nil
}}

// followedListeners holds the watcher for as long as the listeners run.
type followedListeners struct {
	*xfrmnl.Listeners
	watcher *netnsx.Watcher
}

func (f *followedListeners) Close() error {
	err := f.Listeners.Close()
	return errors.Join(err, watchedNamespaces.release())
}

// namespacesNow returns the watcher's namespaces after a rescan (shared by
// concurrent scrapes), so a scrape reads what is there at its start.
func namespacesNow(w *netnsx.Watcher) func() []netnsx.Namespace {
	return func() []netnsx.Namespace {
		w.Refresh()
		return w.Namespaces()
	}
}

// xfrmAbsent tells whether err means the kernel has no XFRM netlink
// (xfrm_user not loaded or not built): no data, not a failure.
func xfrmAbsent(err error) bool {
	return errors.Is(err, unix.EPROTONOSUPPORT)
}

// gone tells whether a read failed because the namespace went away
// meanwhile: skipped, not a failure.
func gone(err error) bool {
	return errors.Is(err, netnsx.ErrGone)
}

var (
	netnsWatchedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "netns", "watched"),
		"Network namespaces the kernel-state collectors read: the exporter's own and the named ones in --collector.netns.dir.",
		nil, nil)
	netnsSkippedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "netns", "skipped"),
		"Entries of --collector.netns.dir that are not read, by reason: not_namespace (not an nsfs mount: a plain or empty file, a FIFO, a directory, a link to nothing; never opened), permission (the exporter may not enter it: entering needs CAP_SYS_ADMIN), duplicate (another name of a namespace already read), error (could not be examined).",
		[]string{"reason"}, nil)
	netnsChangesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "netns", "changes_total"),
		"Named network namespaces that appeared in or vanished from --collector.netns.dir since start (a name deleted and created again is both).",
		[]string{"change"}, nil)
	netnsFollowingDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "netns", "following"),
		"Whether namespaces are followed as they come and go (1: inotify and the mount table), or only found at each scrape (0).",
		nil, nil)
)

func init() {
	registerCollector("netns", true, func(logger *slog.Logger) (Collector, error) {
		w, err := watchedNamespaces.acquire(logger)
		if err != nil {
			return nil, err
		}
		return &netnsCollector{watcher: w, release: watchedNamespaces.release}, nil
	})
}

// netnsCollector reports what the namespace watcher sees.
type netnsCollector struct {
	watcher *netnsx.Watcher
	release func() error
}

func (c *netnsCollector) Update(ch chan<- prometheus.Metric) error {
	c.watcher.Refresh()
	st := c.watcher.Stats()
	ch <- newConstMetric(netnsWatchedDesc, prometheus.GaugeValue, float64(st.Namespaces))
	for _, r := range netnsx.SkipReasons {
		ch <- newConstMetric(netnsSkippedDesc, prometheus.GaugeValue, float64(st.Skipped[r]), r)
	}
	ch <- newConstMetric(netnsChangesDesc, prometheus.CounterValue, float64(st.Appeared), "appeared")
	ch <- newConstMetric(netnsChangesDesc, prometheus.CounterValue, float64(st.Vanished), "vanished")
	following := 0.0
	if st.Following {
		following = 1
	}
	ch <- newConstMetric(netnsFollowingDesc, prometheus.GaugeValue, following)
	return nil
}

func (c *netnsCollector) Close() error {
	if c.release == nil {
		return nil
	}
	return c.release()
}
