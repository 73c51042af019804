package webserver

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// webConfig is the --web.config.file of exporter-toolkit, in its format
// and with its meaning (TLS, basic_auth_users, http_server_config,
// rate_limit): web.Validate checks it and web.ConfigToTLSConfig turns it into
// TLS settings, as in the toolkit. Like the toolkit, the exporter follows
// changes to the file without a restart (a renewed certificate, a new
// password); unlike it, the file is parsed again only when it changed
// (checked with a stat per request and per TLS handshake), not on every
// request, which an unauthenticated client could make it do as fast as it
// can send.
type webConfig struct {
	path string

	mu    sync.Mutex
	stamp fileStamp
	cfg   *web.Config
	tls   *tls.Config // nil when the file configures no TLS
	err   error       // the file as it is now cannot be used
}

// fileStamp tells whether a file changed: a rewrite changes its
// modification time or size, a Kubernetes secret update (a symlink swap)
// its inode.
type fileStamp struct {
	ino, size int64
	mtime     time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = int64(st.Ino)
	}
	return s, nil
}

// loadWebConfig reads and checks the file at start-up: an error here stops
// the exporter before anything starts.
func loadWebConfig(path string) (*webConfig, error) {
	w := &webConfig{path: path}
	if _, _, err := w.get(); err != nil {
		return nil, err
	}
	return w, nil
}

// get returns the configuration as the file is now.
func (w *webConfig) get() (*web.Config, *tls.Config, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	stamp, err := stampOf(w.path)
	if err != nil {
		return nil, nil, err
	}
	if w.cfg == nil && w.err == nil || stamp != w.stamp {
		w.stamp = stamp
		w.cfg, w.tls, w.err = parseWebConfig(w.path)
	}
	return w.cfg, w.tls, w.err
}

// parseWebConfig reads the file as the toolkit does: its defaults (TLS 1.2
// to 1.3, HTTP/2 on), strict YAML, paths relative to the file's directory.
func parseWebConfig(path string) (*web.Config, *tls.Config, error) {
	if err := web.Validate(path); err != nil {
		return nil, nil, err
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	c := &web.Config{
		TLSConfig: web.TLSConfig{
			MinVersion:               tls.VersionTLS12,
			MaxVersion:               tls.VersionTLS13,
			PreferServerCipherSuites: true,
		},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	if err := yaml.UnmarshalStrict(content, c); err != nil {
		return nil, nil, err
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	if !c.TLSConfig.IsEnabled() {
		return c, nil, nil
	}
	tlsConfig, err := web.ConfigToTLSConfig(&c.TLSConfig)
	if err != nil {
		return nil, nil, err
	}
	return c, tlsConfig, nil
}

var errTLSChanged = errors.New("the web config file turned TLS on or off; restart the exporter for that")
