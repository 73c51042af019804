package dashboards

import "github.com/ipsec-exporter/ipsec_exporter/dashboards/rules"

// saLegend names one SA in legends: node, namespace, direction, peer, SPI.
const saLegend = "{{instance}} {{netns}} {{direction}} {{peer}} spi {{spi}}"

// saBy groups per-SA series by what identifies an SA.
const saBy = "instance, netns, direction, peer, spi"

// On this dashboard the namespace and peer variables narrow every series
// that has those labels: nsSel for series per namespace, peerSel for series
// per peer (always also per namespace).
const (
	nsSel   = sel + `, netns=~"$netns"`
	peerSel = nsSel + `, peer=~"$peer"`
)

// saRate is rate() with the namespace and peer variables.
func saRate(metric, selector string) string {
	return "rate(" + metric + "{" + selector + "}[$__rate_interval])"
}

// expiryHeadroom is where IpsecSANearHardExpiry fires: red below it,
// orange below twice it.
var expiryHeadroom = rules.Default.SAExpiryHeadroomSeconds

// SADetail answers "which SA is in trouble, and how close is it to its
// end?": per-SA rates, lifetime, failures, rekeys and the kernel's own
// XFRM error counters.
var SADetail = Dashboard{
	File:  "sa-detail.json",
	UID:   "ipsec-exporter-sa-detail",
	Title: "IPsec / SA detail",
	Description: "Per security association: traffic, lifetime used, SAs near expiry, replay and integrity failures, " +
		"rekey events, and the kernel's XFRM error counters per network namespace, from ipsec_exporter. " +
		"The Namespace and Peer variables narrow every panel whose series have those labels (\"\" is the exporter's own namespace, included in All).",
	Filters: []Filter{
		{Name: "netns", Label: "Namespace", Metric: "ipsec_sas"},
		{Name: "peer", Label: "Peer", Metric: "ipsec_peer_sas"},
	},
	Rows: []Row{
		{Title: "Security associations", Panels: []Panel{
			{
				Title: "SAs per peer (the 20 with fewest)",
				Description: "SAs each node has with each peer and direction now (ipsec_peer_sas), for the 20 peers with the fewest: red at 0, a tunnel down (IpsecPeerSAsGone); " +
					"two per direction for a moment is a rekey.",
				Unit: "none", Width: 8, Min: f(0), Thresholds: zeroIsBad, ColorByValue: true,
				Targets: []Target{{Expr: bottom(`sum by (instance, netns, peer, direction) (ipsec_peer_sas{` + peerSel + `})`), Legend: "{{instance}} {{netns}} {{direction}} {{peer}}"}},
			},
			{
				Title:       "SAs and policies by direction",
				Description: "SAs (ipsec_sas) and IPsec policies (ipsec_policies) in each namespace by direction, the 20 largest of each.",
				Unit:        "none", Width: 8, Min: f(0),
				Targets: []Target{
					{Expr: top(`sum by (instance, netns, direction) (ipsec_sas{` + nsSel + `})`), Legend: "{{instance}} {{netns}} SAs {{direction}}"},
					{Expr: top(`sum by (instance, netns, direction) (ipsec_policies{` + nsSel + `})`), Legend: "{{instance}} {{netns}} policies {{direction}}"},
				},
			},
			{
				Title: "SA lifecycle events",
				Description: "SAs added, updated, deleted and expired (soft: rekey due; hard: removed by its lifetime) and acquires (traffic waiting for IKE), " +
					"as the kernel announced them over netlink (ipsec_xfrm_events_total), the 20 largest. A steady high rate of sa_added is a rekey storm (IpsecRekeyStorm).",
				Unit: "none", Width: 8, Min: f(0), Stack: true,
				Targets: []Target{{Expr: top(`sum by (instance, netns, event) (increase(ipsec_xfrm_events_total{` + nsSel + `, event=~"sa_.*|acquire"}[$__rate_interval]))`), Legend: "{{instance}} {{netns}} {{event}}"}},
			},
		}},
		{Title: "Traffic per SA", Panels: []Panel{
			{
				Title:       "Packets per SA",
				Description: "Packets each SA protected (outbound) or accepted (inbound), from the kernel's lifetime counters (ipsec_sa_packets_total); the 20 busiest SAs.",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{Expr: top(`sum by (` + saBy + `) (` + saRate("ipsec_sa_packets_total", peerSel) + `)`), Legend: saLegend}},
			},
			{
				Title:       "Bytes per SA",
				Description: "Bytes each SA protected or accepted (ipsec_sa_bytes_total); the 20 busiest SAs.",
				Unit:        "Bps", Min: f(0),
				Targets: []Target{{Expr: top(`sum by (` + saBy + `) (` + saRate("ipsec_sa_bytes_total", peerSel) + `)`), Legend: saLegend}},
			},
		}},
		{Title: "Lifetime", Panels: []Panel{
			{
				Title: "Lifetime used per SA",
				Description: "Share of each SA's soft and hard lifetime already used: the largest of time, bytes and packets against their limits (ipsec_sa_lifetime_used_ratio), the 20 SAs nearest a limit. " +
					"At 1 (soft) the kernel asks IKE to rekey; at 1 (hard) it deletes the SA. Orange from 90%, red at the limit. SAs without limits have no series.",
				Unit: "percentunit", Width: 8, Min: f(0), Max: f(1), Thresholds: steps(good, 0.9, warning, 1.0, bad), ShowThresholds: "line+area",
				Targets: []Target{{Expr: top(`max by (` + saBy + `, limit) (ipsec_sa_lifetime_used_ratio{` + peerSel + `})`), Legend: saLegend + " {{limit}}"}},
			},
			{
				Title: "Sequence number space used per SA",
				Description: "Share of the sequence number space each SA has used (ipsec_sa_sequence_used_ratio), the 20 highest. An outbound SA at 1 drops every packet (seq_overflow) until rekeyed; " +
					"above a few percent an hour, use extended sequence numbers (ESN). Orange from half, red from 90%.",
				Unit: "percentunit", Width: 8, Min: f(0), Thresholds: steps(good, 0.5, warning, 0.9, bad), ShowThresholds: "line+area",
				Targets: []Target{{Expr: top(`max by (` + saBy + `) (ipsec_sa_sequence_used_ratio{` + peerSel + `})`), Legend: saLegend}},
			},
			{
				Type:  "table",
				Title: "SAs nearest their hard expiry",
				Description: "The 20 SAs with the least time left before their hard time limit (ipsec_sa_expiry_timestamp_seconds{limit=\"hard\"} minus now). " +
					"Red below IpsecSANearHardExpiry's headroom (3 minutes by default), orange below twice it.",
				Unit: "s", Width: 8, Thresholds: steps(bad, expiryHeadroom, warning, 2*expiryHeadroom, good),
				Targets: []Target{{
					Expr:    bottom(`min by (` + saBy + `) (ipsec_sa_expiry_timestamp_seconds{` + peerSel + `, limit="hard"}) - time()`),
					Instant: true,
				}},
			},
		}},
		{Title: "Failures per SA", Panels: []Panel{
			{
				Title: "Replay failures per SA",
				Description: "Inbound packets each SA dropped in its anti-replay check, by reason: duplicate (a sequence number seen before) or outside_window (older than the replay window) " +
					"(ipsec_sa_replay_failures_total), the 20 highest. Bursts after a path change are reordering; a steady rate is a too small window or a real replay.",
				Unit: "pps", Min: f(0),
				Targets: []Target{{Expr: top(`sum by (` + saBy + `, reason) (` + saRate("ipsec_sa_replay_failures_total", peerSel) + `)`), Legend: saLegend + " {{reason}}"}},
			},
			{
				Title: "Integrity failures per SA",
				Description: "Inbound packets each SA dropped because the ICV did not verify (ipsec_sa_integrity_failures_total), the 20 highest: " +
					"a key mismatch after a botched rekey, or corruption on the path.",
				Unit: "pps", Min: f(0),
				Targets: []Target{{Expr: top(`sum by (` + saBy + `) (` + saRate("ipsec_sa_integrity_failures_total", peerSel) + `)`), Legend: saLegend}},
			},
		}},
		{Title: "Kernel XFRM counters", Panels: []Panel{
			{
				Title: "XFRM error counters per namespace",
				Description: "The kernel's /proc/net/xfrm_stat counters per network namespace (ipsec_xfrm_stat_errors_total), each a count of dropped packets, the 20 highest; " +
					"docs/runbook.md maps them to causes. Counters that never moved are flat at zero.",
				Unit: "pps", Width: 24, Min: f(0),
				Targets: []Target{{Expr: top(`sum by (instance, netns, counter) (` + saRate("ipsec_xfrm_stat_errors_total", nsSel) + `)`), Legend: "{{instance}} {{netns}} {{counter}}"}},
			},
		}},
	},
}
