package dashboards

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
				Title:       "SAs by direction",
				Description: "Number of SAs in the kernel's SAD per node and direction (ipsec_sas). A rekey briefly shows old and new SA side by side.",
				Unit:        "none", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, direction) (ipsec_sas{` + sel + `})`, Legend: "{{instance}} {{direction}}"}},
			},
			{
				Title:       "Policies by direction",
				Description: "Number of IPsec policies in the kernel's SPD per node and direction (ipsec_policies).",
				Unit:        "none", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, direction) (ipsec_policies{` + sel + `})`, Legend: "{{instance}} {{direction}}"}},
			},
			{
				Title:       "SA lifecycle events",
				Description: "SAs added, expired and deleted as the kernel announced them over netlink (ipsec_xfrm_events_total). A steady high rate is a rekey storm (IpsecRekeyStorm).",
				Unit:        "none", Width: 8, Min: f(0), Stack: true,
				Targets: []Target{{Expr: `sum by (instance, event) (increase(ipsec_xfrm_events_total{` + sel + `}[$__rate_interval]))`, Legend: "{{instance}} {{event}}"}},
			},
		}},
		{Title: "Traffic per SA", Panels: []Panel{
			{
				Title:       "Packets per SA",
				Description: "Packets through each SA as the kernel counts them in the SA's lifetime counters (ipsec_sa_packets_total).",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, src, dst, spi) (` + rate("ipsec_sa_packets_total", "") + `)`, Legend: "{{instance}} {{src}} → {{dst}} spi {{spi}}"}},
			},
			{
				Title:       "Bytes per SA",
				Description: "Bytes through each SA (ipsec_sa_bytes_total).",
				Unit:        "Bps", Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, src, dst, spi) (` + rate("ipsec_sa_bytes_total", "") + `)`, Legend: "{{instance}} {{src}} → {{dst}} spi {{spi}}"}},
			},
		}},
		{Title: "Lifetime", Panels: []Panel{
			{
				Title: "Lifetime used per SA",
				Description: "Share of each SA's hard lifetime already used: the highest of time, bytes and packets against their hard limits " +
					"(recording rule sa:ipsec_sa_lifetime_used:ratio). Rekeying should happen at the soft limit, well before 1.",
				Unit: "percentunit", Min: f(0), Max: f(1),
				Targets: []Target{{Expr: `sa:ipsec_sa_lifetime_used:ratio{` + sel + `}`, Legend: "{{instance}} {{src}} → {{dst}} spi {{spi}}"}},
			},
			{
				Type:  "table",
				Title: "SAs nearest their hard expiry",
				Description: "The 20 SAs with the least time left before their hard time limit (ipsec_sa_hard_expiry_headroom_seconds). " +
					"IpsecSANearHardExpiry fires below its threshold (10 minutes by default).",
				Unit: "s",
				Targets: []Target{{
					Expr:    `bottomk(20, ipsec_sa_hard_expiry_headroom_seconds{` + sel + `})`,
					Instant: true,
				}},
			},
		}},
		{Title: "Failures per SA", Panels: []Panel{
			{
				Title:       "Replay failures per SA",
				Description: "Inbound packets each SA dropped as replayed or outside its replay window (ipsec_sa_replay_failures_total). Bursts after a path change are reordering; steady rates are a too small replay window or a real replay.",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, src, dst, spi) (` + rate("ipsec_sa_replay_failures_total", "") + `)`, Legend: "{{instance}} {{src}} → {{dst}} spi {{spi}}"}},
			},
			{
				Title:       "Integrity failures per SA",
				Description: "Inbound packets each SA dropped because the ICV did not verify (ipsec_sa_integrity_failures_total): a key mismatch after a botched rekey, or corruption on the path.",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, src, dst, spi) (` + rate("ipsec_sa_integrity_failures_total", "") + `)`, Legend: "{{instance}} {{src}} → {{dst}} spi {{spi}}"}},
			},
		}},
		{Title: "Kernel XFRM counters", Panels: []Panel{
			{
				Title: "XFRM error counters per namespace",
				Description: "The kernel's /proc/net/xfrm_stat counters per network namespace (ipsec_xfrm_stat_errors_total), every one a count of dropped packets. " +
					"docs/runbook.md says what each means.",
				Unit: "pps", Width: 24, Min: f(0),
				Targets: []Target{{Expr: `sum by (instance, netns, counter) (` + rate("ipsec_xfrm_stat_errors_total", "") + `)`, Legend: "{{instance}} {{netns}} {{counter}}"}},
			},
		}},
	},
}
