// Command ipsec_exporter exposes what the Linux kernel's IPsec layer (XFRM)
// does, measured with eBPF and read from netlink and /proc, as Prometheus
// metrics. This file only wires flags, logging, the collectors and the web
// server; it holds no kernel knowledge.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	promcollectors "github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/ipsec-exporter/ipsec_exporter/collector"
	"github.com/ipsec-exporter/ipsec_exporter/internal/webserver"
)

// defaultListenAddress sits outside 9100-9999, which the Prometheus default
// port allocation list has filled, and away from the ports older IPsec
// exporters took (9536, 9814, 9903).
const defaultListenAddress = ":10871"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	app := kingpin.CommandLine
	var (
		metricsPath = app.Flag("web.telemetry-path",
			"Path under which to expose metrics.").Default("/metrics").String()
		disableExporterMetrics = app.Flag("web.disable-exporter-metrics",
			"Exclude the exporter's own metrics (go_*, process_*, promhttp_*, ipsec_exporter_http_*, ipsec_exporter_scrape_*, ipsec_exporter_basic_auth_*).").Default("false").Bool()
		maxRequests = app.Flag("web.max-requests",
			"Maximum number of scrape requests waiting for a collection at once (concurrent requests share one collection); more get 503. 0: no limit.").Default("40").Int()
		maxConnections = app.Flag("web.max-connections",
			"Maximum number of open HTTP connections. At the bound a new connection closes the one idle longest; when all are answering a request, the new one is closed.").Default("128").Int()
		readTimeout = app.Flag("web.read-timeout",
			"Time a client has for the TLS handshake and its request headers.").Default("10s").Duration()
		writeTimeout = app.Flag("web.write-timeout",
			"Time from the end of a request's headers to the end of its answer: a collection and its transfer must fit in it.").Default("2m").Duration()
		idleTimeout = app.Flag("web.idle-timeout",
			"Time a keep-alive connection may wait for its next request.").Default("2m").Duration()
		toolkitFlags = kingpinflag.AddFlags(app, defaultListenAddress)
	)
	promslogConfig := &promslog.Config{}
	flag.AddFlags(app, promslogConfig)
	app.Version(version.Print("ipsec_exporter"))
	app.HelpFlag.Short('h')
	collector.RegisterFlagCheck("web.telemetry-path", func() error {
		if !strings.HasPrefix(*metricsPath, "/") {
			return fmt.Errorf("must be an absolute URL path starting with \"/\", got %q", *metricsPath)
		}
		return nil
	})
	collector.RegisterFlagCheck("web.max-requests", func() error {
		if *maxRequests < 0 {
			return fmt.Errorf("must be 0 (no limit) or more, got %d", *maxRequests)
		}
		return nil
	})
	collector.RegisterFlagCheck("web.max-connections", func() error {
		if *maxConnections < 1 {
			return fmt.Errorf("must be 1 or more, got %d", *maxConnections)
		}
		return nil
	})
	collector.RegisterFlagCheck("web.listen-address", func() error {
		for _, address := range *toolkitFlags.WebListenAddresses {
			if strings.HasPrefix(address, "vsock://") {
				continue
			}
			if _, port, err := net.SplitHostPort(address); err != nil || port == "" {
				return fmt.Errorf("must be [host]:port or vsock://:port, got %q", address)
			}
		}
		return nil
	})
	for name, d := range map[string]*time.Duration{
		"web.read-timeout": readTimeout, "web.write-timeout": writeTimeout, "web.idle-timeout": idleTimeout,
	} {
		collector.RegisterFlagCheck(name, func() error {
			if *d < time.Second {
				return fmt.Errorf("must be 1s or more, got %v", *d)
			}
			return nil
		})
	}
	// Every flag is checked here, before any collector loads or attaches
	// anything.
	if err := collector.ParseFlags(app, args); err != nil {
		fmt.Fprintf(os.Stderr, "ipsec_exporter: %v\n", err)
		return 2
	}
	logger := promslog.New(promslogConfig)
	logger.Info("starting ipsec_exporter", "version", version.Info())
	logger.Info("build context", "build_context", version.BuildContext())
	if os.Geteuid() != 0 {
		logger.Info("running without root: collectors that lack a capability say so in their own log lines and metrics")
	}

	// The exporter's own metrics live in their own registry, so that
	// --web.disable-exporter-metrics removes exactly them.
	selfRegistry := prometheus.NewRegistry()
	// A bad web config or a busy port is a start-up error before any
	// collector loads BPF programs or opens sockets, so nothing is left half
	// started.
	server, err := webserver.Listen(webserver.Options{
		ListenAddresses: *toolkitFlags.WebListenAddresses,
		SystemdSocket:   *toolkitFlags.WebSystemdSocket,
		ConfigFile:      *toolkitFlags.WebConfigFile,
		ReadTimeout:     *readTimeout,
		WriteTimeout:    *writeTimeout,
		IdleTimeout:     *idleTimeout,
		MaxConnections:  *maxConnections,
		Logger:          logger,
		Registerer:      selfRegistry,
	})
	if err != nil {
		logger.Error("cannot serve", "err", err)
		return 1
	}

	exporter, err := collector.NewExporter(logger)
	if err != nil {
		logger.Error("cannot start collectors", "err", err)
		_ = server.Close()
		return 1
	}
	logger.Info("enabled collectors", "collectors", exporter.Enabled())

	handler := newHandler(logger, exporter, selfRegistry, *metricsPath, *disableExporterMetrics, *maxRequests)
	done := make(chan error, 1)
	go func() { done <- server.Serve(handler) }()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	status := 0
	select {
	case sig := <-signals:
		logger.Info("shutting down", "signal", sig.String())
		_ = server.Close()
	case err := <-done:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("web server failed", "err", err)
			status = 1
		}
	}
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- exporter.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			logger.Error("closing collectors", "err", err)
			status = 1
		}
		logger.Info("collectors closed", "duration_seconds", time.Since(start).Seconds())
	case <-time.After(closeTimeout):
		// A collector stuck in a scrape (a read that never returns) must not
		// keep the process from stopping.
		logger.Error("collectors did not close in time; exiting without them", "timeout", closeTimeout)
		status = 1
	}
	return status
}

