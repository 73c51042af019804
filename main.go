// Command ipsec_exporter exposes what the Linux kernel's IPsec layer (XFRM)
// does, measured with eBPF and read from netlink and /proc, as Prometheus
// metrics. This file only wires flags, logging, the collectors and the web
// server; it holds no kernel knowledge.
package main

import (
	"errors"
	"fmt"
	"log/slog"
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
			"Exclude the exporter's own Go and process metrics (promhttp_*, process_*, go_*).").Default("false").Bool()
		maxRequests = app.Flag("web.max-requests",
			"Maximum number of parallel scrape requests. Use 0 to disable.").Default("40").Int()
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
	// Every flag is checked here, before any collector loads or attaches
	// anything.
	if err := collector.ParseFlags(app, args); err != nil {
		fmt.Fprintf(os.Stderr, "ipsec_exporter: %v\n", err)
		return 2
	}
	logger := promslog.New(promslogConfig)
	// A bad web config is a start-up error before any collector loads BPF
	// programs or opens sockets, so nothing is left half started.
	if cfg := *toolkitFlags.WebConfigFile; cfg != "" {
		if err := web.Validate(cfg); err != nil {
			logger.Error("invalid web config", "file", cfg, "err", err)
			return 1
		}
	}
	logger.Info("starting ipsec_exporter", "version", version.Info())
	logger.Info("build context", "build_context", version.BuildContext())
	if os.Geteuid() != 0 {
		logger.Info("running without root: collectors that lack a capability say so in their own log lines and metrics")
	}

	exporter, err := collector.NewExporter(logger)
	if err != nil {
		logger.Error("cannot start collectors", "err", err)
		return 1
	}
	logger.Info("enabled collectors", "collectors", exporter.Enabled())

	mux := newMux(logger, exporter, *metricsPath, *disableExporterMetrics, *maxRequests)
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	done := make(chan error, 1)
	go func() { done <- web.ListenAndServe(server, toolkitFlags, logger) }()

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
	if err := exporter.Close(); err != nil {
		logger.Error("closing collectors", "err", err)
		status = 1
	}
	logger.Info("collectors closed", "duration_seconds", time.Since(start).Seconds())
	return status
}

// newMux serves the metrics page and the landing page. The exporter's own Go
// and process metrics live in their own registry so that
// --web.disable-exporter-metrics removes exactly them.
func newMux(logger *slog.Logger, exporter *collector.Exporter, metricsPath string, disableExporterMetrics bool, maxRequests int) *http.ServeMux {
	ipsecRegistry := prometheus.NewRegistry()
	ipsecRegistry.MustRegister(versioncollector.NewCollector("ipsec_exporter"))
	ipsecRegistry.MustRegister(exporter)

	gatherers := prometheus.Gatherers{ipsecRegistry}
	var instrumentRegistry prometheus.Registerer = prometheus.NewRegistry()
	if !disableExporterMetrics {
		selfRegistry := prometheus.NewRegistry()
		selfRegistry.MustRegister(
			promcollectors.NewGoCollector(),
			promcollectors.NewProcessCollector(promcollectors.ProcessCollectorOpts{}),
		)
		gatherers = append(gatherers, selfRegistry)
		instrumentRegistry = selfRegistry
	}
	handler := promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(logger.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxRequests,
		Registry:            instrumentRegistry,
	})
	handler = promhttp.InstrumentMetricHandler(instrumentRegistry, handler)

	mux := http.NewServeMux()
	mux.Handle(metricsPath, handler)
	if metricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "IPsec Exporter",
			Description: "Prometheus exporter for the Linux kernel's IPsec (XFRM) datapath",
			Version:     version.Info(),
			Links:       []web.LandingLinks{{Address: metricsPath, Text: "Metrics"}},
		})
		if err != nil {
			logger.Error("cannot build landing page", "err", err)
		} else {
			mux.Handle("/", landing)
		}
	}
	return mux
}
