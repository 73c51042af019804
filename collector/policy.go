package collector

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/xfrmnl"
)

// The policy collector: the policy database of every watched namespace
// (XFRM_MSG_GETSPDINFO for the counts, GETPOLICY for each policy;
// internal/xfrmnl). Policies are few and long-lived, unlike SAs, so each
// gets its own series (capped like SAs), keyed by the kernel's policy index.

var policyMaxSeries = kingpin.Flag("collector.policy.max-series",
	"Maximum number of policies per scrape that get per-policy series; the rest are counted in ipsec_policy_omitted. 0: no limit.").
	Default("1000").Int()

var (
	policyLabels = []string{"netns", "index", "direction"}

	policiesDesc = prometheus.NewDesc("ipsec_policies",
		"IPsec policies in the namespace's policy database by direction (in, out, fwd), as XFRM_MSG_GETSPDINFO counts them; per-socket policies not included.",
		[]string{"netns", "direction"}, nil)
	socketPoliciesDesc = prometheus.NewDesc("ipsec_socket_policies",
		"Per-socket IPsec policies (set by IKE daemons on their own sockets, for instance) by direction.",
		[]string{"netns", "direction"}, nil)
	policyInfoDesc = prometheus.NewDesc("ipsec_policy_info",
		"A policy with its selector (src, dst, upper-layer proto), action (allow/block), priority and the number of SAs its templates require (templates; 0 for a bypass). Always 1.",
		append(slices.Clone(policyLabels), "src", "dst", "proto", "action", "priority", "templates"), nil)
	policyAddedDesc = prometheus.NewDesc("ipsec_policy_added_timestamp_seconds",
		"When the policy was installed, as a Unix time.", policyLabels, nil)
	policyLastUsedDesc = prometheus.NewDesc("ipsec_policy_last_used_timestamp_seconds",
		"When a packet last matched the policy, as a Unix time (absent if never).", policyLabels, nil)
	policyOmittedDesc = prometheus.NewDesc("ipsec_policy_omitted",
		"Policies seen in this scrape that got no per-policy series (--collector.policy.max-series).", nil, nil)
)

func init() {
	RegisterFlagCheck("collector.policy.max-series", checkMaxSeries(policyMaxSeries))
	registerCollector("policy", true, func(logger *slog.Logger) (Collector, error) {
		w, err := watchedNamespaces.acquire(logger)
		if err != nil {
			return nil, err
		}
		return &policyCollector{logger: logger, namespaces: namespacesNow(w), read: readPolicies, max: *policyMaxSeries,
			release: watchedNamespaces.release}, nil
	})
}

// policyNamespace is what the policy collector reads of one namespace.
type policyNamespace struct {
	SPD xfrmnl.SPDInfo
	// Each calls fn with every policy, decoded into one reused value.
	Each func(fn func(*xfrmnl.Policy) error) error
	// Close releases what Each needs.
	Close func()
}

type policyCollector struct {
	logger     *slog.Logger
	namespaces func() []netnsx.Namespace
	read       func(netnsx.Namespace) (policyNamespace, error)
	max        int
	release    func() error

	mu   sync.Mutex        // scrapes may overlap
	rows firstN[policyRow] // the policies given series, reused from scrape to scrape
}

// Close lets go of the namespace watcher.
func (c *policyCollector) Close() error {
	if c.release == nil {
		return nil
	}
	return c.release()
}

// readPolicies reads the namespace's SPD info and opens its policy dump.
func readPolicies(ns netnsx.Namespace) (policyNamespace, error) {
	var s policyNamespace
	conn, err := xfrmnl.Dial(ns, 0)
	if err != nil {
		return s, err
	}
	if s.SPD, err = conn.SPDInfo(); err != nil {
		_ = conn.Close()
		return s, err
	}
	s.Each = conn.EachPolicy
	s.Close = func() { _ = conn.Close() }
	return s, nil
}

// policyRow is one policy that may get per-policy series: namespace by
// namespace in the order they are read, then by the kernel's index.
type policyRow struct {
	order int // the namespace's place in this scrape
	netns string
	p     xfrmnl.Policy
}

func comparePolicyRows(a, b *policyRow) int {
	return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.p.Index, b.p.Index))
}

func (c *policyCollector) Update(ch chan<- prometheus.Metric) error {
	var errs []error
	c.mu.Lock()
	defer c.mu.Unlock()
	rows := &c.rows
	rows.n, rows.cmp = c.max, comparePolicyRows
	rows.reset()
	for order, ns := range c.namespaces() {
		err := c.readNamespace(ch, order, ns, rows)
		if gone(err) {
			c.logger.Debug("namespace gone before it was read", "netns", ns.Name, "err", err)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("netns %q: %w", ns.Name, err))
		}
	}
	for _, r := range rows.sorted() {
		emitPolicy(ch, r.netns, &r.p)
	}
	ch <- newConstMetric(policyOmittedDesc, prometheus.GaugeValue, float64(rows.dropped))
	if err := errors.Join(errs...); err != nil && xfrmAbsent(err) {
		return fmt.Errorf("%w: %w", ErrNoData, err)
	}
	return errors.Join(errs...)
}

// readNamespace sends a namespace's policy counts and offers its policies
// to the cap. (Those of a namespace whose dump fails half-way may keep their
// rows: what they show is still true.)
func (c *policyCollector) readNamespace(ch chan<- prometheus.Metric, order int, ns netnsx.Namespace, rows *firstN[policyRow]) error {
	snap, err := c.read(ns)
	if err != nil {
		return err
	}
	defer snap.Close()
	row := policyRow{order: order, netns: ns.Name} // one, reused: offer copies it
	if err := snap.Each(func(p *xfrmnl.Policy) error {
		row.p.Index = p.Index
		if rows.full() && comparePolicyRows(&row, rows.last()) >= 0 {
			rows.dropped++ // nothing copied for a policy beyond the cap
			return nil
		}
		row.p = *p
		rows.offer(&row)
		return nil
	}); err != nil {
		return err
	}
	spd := snap.SPD
	for _, d := range []struct {
		dir          string
		main, socket uint32
	}{{"in", spd.In, spd.SocketIn}, {"out", spd.Out, spd.SocketOut}, {"fwd", spd.Fwd, spd.SocketFwd}} {
		ch <- newConstMetric(policiesDesc, prometheus.GaugeValue, float64(d.main), ns.Name, d.dir)
		ch <- newConstMetric(socketPoliciesDesc, prometheus.GaugeValue, float64(d.socket), ns.Name, d.dir)
	}
	return nil
}

func emitPolicy(ch chan<- prometheus.Metric, netns string, p *xfrmnl.Policy) {
	l := []string{netns, strconv.FormatUint(uint64(p.Index), 10), xfrmnl.DirName(p.Dir)}
	src, dst := "", ""
	if p.Family != 0 {
		src, dst = p.Src.String(), p.Dst.String()
	}
	proto := "any"
	if p.Proto != 0 {
		proto = strconv.Itoa(int(p.Proto))
	}
	info := append(slices.Clone(l), src, dst, proto, xfrmnl.ActionName(p.Action),
		strconv.FormatUint(uint64(p.Priority), 10), strconv.Itoa(p.Templates))
	ch <- newConstMetric(policyInfoDesc, prometheus.GaugeValue, 1, info...)
	ch <- newConstMetric(policyAddedDesc, prometheus.GaugeValue, float64(p.AddTime), l...)
	if p.UseTime != 0 {
		ch <- newConstMetric(policyLastUsedDesc, prometheus.GaugeValue, float64(p.UseTime), l...)
	}
}
