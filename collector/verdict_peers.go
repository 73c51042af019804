package collector

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v2"
)

// peerNames maps peer addresses to names (--collector.verdict.peer-names).
// The file is a YAML mapping ("10.0.0.2: node-a") or plain "address name"
// lines (# starts a comment). It is re-read at the first scrape after its
// modification time or size changed; a file that no longer parses keeps the
// last good names and is logged.
type peerNames struct {
	path   string
	logger *slog.Logger

	mu      sync.Mutex
	names   map[string]string // canonical address -> name
	modTime time.Time
	size    int64
}

func newPeerNames(path string, logger *slog.Logger) (*peerNames, error) {
	p := &peerNames{path: path, logger: logger}
	if err := p.reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// get returns the current names, re-reading the file if it changed.
func (p *peerNames) get() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fi, err := os.Stat(p.path); err == nil && (!fi.ModTime().Equal(p.modTime) || fi.Size() != p.size) {
		if err := p.reloadLocked(); err != nil {
			p.logger.Error("peer names file changed but cannot be used; keeping the previous names", "file", p.path, "err", err)
		} else {
			p.logger.Info("peer names reloaded", "file", p.path, "peers", len(p.names))
		}
	}
	return p.names
}

func (p *peerNames) reload() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reloadLocked()
}

func (p *peerNames) reloadLocked() error {
	fi, err := os.Stat(p.path)
	if err != nil {
		return err
	}
	// Remember this version even if it does not parse, so that a bad file
	// is logged once, not at every scrape.
	p.modTime, p.size = fi.ModTime(), fi.Size()
	b, err := os.ReadFile(p.path)
	if err != nil {
		return err
	}
	names, err := parsePeerNames(b)
	if err != nil {
		return fmt.Errorf("%s: %w", p.path, err)
	}
	p.names = names
	return nil
}

// parsePeerNames reads either format. A YAML mapping is tried first; text
// that is not one ("10.0.0.2 node-a" lines read as a single YAML string) is
// read as lines.
func parsePeerNames(b []byte) (map[string]string, error) {
	var m map[string]string
	if err := yaml.UnmarshalStrict(b, &m); err == nil && m != nil {
		return canonicalPeers(m)
	}
	m = map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		switch len(f) {
		case 0:
			continue
		case 2:
			m[f[0]] = f[1]
		default:
			return nil, fmt.Errorf("line %d: want \"address name\" (or a YAML mapping), got %q", n, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return canonicalPeers(m)
}

// canonicalPeers parses every address, so that "fd00:0::2" matches the
// exporter's "fd00::2".
func canonicalPeers(m map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(m))
	for addr, name := range m {
		a, err := netip.ParseAddr(strings.TrimSpace(addr))
		if err != nil {
			return nil, fmt.Errorf("peer address %q: %w", addr, err)
		}
		out[a.Unmap().String()] = name
	}
	return out, nil
}
