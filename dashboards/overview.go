package dashboards

// rate is the rate of a counter over Grafana's $__rate_interval, which
// follows the scrape interval of the datasource.
func rate(metric, extra string) string {
	m := sel
	if extra != "" {
		m += ", " + extra
	}
	return "rate(" + metric + "{" + m + "}[$__rate_interval])"
}

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
					"among all IP traffic the wire collector classifies (recording rule job:ipsec_wire_bytes_encrypted:ratio_rate).",
				Unit: "percentunit", Width: 6, Min: f(0), Max: f(1),
				Targets: []Target{{Expr: `job:ipsec_wire_bytes_encrypted:ratio_rate{job=~"$job"}`, Legend: "{{job}}"}},
			},
			{
				Title: "Encrypted share of traffic per node",
				Description: "Share of each node's wire bytes that is ESP or ESP-in-UDP " +
					"(recording rule instance:ipsec_wire_bytes_encrypted:ratio_rate). A drop means more plaintext or IKE, or less IPsec.",
				Unit: "percentunit", Width: 18, Min: f(0), Max: f(1),
				Targets: []Target{{Expr: `instance:ipsec_wire_bytes_encrypted:ratio_rate{` + sel + `}`, Legend: "{{instance}}"}},
			},
		}},
		{Title: "Traffic per peer", Panels: []Panel{
			{
				Title:       "Encrypted packets per peer",
				Description: "Outbound packets the kernel encrypted successfully, per peer (ipsec_xfrm_packets_total, direction=encrypt, result=ok).",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{
					Expr:   `sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_packets_total", `direction="encrypt", result="ok"`) + `)`,
					Legend: "{{instance}} → {{peer}} {{peer_name}}",
				}},
			},
			{
				Title:       "Decrypted packets per peer",
				Description: "Inbound packets the kernel decrypted successfully, per peer (ipsec_xfrm_packets_total, direction=decrypt, result=ok).",
				Unit:        "pps", Min: f(0),
				Targets: []Target{{
					Expr:   `sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_packets_total", `direction="decrypt", result="ok"`) + `)`,
					Legend: "{{instance}} ← {{peer}} {{peer_name}}",
				}},
			},
			{
				Title:       "Encrypted bytes per peer",
				Description: "Bytes of successfully encrypted outbound packets per peer (ipsec_xfrm_bytes_total, direction=encrypt, result=ok).",
				Unit:        "Bps", Min: f(0),
				Targets: []Target{{
					Expr:   `sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_bytes_total", `direction="encrypt", result="ok"`) + `)`,
					Legend: "{{instance}} → {{peer}} {{peer_name}}",
				}},
			},
			{
				Title:       "Decrypted bytes per peer",
				Description: "Bytes of successfully decrypted inbound packets per peer (ipsec_xfrm_bytes_total, direction=decrypt, result=ok).",
				Unit:        "Bps", Min: f(0),
				Targets: []Target{{
					Expr:   `sum by (instance, peer, peer_name) (` + rate("ipsec_xfrm_bytes_total", `direction="decrypt", result="ok"`) + `)`,
					Legend: "{{instance}} ← {{peer}} {{peer_name}}",
				}},
			},
		}},
		{Title: "Failures", Panels: []Panel{
			{
				Title: "Failure ratio per direction",
				Description: "Share of packets that failed to encrypt or decrypt, per node and direction " +
					"(recording rule instance_direction:ipsec_xfrm_packets_failed:ratio_rate). IpsecDecryptFailures and IpsecEncryptFailures alert on the per-peer ratio.",
				Unit: "percentunit", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `instance_direction:ipsec_xfrm_packets_failed:ratio_rate{` + sel + `}`, Legend: "{{instance}} {{direction}}"}},
			},
			{
				Title: "Failure ratio per peer",
				Description: "Share of packets to (encrypt) or from (decrypt) each peer that failed " +
					"(recording rule instance_peer_direction:ipsec_xfrm_packets_failed:ratio_rate), what IpsecDecryptFailures compares with its threshold.",
				Unit: "percentunit", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `instance_peer_direction:ipsec_xfrm_packets_failed:ratio_rate{` + sel + `}`, Legend: "{{instance}} {{direction}} {{peer}} {{peer_name}}"}},
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
					"traffic that should be protected and is not (ipsec_wire_unprotected_packets_total). IpsecUnprotectedTrafficToPeer alerts on it.",
				Unit: "pps", Min: f(0),
				Targets: []Target{{
					Expr:   `sum by (instance, peer, direction) (` + rate("ipsec_wire_unprotected_packets_total", "") + `)`,
					Legend: "{{instance}} {{direction}} {{peer}}",
				}},
			},
			{
				Title:       "Wire traffic by class",
				Description: "Bytes on the wire per class (esp, esp_in_udp, ike, plaintext, ...), summed over the watched interfaces (ipsec_wire_bytes_total).",
				Unit:        "Bps", Min: f(0), Stack: true,
				Targets: []Target{{
					Expr:   `sum by (instance, class) (` + rate("ipsec_wire_bytes_total", "") + `)`,
					Legend: "{{instance}} {{class}}",
				}},
			},
		}},
		{Title: "IKE (strongSwan, vici collector)", Panels: []Panel{
			{
				Title: "Installed child SAs per configured connection",
				Description: "Child SAs in state INSTALLED per configured connection and child (ipsec_ike_connection_children_installed, --collector.vici). " +
					"0 for a site-to-site connection is a tunnel down: IpsecTunnelDown. Road-warrior responders (remote %any) are 0 while no client is connected.",
				Unit: "none", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `ipsec_ike_connection_children_installed{` + sel + `}`, Legend: "{{instance}} {{connection}}/{{child}}"}},
			},
			{
				Title:       "IKE SAs by state",
				Description: "IKE SAs per connection and state (ipsec_ike_sa_info): ESTABLISHED is up; CONNECTING for long means the peer does not answer or rejects the proposal or credentials.",
				Unit:        "none", Width: 8, Min: f(0), Stack: true,
				Targets: []Target{{Expr: `count by (instance, connection, state) (ipsec_ike_sa_info{` + sel + `})`, Legend: "{{instance}} {{connection}} {{state}}"}},
			},
			{
				Title:       "Time to the next child SA rekey",
				Description: "Seconds until the daemon rekeys each connection's child SAs (ipsec_ike_child_sa_rekey_timestamp_seconds); a value that goes negative means a rekey is overdue.",
				Unit:        "s", Width: 8,
				Targets: []Target{{Expr: `min by (instance, connection, child) (ipsec_ike_child_sa_rekey_timestamp_seconds{` + sel + `}) - time()`, Legend: "{{instance}} {{connection}}/{{child}}"}},
			},
			{
				Title: "Bytes per configured connection",
				Description: "The kernel's SA byte counters (ipsec_sa_bytes_total, sa collector) joined to the daemon's child SAs by SPI and direction " +
					"(ipsec_ike_child_sa_info): the traffic of each configured connection, as the kernel counted it.",
				Unit: "Bps", Width: 16, Min: f(0),
				Targets: []Target{{
					Expr: `sum by (instance, connection, direction) (` + rate("ipsec_sa_bytes_total", "") +
						` * on (job, instance, spi, direction) group_left (connection) ipsec_ike_child_sa_info{` + sel + `})`,
					Legend: "{{instance}} {{connection}} {{direction}}",
				}},
			},
			{
				Type:        "stat",
				Title:       "IKE daemons answering",
				Description: "Nodes whose strongSwan answers on its VICI socket (ipsec_ike_daemon_up) out of those with the vici collector; IpsecIKEDaemonUnreachable fires for one that does not.",
				Unit:        "none", Width: 8,
				Targets: []Target{{Expr: `sum(ipsec_ike_daemon_up{` + sel + `})`, Legend: "answering"}},
			},
		}},
		{Title: "Exporter health", Panels: []Panel{
			{
				Type:        "stat",
				Title:       "Exporters up",
				Description: "Number of ipsec_exporter targets Prometheus scraped successfully (up == 1) out of those selected. IpsecExporterDown fires for each one that is down.",
				Unit:        "none", Width: 4,
				Targets: []Target{{Expr: `sum(up{` + sel + `})`, Legend: "up"}},
			},
			{
				Type:        "stat",
				Title:       "Verdict programs attached",
				Description: "eBPF programs of the verdict collector attached on the selected nodes (ipsec_bpf_verdict_programs_attached). Zero on a node means its encrypt and decrypt verdicts are not measured; see IpsecBPFProgramsNotAttached.",
				Unit:        "none", Width: 4,
				Targets: []Target{{Expr: `sum(ipsec_bpf_verdict_programs_attached{` + sel + `})`, Legend: "attached"}},
			},
			{
				Title:       "Collector success",
				Description: "Whether each collector succeeded (1) or failed (0) in the last scrape (ipsec_scrape_collector_success). The exporter's log says why one fails.",
				Unit:        "bool", Width: 8, Min: f(0), Max: f(1),
				Targets: []Target{{Expr: `ipsec_scrape_collector_success{` + sel + `}`, Legend: "{{instance}} {{collector}}"}},
			},
			{
				Title:       "Collector scrape duration",
				Description: "How long each collector took in the last scrape (ipsec_scrape_collector_duration_seconds).",
				Unit:        "s", Width: 8, Min: f(0),
				Targets: []Target{{Expr: `ipsec_scrape_collector_duration_seconds{` + sel + `}`, Legend: "{{instance}} {{collector}}"}},
			},
		}},
	},
}
