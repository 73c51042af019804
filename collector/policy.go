package collector

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"

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

	policiesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "policies"),
		"IPsec policies in the namespace's policy database by direction (in, out, fwd), as XFRM_MSG_GETSPDINFO counts them; per-socket policies not included.",
		[]string{"netns", "direction"}, nil)
	socketPoliciesDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "socket_policies"),
		"Per-socket IPsec policies (set by IKE daemons on their own sockets, for instance) by direction.",
		[]string{"netns", "direction"}, nil)
	policyInfoDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "policy", "info"),
		"A policy with its selector (src, dst, upper-layer proto), action (allow/block), priority and the number of SAs its templates require (templates; 0 for a bypass). Always 1.",
		append(slices.Clone(policyLabels), "src", "dst", "proto", "action", "priority", "templates"), nil)
	policyAddedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "policy", "added_timestamp_seconds"),
		"When the policy was installed, as a Unix time.", policyLabels, nil)
	policyLastUsedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "policy", "last_used_timestamp_seconds"),
		"When a packet last matched the policy, as a Unix time (absent if never).", policyLabels, nil)
	policyOmittedDesc = prometheus.NewDesc(prometheus.BuildFQName(namespace, "policy", "omitted"),
		"Policies seen in this scrape that got no per-policy series (--collector.policy.max-series).", nil, nil)
)

func init() {
	registerCollector("policy", true, func(logger *slog.Logger) (Collector, error) {
		return &policyCollector{logger: logger, targets: netnsTargets, read: readPolicies, max: *policyMaxSeries}, nil
	})
}

type policySnapshot struct {
	SPD      xfrmnl.SPDInfo
	Policies []xfrmnl.Policy
}

type policyCollector struct {
	logger  *slog.Logger
	targets func() ([]netnsTarget, error)
	read    func(netnsTarget) (policySnapshot, error)
	max     int
}

func readPolicies(t netnsTarget) (policySnapshot, error) {
	var s policySnapshot
	conn, err := xfrmnl.Dial(t.Path, 0)
	if err != nil {
		return s, err
	}
	defer func() { _ = conn.Close() }()
	if s.SPD, err = conn.SPDInfo(); err != nil {
		return s, err
	}
	if s.Policies, err = conn.Policies(); err != nil {
		return s, err
	}
	return s, nil
}

func (c *policyCollector) Update(ch chan<- prometheus.Metric) error {
	targets, err := c.targets()
	if err != nil {
		return err
	}
	var errs []error
	emitted, omitted := 0, 0
	for _, t := range targets {
		snap, err := c.read(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("netns %q: %w", t.Name, err))
			continue
		}
		spd := snap.SPD
		for _, d := range []struct {
			dir          string
			main, socket uint32
		}{{"in", spd.In, spd.SocketIn}, {"out", spd.Out, spd.SocketOut}, {"fwd", spd.Fwd, spd.SocketFwd}} {
			ch <- newConstMetric(policiesDesc, prometheus.GaugeValue, float64(d.main), t.Name, d.dir)
			ch <- newConstMetric(socketPoliciesDesc, prometheus.GaugeValue, float64(d.socket), t.Name, d.dir)
		}
		pols := snap.Policies
		slices.SortFunc(pols, func(a, b xfrmnl.Policy) int { return cmp.Compare(a.Index, b.Index) })
		for i := range pols {
			if c.max > 0 && emitted >= c.max {
				omitted++
				continue
			}
			emitted++
			emitPolicy(ch, t.Name, &pols[i])
		}
	}
	ch <- newConstMetric(policyOmittedDesc, prometheus.GaugeValue, float64(omitted))
	if err := errors.Join(errs...); err != nil && xfrmAbsent(err) {
		return fmt.Errorf("%w: %w", ErrNoData, err)
	}
	return errors.Join(errs...)
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
