package dashboards

import "github.com/ipsec-exporter/ipsec_exporter/dashboards/rules"

// rate is the rate of a counter over Grafana's $__rate_interval, which
// follows the scrape interval of the datasource, with the job, node and
// instance variables and the extra matchers.
func rate(metric, extra string) string {
	return "rate(" + metric + "{" + matchers(sel, extra) + "}[$__rate_interval])"
}

func matchers(base, extra string) string {
	if extra == "" {
		return base
	}
	return base + ", " + extra
}

// Encrypted share thresholds. Below shareNone nothing is encrypted (red);
// below shareLow less than half is (orange). Per node and cluster-wide a
// gateway's share tops out near 0.5, since it counts forwarded traffic
// twice (plaintext in, ESP out): pick its uplinks with
// --collector.wire.interfaces for a share that can reach 1.
const (
	shareNone = 0.01
	shareLow  = 0.5
)

// failureRatio is where IpsecDecryptFailures and IpsecEncryptFailures fire:
// the failure ratio panels draw it.
var failureRatio = max(rules.Default.DecryptFailureRatio, rules.Default.EncryptFailureRatio)

// shareSteps colour an encrypted share; failureSteps a failure ratio.
var (
	shareSteps   = steps(bad, shareNone, warning, shareLow, good)
	failureSteps = steps(good, failureRatio, bad)
	// zeroIsBad: a count of exporters up, SAs of a peer.
	zeroIsBad = steps(bad, 1.0, good)
	// anyIsBad: a count of exporters down, nodes without programs.
	anyIsBad = steps(good, 1.0, bad)
)

