package dashboards

// saLegend names one SA in legends: node, namespace, direction, peer, SPI.
const saLegend = "{{instance}} {{netns}} {{direction}} {{peer}} spi {{spi}}"

// saBy groups per-SA series by what identifies an SA.
const saBy = "instance, netns, direction, peer, spi"

// SADetail answers "which SA is in trouble, and how close is it to its
// end?": per-SA rates, lifetime, failures, rekeys and the kernel's own
// XFRM error counters.
var SADetail = Dashboard{
	File:  "sa-detail.json",
	UID:   "ipsec-exporter-sa-detail",
	Title: "IPsec / SA detail",
	Description: "Per security association: traffic, lifetime used, SAs near expiry, replay and integrity failures, " +
		"rekey events, and the kernel's XFRM error counters per network namespace, from ipsec_exporter.",
	Rows: []Row{
		{Title: "Security associations", Panels: []Panel{
			{
				Title:       "SAs per peer",
				Description: "SAs each node has with each peer and direction now (ipsec_peer_sas). A peer dropping to zero is a tunnel down (IpsecPeerSAsGone); two per direction for a moment is a rekey.",
				Unit:        "none", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, netns, peer, direction) (ipsec_peer_sas{` + sel + `})`, Legend: "{{instance}} {{netns}} {{direction}} {{peer}}"}},
			},
			{
				Title:       "SAs and policies by direction",
				Description: "SAs (ipsec_sas) and IPsec policies (ipsec_policies) in each namespace by direction.",
				Unit:        "none", Width: 8, Min: f(0),
				Targets: []Target{
					{Expr: `sum by (instance, netns, direction) (ipsec_sas{` + sel + `})`, Legend: "{{instance}} {{netns}} SAs {{direction}}"},
					{Expr: `sum by (instance, netns, direction) (ipsec_policies{` + sel + `})`, Legend: "{{instance}} {{netns}} policies {{direction}}"},
				},
			},
			{
				Title: "SA lifecycle events",
				Description: "SAs added, updated, deleted and expired (soft: rekey due; hard: removed by its lifetime) and acquires (traffic waiting for IKE), " +
					"as the kernel announced them over netlink (ipsec_xfrm_events_total). A steady high rate of sa_added is a rekey storm (IpsecRekeyStorm).",
				Unit: "none", Width: 8, Min: f(0), Stack: true,
				Targets: []Target{{Expr: `sum by (instance, netns, event) (increase(ipsec_xfrm_events_total{` + sel + `, event=~"sa_.*|acquire"}[$__rate_interval]))`, Legend: "{{instance}} {{netns}} {{event}}"}},
			},
		}},
		{Title: "Traffic per SA", Panels: []Panel{
			{
				Title:       "Packets per SA",
				Description: "Packets each SA protected (outbound) or accepted (inbound), from the kernel's lifetime counters (ipsec_sa_packets_total).",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{Expr: `sum by (` + saBy + `) (` + rate("ipsec_sa_packets_total", "") + `)`, Legend: saLegend}},
			},
			{
				Title:       "Bytes per SA",
				Description: "Bytes each SA protected or accepted (ipsec_sa_bytes_total).",
				Unit:        "Bps", Min: f(0),
				Targets: []Target{{Expr: `sum by (` + saBy + `) (` + rate("ipsec_sa_bytes_total", "") + `)`, Legend: saLegend}},
			},
		}},
		{Title: "Lifetime", Panels: []Panel{
			{
				Title: "Lifetime used per SA",
				Description: "Share of each SA's soft and hard lifetime already used: the largest of time, bytes and packets against their limits (ipsec_sa_lifetime_used_ratio). " +
					"At 1 (soft) the kernel asks IKE to rekey; at 1 (hard) it deletes the SA. SAs without limits have no series.",
				Unit: "percentunit", Width: 8, Min: f(0), Max: f(1),
				Targets: []Target{{Expr: `max by (` + saBy + `, limit) (ipsec_sa_lifetime_used_ratio{` + sel + `})`, Legend: saLegend + " {{limit}}"}},
			},
			{
				Title: "Sequence number space used per SA",
				Description: "Share of the sequence number space each SA has used (ipsec_sa_sequence_used_ratio). An outbound SA at 1 drops every packet (seq_overflow) until rekeyed; " +
					"above a few percent an hour, use extended sequence numbers (ESN).",
				Unit: "percentunit", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `max by (` + saBy + `) (ipsec_sa_sequence_used_ratio{` + sel + `})`, Legend: saLegend}},
			},
			{
				Type:  "table",
				Title: "SAs nearest their hard expiry",
				Description: "The 20 SAs with the least time left before their hard time limit (ipsec_sa_expiry_timestamp_seconds{limit=\"hard\"} minus now). " +
					"IpsecSANearHardExpiry fires below its threshold (3 minutes by default).",
				Unit: "s", Width: 8,
				Targets: []Target{{
					Expr:    `bottomk(20, min by (` + saBy + `) (ipsec_sa_expiry_timestamp_seconds{` + sel + `, limit="hard"}) - time())`,
					Instant: true,
				}},
			},
		}},
		{Title: "Failures per SA", Panels: []Panel{
			{
				Title: "Replay failures per SA",
				Description: "Inbound packets each SA dropped in its anti-replay check, by reason: duplicate (a sequence number seen before) or outside_window (older than the replay window) " +
					"(ipsec_sa_replay_failures_total). Bursts after a path change are reordering; a steady rate is a too small window or a real replay.",
				Unit: "pps", Min: f(0),
				Targets: []Target{{Expr: `sum by (` + saBy + `, reason) (` + rate("ipsec_sa_replay_failures_total", "") + `)`, Legend: saLegend + " {{reason}}"}},
			},
			{
				Title:       "Integrity failures per SA",
				Description: "Inbound packets each SA dropped because the ICV did not verify (ipsec_sa_integrity_failures_total): a key mismatch after a botched rekey, or corruption on the path.",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{Expr: `sum by (` + saBy + `) (` + rate("ipsec_sa_integrity_failures_total", "") + `)`, Legend: saLegend}},
			},
		}},
		{Title: "Kernel XFRM counters", Panels: []Panel{
			{
				Title: "XFRM error counters per namespace",
				Description: "The kernel's /proc/net/xfrm_stat counters per network namespace (ipsec_xfrm_stat_errors_total), each a count of dropped packets; " +
					"docs/runbook.md maps them to causes. Counters that never moved are flat at zero.",
				Unit: "pps", Width: 24, Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, netns, counter) (` + rate("ipsec_xfrm_stat_errors_total", "") + `)`, Legend: "{{instance}} {{netns}} {{counter}}"}},
			},
		}},
	},
}
