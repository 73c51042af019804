// Package rules renders the Prometheus recording and alerting rules shipped
// in examples/prometheus/rules.yml from one template and one set of
// settings, in the spirit of a monitoring mixin's config: selectors and
// thresholds live here, named and explained, not as numbers scattered
// through expressions. Tests render the same template with short windows to
// run the alerts against a real Prometheus in seconds.
package rules

// Settings are the knobs of the shipped rules. Default holds the values in
// the committed rules.yml; change them there (and re-run
// `go test ./rules -update` in dashboards/) rather than editing the YAML.
type Settings struct {
	// Name says in the rendered file's header which settings made it.
	Name string
	// Selector picks the exporter's series in every rule: the label matchers
	// of the scrape job that scrapes ipsec_exporter.
	Selector string
	// InstanceLabels are the labels that name one exporter (one node). The
	// `node` label is what the Kubernetes example's relabeling adds; where it
	// does not exist, grouping by it is harmless.
	InstanceLabels string
	// RateWindow is the range of every rate() in the rules. Keep it at four
	// scrape intervals or more.
	RateWindow string
	// EvaluationInterval of the rule groups; empty uses Prometheus' global
	// evaluation_interval.
	EvaluationInterval string

	// DecryptFailureRatio: share of a peer's inbound ESP packets that fail to
	// decrypt (integrity, replay, no state, ...) above which
	// IpsecDecryptFailures fires. A healthy tunnel has none; a few replays
	// from reordering are normal on lossy paths, hence not zero.
	DecryptFailureRatio float64
	// DecryptFailureMinRate (failed packets per second) keeps a handful of
	// failures on an almost idle tunnel from alerting.
	DecryptFailureMinRate float64
	DecryptFailureFor     string

	// EncryptFailureRatio and EncryptFailureMinRate are the same for
	// outbound packets that the kernel failed to encrypt or send.
	EncryptFailureRatio   float64
	EncryptFailureMinRate float64
	EncryptFailureFor     string

	// UnprotectedMinRate (packets per second) of plaintext traffic to an
	// address that is an IPsec peer above which IpsecUnprotectedTrafficToPeer
	// fires. Any sustained plaintext to a peer is a leak, so this is 0.
	UnprotectedMinRate float64
	UnprotectedFor     string

	// SAGoneLookback: a peer that had SAs at any time in this window and has
	// none now fires IpsecPeerSAsGone.
	SAGoneLookback string
	SAGoneFor      string

	// SAExpiryHeadroomSeconds: an SA this close to its hard time limit
	// fires IpsecSANearHardExpiry. IKE daemons rekey at the soft limit, at
	// least several minutes before the hard one (strongSwan: 6-12 minutes
	// with its defaults, Libreswan: 9 or more), and delete the old SA
	// seconds later; an SA still there this close to the end means the
	// rekey failed.
	SAExpiryHeadroomSeconds float64
	SAExpiryFor             string

	// RekeyStormPerSA: SAs added in a namespace during RekeyStormWindow per
	// SA it has, above which IpsecRekeyStorm fires. Normal rekeying replaces
	// each SA once per lifetime (an hour or more), well under 1 per 10
	// minutes; 2 means lifetimes of 5 minutes or an IKE daemon looping.
	// RekeyStormMinEvents keeps a single tunnel's one rekey from counting.
	RekeyStormPerSA     float64
	RekeyStormMinEvents float64
	RekeyStormWindow    string
	RekeyStormFor       string

	// TunnelDownFor: how long a configured site-to-site connection of the
	// IKE daemon (vici collector) may have no installed child SA before
	// IpsecTunnelDown fires. Responder-only connections (remote %any or a
	// subnet) are left out: they are down whenever no client is connected.
	TunnelDownFor string
	// IKEDaemonDownFor: how long the IKE daemon may stay unreachable on its
	// VICI socket before IpsecIKEDaemonUnreachable fires.
	IKEDaemonDownFor string

	// BPFNotAttachedFor: how long a verdict program may stay detached.
	BPFNotAttachedFor string
	// ExporterDownFor: how long a target may fail its scrape.
	ExporterDownFor string
	// CollectorFailingFor: how long a collector may keep failing.
	CollectorFailingFor string

	// RunbookURL is the base of every runbook_url; each alert appends its
	// anchor (#ipsecdecryptfailures, ...).
	RunbookURL string
}

// Default is what examples/prometheus/rules.yml is rendered from.
var Default = Settings{
	Name:               "rules.Default",
	Selector:           `job="ipsec"`,
	InstanceLabels:     "job, node, instance",
	RateWindow:         "5m",
	EvaluationInterval: "",

	DecryptFailureRatio:   0.01,
	DecryptFailureMinRate: 0.1,
	DecryptFailureFor:     "5m",

	EncryptFailureRatio:   0.01,
	EncryptFailureMinRate: 0.1,
	EncryptFailureFor:     "5m",

	UnprotectedMinRate: 0,
	UnprotectedFor:     "5m",

	SAGoneLookback: "1h",
	SAGoneFor:      "5m",

	SAExpiryHeadroomSeconds: 180,
	SAExpiryFor:             "1m",

	RekeyStormPerSA:     2,
	RekeyStormMinEvents: 10,
	RekeyStormWindow:    "10m",
	RekeyStormFor:       "5m",

	TunnelDownFor:    "5m",
	IKEDaemonDownFor: "5m",

	BPFNotAttachedFor:   "10m",
	ExporterDownFor:     "5m",
	CollectorFailingFor: "15m",

	RunbookURL: "https://github.com/ipsec-exporter/ipsec_exporter/blob/main/docs/runbook.md",
}

// Lab is what examples/prometheus/rules-lab.yml is rendered from: the
// Prometheus that `make lab` starts (prometheus-lab.yml, a 10 s scrape
// interval) uses it so that the lab's provoked faults fire their alerts
// within about two minutes of `make lab` instead of ten. Only windows and
// for: durations differ from Default; every threshold is the shipped one
// (TestLabSettingsKeepThresholds), so what fires in the lab fires the same
// way in production, only later.
var Lab = func() Settings {
	s := Default
	s.Name = "rules.Lab"
	// Twelve scrapes of the lab's 10 s interval: under emulation on a busy
	// machine a scrape can take several seconds, and a window with fewer
	// than two samples empties the rates the alerts read.
	s.RateWindow = "2m"
	// The four alerts the lab's faults are there to fire.
	s.DecryptFailureFor = "30s"
	s.EncryptFailureFor = "30s"
	s.UnprotectedFor = "30s"
	s.SAExpiryFor = "30s"
	// The others keep their shipped windows: IpsecExporterDown would fire
	// while the VM boots, IpsecPeerSAsGone and IpsecRekeyStorm on the lab's
	// expiry cycle, which deletes a pair's SAs and brings new ones every
	// 50 s on purpose.
	return s
}()