// Overview answers "is my traffic encrypted, and is IPsec failing anywhere?"
var Overview = Dashboard{
	File:  "overview.json",
	UID:   "ipsec-exporter-overview",
	Title: "IPsec / Overview",
	Description: "Encrypted share of traffic, per-peer encrypt and decrypt rates, failures and their reasons, " +
		"plaintext to IPsec peers, and exporter health, from ipsec_exporter.",
	Rows: []Row{
		{Title: "Encryption coverage", Panels: []Panel{
			{
				Type:  "stat",
				Title: "Encrypted share of traffic (cluster)",
				Description: "Share of the bytes on the wire of all selected jobs that is ESP or ESP-in-UDP, " +
					"among all IP traffic the wire collector classifies (recording rule job:ipsec_wire_bytes_encrypted:ratio_rate). " +
					"Red: nothing encrypted (below 1%); orange: less than half; green: half or more (a gateway's maximum is about half, see the per-node panel).",
				Unit: "percentunit", Width: 6, Min: f(0), Max: f(1), Thresholds: shareSteps,
				Targets: []Target{{Expr: `job:ipsec_wire_bytes_encrypted:ratio_rate{job=~"$job"}`, Legend: "{{job}}"}},
			},
			{
				Title: "Encrypted share of traffic per node (the 20 lowest)",
				Description: "Share of each node's wire bytes that is ESP or ESP-in-UDP " +
					"(recording rule instance:ipsec_wire_bytes_encrypted:ratio_rate), for the 20 nodes with the lowest share. A drop means more plaintext or IKE, or less IPsec. " +
					"The bands are the cluster stat's colours; a gateway counts forwarded traffic twice (plaintext in, ESP out), so its share stays near half unless --collector.wire.interfaces picks its uplinks.",
				Unit: "percentunit", Width: 18, Min: f(0), Max: f(1), Thresholds: shareSteps, ShowThresholds: "area",
				Targets: []Target{{Expr: bottom(`instance:ipsec_wire_bytes_encrypted:ratio_rate{` + sel + `}`), Legend: "{{instance}}"}},
			},
		}},
		{Title: "Traffic per peer", Panels: []Panel{
			{
				Title:       "Encrypted packets per peer",
				Description: "Outbound packets the kernel encrypted successfully, per peer (ipsec_xfrm_packets_total, direction=encrypt, result=ok); the 20 busiest.",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{
					Expr:   top(`sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_packets_total", `direction="encrypt", result="ok"`) + `)`),
					Legend: "{{instance}} → {{peer}} {{peer_name}}",
				}},
			},
			{
				Title:       "Decrypted packets per peer",
				Description: "Inbound packets the kernel decrypted successfully, per peer (ipsec_xfrm_packets_total, direction=decrypt, result=ok); the 20 busiest.",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{
					Expr:   top(`sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_packets_total", `direction="decrypt", result="ok"`) + `)`),
					Legend: "{{instance}} ← {{peer}} {{peer_name}}",
				}},
			},
			{
				Title:       "Encrypted bytes per peer",
				Description: "Bytes of successfully encrypted outbound packets per peer (ipsec_xfrm_bytes_total, direction=encrypt, result=ok); the 20 busiest.",
				Unit:        "Bps", Min: f(0),
				Targets: []Target{{
					Expr:   top(`sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_bytes_total", `direction="encrypt", result="ok"`) + `)`),
					Legend: "{{instance}} → {{peer}} {{peer_name}}",
				}},
			},
			{
				Title:       "Decrypted bytes per peer",
				Description: "Bytes of successfully decrypted inbound packets per peer (ipsec_xfrm_bytes_total, direction=decrypt, result=ok); the 20 busiest.",
				Unit:        "Bps", Min: f(0),
				Targets: []Target{{
					Expr:   top(`sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_bytes_total", `direction="decrypt", result="ok"`) + `)`),
					Legend: "{{instance}} ← {{peer}} {{peer_name}}",
				}},
			},
		}},
		{Title: "Failures", Panels: []Panel{
			{
				Title: "Failure ratio per direction",
				Description: "Share of packets that failed to encrypt or decrypt, per node and direction " +
					"(recording rule instance_direction:ipsec_xfrm_packets_failed:ratio_rate), the 20 highest. Red above the alerts' threshold: IpsecDecryptFailures and IpsecEncryptFailures alert on the per-peer ratio.",
				Unit: "percentunit", Width: 8, Min: f(0), Thresholds: failureSteps, ShowThresholds: "line+area",
				Targets: []Target{{Expr: top(`instance_direction:ipsec_xfrm_packets_failed:ratio_rate{` + sel + `}`), Legend: "{{instance}} {{direction}}"}},
			},
			{
				Title: "Failure ratio per peer",
				Description: "Share of packets to (encrypt) or from (decrypt) each peer that failed " +
					"(recording rule instance_peer_direction:ipsec_xfrm_packets_failed:ratio_rate), the 20 highest. Red above the threshold IpsecDecryptFailures and IpsecEncryptFailures compare it with.",
				Unit: "percentunit", Width: 8, Min: f(0), Thresholds: failureSteps, ShowThresholds: "line+area",
				Targets: []Target{{Expr: top(`instance_peer_direction:ipsec_xfrm_packets_failed:ratio_rate{` + sel + `}`), Legend: "{{instance}} {{direction}} {{peer}} {{peer_name}}"}},
			},
			{
				Title: "Failures by reason",
				Description: "Packets that failed to encrypt or decrypt, by direction and reason (result label: integrity = wrong key or corruption, " +
					"replay = outside the replay window, no_state = no SA for the SPI, ...). See docs/runbook.md.",
				Unit: "pps", Width: 8, Min: f(0), Stack: true,
				Targets: []Target{{
					Expr:   `sum by (direction, result) (` + rate("ipsec_xfrm_packets_total", `result!="ok"`) + `)`,
					Legend: "{{direction}} {{result}}",
				}},
			},
		}},
		{Title: "Unprotected traffic", Panels: []Panel{
			{
				Title: "Plaintext packets to and from IPsec peers",
				Description: "Packets on the wire that are neither ESP nor IKE but go to or come from an address the kernel has SAs or policies for: " +
					"traffic that should be protected and is not (ipsec_wire_unprotected_packets_total), the 20 largest flows. Red, all of it: IpsecUnprotectedTrafficToPeer alerts on any.",
				Unit: "pps", Min: f(0), FixedColor: bad,
				Targets: []Target{{
					Expr:   top(`sum by (instance, netns, peer, direction) (` + rate("ipsec_wire_unprotected_packets_total", "") + `)`),
					Legend: "{{instance}} {{netns}} {{direction}} {{peer}}",
				}},
			},
			{
				Title: "Wire traffic by class",
				Description: "Bytes on the wire per class, summed over the watched interfaces (ipsec_wire_bytes_total), the 20 largest: " +
					"ESP and ESP-in-UDP green, plaintext orange, IKE blue.",
				Unit: "Bps", Min: f(0), Stack: true,
				SeriesColors: []SeriesColor{
					{Regexp: `/ (esp|esp_in_udp)$/`, Color: good},
					{Regexp: `/ plaintext$/`, Color: warning},
					{Regexp: `/ ike$/`, Color: neutral},
				},
				Targets: []Target{{
					Expr:   top(`sum by (instance, class) (` + rate("ipsec_wire_bytes_total", "") + `)`),
					Legend: "{{instance}} {{class}}",
				}},
			},
		}},
		{Title: "IKE (strongSwan, vici collector)", Panels: []Panel{
			{
				Title: "Installed child SAs per configured connection (the 20 fewest)",
				Description: "Child SAs in state INSTALLED per configured connection and child (ipsec_ike_connection_children_installed, --collector.vici). " +
					"0 for a site-to-site connection is a tunnel down: IpsecTunnelDown. Road-warrior responders (remote %any) are 0 while no client is connected. Red at 0; the 20 with fewest.",
				Unit: "none", Width: 8, Min: f(0), Thresholds: zeroIsBad, ColorByValue: true,
				Targets: []Target{{Expr: bottom(`ipsec_ike_connection_children_installed{` + sel + `}`), Legend: "{{instance}} {{connection}}/{{child}}"}},
			},
			{
				Title:       "IKE SAs by state",
				Description: "IKE SAs per connection and state (ipsec_ike_sa_info): ESTABLISHED is up; CONNECTING for long means the peer does not answer or rejects the proposal or credentials.",
				Unit:        "none", Width: 8, Min: f(0), Stack: true,
				Targets: []Target{{Expr: top(`count by (instance, connection, state) (ipsec_ike_sa_info{` + sel + `})`), Legend: "{{instance}} {{connection}} {{state}}"}},
			},
			{
				Title:       "Time to the next child SA rekey",
				Description: "Seconds until the daemon rekeys each connection's child SAs (ipsec_ike_child_sa_rekey_timestamp_seconds); a value that goes negative means a rekey is overdue.",
				Unit:        "s", Width: 8, Thresholds: steps(bad, 0.0, good), ColorByValue: true,
				Targets: []Target{{Expr: bottom(`min by (instance, connection, child) (ipsec_ike_child_sa_rekey_timestamp_seconds{` + sel + `}) - time()`), Legend: "{{instance}} {{connection}}/{{child}}"}},
			},
			{
				Title: "Bytes per configured connection",
				Description: "The kernel's SA byte counters (ipsec_sa_bytes_total, sa collector) joined to the daemon's child SAs by SPI and direction " +
					"(ipsec_ike_child_sa_info): the traffic of each configured connection, as the kernel counted it.",
				Unit: "Bps", Width: 16, Min: f(0),
				Targets: []Target{{
					Expr: top(`sum by (instance, connection, direction) (` + rate("ipsec_sa_bytes_total", "") +
						` * on (job, instance, spi, direction) group_left (connection) ipsec_ike_child_sa_info{` + sel + `})`),
					Legend: "{{instance}} {{connection}} {{direction}}",
				}},
			},
			{
				Type:        "stat",
				Title:       "IKE daemons answering",
				Description: "Nodes whose strongSwan answers on its VICI socket (ipsec_ike_daemon_up) out of those with the vici collector; IpsecIKEDaemonUnreachable fires for one that does not.",
				Unit:        "none", Width: 8, Thresholds: zeroIsBad,
				Targets: []Target{{Expr: `sum(ipsec_ike_daemon_up{` + sel + `})`, Legend: "answering"}},
			},
		}},
		{Title: "Exporter health", Panels: []Panel{
			{
				Type:        "stat",
				Title:       "Exporters up",
				Description: "Number of ipsec_exporter targets Prometheus scraped successfully (up == 1) among those selected. Red at 0: no node is watched.",
				Unit:        "none", Width: 3, Thresholds: zeroIsBad,
				Targets: []Target{{Expr: `sum(up{` + sel + `}) or vector(0)`, Legend: "up"}},
			},
			{
				Type:        "stat",
				Title:       "Exporters down",
				Description: "Number of selected ipsec_exporter targets Prometheus fails to scrape (up == 0). Red from 1: IpsecExporterDown fires for each one after its for: duration.",
				Unit:        "none", Width: 3, Thresholds: anyIsBad,
				Targets: []Target{{Expr: `count(up{` + sel + `} == 0) or vector(0)`, Legend: "down"}},
			},
			{
				Type:  "stat",
				Title: "Nodes without verdict programs",
				Description: "Selected nodes whose exporter has no verdict eBPF program attached (ipsec_bpf_verdict_programs_attached == 0): their encrypt and decrypt " +
					"verdicts are not measured. Red from 1; see IpsecBPFProgramsNotAttached.",
				Unit: "none", Width: 3, Thresholds: anyIsBad,
				Targets: []Target{{Expr: `count(ipsec_bpf_verdict_programs_attached{` + sel + `} == 0) or vector(0)`, Legend: "nodes"}},
			},
			{
				Type:  "stat",
				Title: "Nodes without the wire program",
				Description: "Selected nodes whose exporter could not load its wire TC program (ipsec_bpf_wire_program_loaded == 0): their encrypted share and " +
					"plaintext to peers are not measured. Red from 1; see IpsecBPFProgramsNotAttached.",
				Unit: "none", Width: 3, Thresholds: anyIsBad,
				Targets: []Target{{Expr: `count(ipsec_bpf_wire_program_loaded{` + sel + `} == 0) or vector(0)`, Legend: "nodes"}},
			},
			{
				Title: "Collector success (worst node)",
				Description: "Whether each collector succeeded (1, green) or failed (0, red) in the last scrape, on the worst of the selected nodes " +
					"(min of ipsec_scrape_collector_success). The exporter's log says why one fails; IpsecCollectorFailing fires when it keeps failing.",
				Unit: "bool", Width: 6, Min: f(0), Max: f(1), Thresholds: zeroIsBad, ColorByValue: true,
				Targets: []Target{{Expr: `min by (collector) (ipsec_scrape_collector_success{` + sel + `})`, Legend: "{{collector}}"}},
			},
			{
				Title:       "Collector scrape duration (slowest node)",
				Description: "How long each collector took in the last scrape, on the slowest of the selected nodes (max of ipsec_scrape_collector_duration_seconds).",
				Unit:        "s", Width: 6, Min: f(0),
				Targets: []Target{{Expr: `max by (collector) (ipsec_scrape_collector_duration_seconds{` + sel + `})`, Legend: "{{collector}}"}},
			},
		}},
	},
}
