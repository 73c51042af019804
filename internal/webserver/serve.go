// Package webserver is the exporter's HTTP side: its listeners, TLS and
// basic auth from exporter-toolkit's web config file (same format, same
// meaning), and bounds on what clients can make it spend: connections,
// time, the CPU of password checks, and collections (concurrent scrapes
// share one).
//
// It does not use the toolkit's web.Serve, which wraps the handler in its
// own basic-auth check: that check runs a bcrypt comparison for every
// request with a password it has not seen, before anything of ours could
// limit it, and it re-reads the config file on every request. The toolkit
// still checks and interprets the file (web.Validate, web.ConfigToTLSConfig).
package webserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Options are the server's settings (the --web.* flags).
type Options struct {
	ListenAddresses []string // host:port, or vsock://:port
	SystemdSocket   bool     // use systemd's socket activation instead
	ConfigFile      string   // exporter-toolkit web config; "" for plain HTTP without auth

	ReadTimeout    time.Duration // TLS handshake and request headers
	WriteTimeout   time.Duration // from the end of the headers to the end of the answer
	IdleTimeout    time.Duration // a keep-alive connection waiting for its next request
	MaxConnections int           // open connections, idle ones closed first at the bound

	Logger     *slog.Logger
	Registerer prometheus.Registerer // where the server's own metrics go
}

// maxHeaderBytes bounds a request's headers (Go's default is 1 MiB per
// connection); scrapers send a few hundred bytes.
const maxHeaderBytes = 16 << 10

// maxStreams bounds the concurrent requests of one HTTP/2 connection (Go's
// default is 100 or more).
const maxStreams = 16

// Server serves one handler on the listeners of Options.
type Server struct {
	opts      Options
	listeners []net.Listener
	config    *webConfig // nil without a config file
	tls       bool       // serve TLS (decided at start, as the toolkit does)
	conns     *connTable
	gate      *authGate
	http      *http.Server
	closeOnce sync.Once
}

// Listen checks the web config file and opens the listeners, so that a bad
// file or a busy port stops the exporter before anything else starts.
func Listen(opts Options) (*Server, error) {
	s := &Server{opts: opts}
	if opts.ConfigFile != "" {
		c, err := loadWebConfig(opts.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("web config file %s: %w", opts.ConfigFile, err)
		}
		s.config = c
		_, tlsConfig, _ := c.get()
		s.tls = tlsConfig != nil
	}
	listeners, err := listen(opts)
	if err != nil {
		return nil, err
	}
	s.listeners = listeners
	s.conns = newConnTable(opts.MaxConnections, opts.Registerer)
	s.gate = newAuthGate(opts.Registerer)
	return s, nil
}

func listen(opts Options) ([]net.Listener, error) {
	if opts.SystemdSocket {
		listeners, err := activation.Listeners()
		if err != nil {
			return nil, fmt.Errorf("systemd socket activation: %w", err)
		}
		if len(listeners) == 0 {
			return nil, errors.New("systemd socket activation: no socket passed")
		}
		return listeners, nil
	}
	if len(opts.ListenAddresses) == 0 {
		return nil, errors.New("no --web.listen-address")
	}
	var listeners []net.Listener
	for _, address := range opts.ListenAddresses {
		l, err := listenOn(address)
		if err != nil {
			for _, l := range listeners {
				_ = l.Close()
			}
			return nil, fmt.Errorf("--web.listen-address=%s: %w", address, err)
		}
		listeners = append(listeners, l)
	}
	return listeners, nil
}

func listenOn(address string) (net.Listener, error) {
	if !strings.HasPrefix(address, "vsock://") {
		return net.Listen("tcp", address)
	}
	u, err := url.Parse(address)
	if err != nil {
		return nil, err
	}
	_, portText, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portText, 10, 32)
	if err != nil {
		return nil, err
	}
	return vsock.Listen(uint32(port), nil)
}

// Serve answers every request with handler, behind the web config's rate
// limit, headers and basic auth, until Close. It returns the first
// listener's error other than http.ErrServerClosed.
func (s *Server) Serve(handler http.Handler) error {
	logger := s.opts.Logger
	if s.config != nil {
		c, _, err := s.config.get()
		if err != nil {
			return err
		}
		auth := &authHandler{config: s.config, gate: s.gate, next: handler, logger: logger, idle: s.conns.idle}
		if c.RateLimiterConfig.Interval != 0 {
			auth.limiter = rate.NewLimiter(rate.Every(c.RateLimiterConfig.Interval), c.RateLimiterConfig.Burst)
		}
		handler = auth
	}
	s.http = &http.Server{
		Handler:           s.conns.serving(handler),
		ReadHeaderTimeout: s.opts.ReadTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         s.conns.track,
		ConnContext:       withConn,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		// TLS handshake errors and the like are what any client can cause;
		// at debug level they cannot flood the log.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	if s.tls {
		s.setupTLS()
	}
	errs := make(chan error, len(s.listeners))
	for _, l := range s.listeners {
		logger.Info("listening", "address", l.Addr().String(), "tls", s.tls,
			"max_connections", s.opts.MaxConnections, "read_timeout", s.opts.ReadTimeout,
			"write_timeout", s.opts.WriteTimeout, "idle_timeout", s.opts.IdleTimeout)
		go func() {
			l := s.conns.limit(l)
			if s.tls {
				errs <- s.http.ServeTLS(l, "", "")
			} else {
				errs <- s.http.Serve(l)
			}
		}()
	}
	var first error
	for range s.listeners {
		if err := <-errs; first == nil && !errors.Is(err, http.ErrServerClosed) {
			first = err
			_ = s.Close()
		}
	}
	return first
}

// setupTLS makes every handshake use the config file as it is now, as the
// toolkit does (a renewed certificate is used without a restart), keeping
// HTTP/2 on or off as the file said at start.
func (s *Server) setupTLS() {
	c, _, _ := s.config.get()
	protos := []string{"http/1.1"}
	if c.HTTPConfig.HTTP2 {
		protos = []string{"h2", "http/1.1"}
	} else {
		s.http.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	s.http.TLSConfig = &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			_, tlsConfig, err := s.config.get()
			if err != nil {
				return nil, err
			}
			if tlsConfig == nil {
				return nil, errTLSChanged
			}
			tlsConfig = tlsConfig.Clone()
			tlsConfig.NextProtos = protos
			return tlsConfig, nil
		},
	}
}

// Close stops serving: the listeners and every connection are closed.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.http != nil {
			err = s.http.Close()
		}
		for _, l := range s.listeners {
			_ = l.Close() // already closed by http.Server.Close when it served them
		}
	})
	return err
}