// closeTimeout bounds the shutdown, below Kubernetes' default grace period
// (30 s) and systemd's (90 s), so that the exporter exits by itself.
const closeTimeout = 20 * time.Second

// newHandler serves the metrics page at metricsPath (exactly that path) and
// the landing page at "/". The exporter's own metrics (Go, process, and
// those of the HTTP side in selfRegistry) are left out with
// --web.disable-exporter-metrics.
func newHandler(logger *slog.Logger, exporter *collector.Exporter, selfRegistry *prometheus.Registry, metricsPath string, disableExporterMetrics bool, maxRequests int) http.Handler {
	ipsecRegistry := prometheus.NewRegistry()
	ipsecRegistry.MustRegister(versioncollector.NewCollector("ipsec_exporter"))
	ipsecRegistry.MustRegister(exporter)

	gatherers := prometheus.Gatherers{ipsecRegistry}
	if !disableExporterMetrics {
		selfRegistry.MustRegister(
			promcollectors.NewGoCollector(),
			promcollectors.NewProcessCollector(promcollectors.ProcessCollectorOpts{}),
		)
		gatherers = append(gatherers, selfRegistry)
	}
	metrics := promhttp.InstrumentMetricHandler(selfRegistry,
		webserver.NewMetricsHandler(gatherers, maxRequests, logger, selfRegistry))

	landing := http.NotFoundHandler()
	if metricsPath != "/" {
		page, err := web.NewLandingPage(web.LandingConfig{
			Name:        "IPsec Exporter",
			Description: "Prometheus exporter for the Linux kernel's IPsec (XFRM) datapath",
			Version:     version.Info(),
			Links:       []web.LandingLinks{{Address: metricsPath, Text: "Metrics"}},
		})
		if err != nil {
			logger.Error("cannot build landing page", "err", err)
		} else {
			landing = page
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == metricsPath {
			metrics.ServeHTTP(w, r)
			return
		}
		landing.ServeHTTP(w, r)
	})
}
