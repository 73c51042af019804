package dashboards

import (
	"math"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/dashboards/rules"
)

// colorOf is the colour Grafana gives value v under the panel's
// thresholds, as the JSON says: the last step whose value is at most v
// (the first step, value null, starts at minus infinity). Without
// thresholds Grafana applies its defaults: green, red from 80.
func colorOf(p grafanaPanel, v float64) string {
	th := p.FieldConfig.Defaults.Thresholds
	if th == nil {
		if v >= 80 {
			return "red"
		}
		return "green"
	}
	color := ""
	for _, s := range th.Steps {
		from := math.Inf(-1)
		if s.Value != nil {
			from = *s.Value
		}
		if v >= from {
			color = s.Color
		}
	}
	return color
}

func panelByTitle(t *testing.T, file, title string) grafanaPanel {
	t.Helper()
	for _, p := range loadDashboard(t, file).Panels {
		if p.Title == title {
			return p
		}
	}
	t.Fatalf("%s has no panel %q", file, title)
	return grafanaPanel{}
}

// TestColorsMeanSomething reads the shipped JSON as Grafana would and
// checks the colours of the values that matter: nothing encrypted and no
// exporter up are red, a failure ratio is red from the alerts' threshold,
// an SA is red below the expiry alert's headroom.
func TestColorsMeanSomething(t *testing.T) {
	for _, c := range []struct {
		file, panel string
		value       float64
		want        string
	}{
		{"overview.json", "Encrypted share of traffic (cluster)", 0, "red"},
		{"overview.json", "Encrypted share of traffic (cluster)", 0.3, "orange"},
		{"overview.json", "Encrypted share of traffic (cluster)", 1, "green"},
		{"overview.json", "Encrypted share of traffic per node (the 20 lowest)", 0, "red"},
		{"overview.json", "Exporters up", 0, "red"},
		{"overview.json", "Exporters up", 3, "green"},
		{"overview.json", "Exporters down", 0, "green"},
		{"overview.json", "Exporters down", 1, "red"},
		{"overview.json", "Nodes without verdict programs", 0, "green"},
		{"overview.json", "Nodes without verdict programs", 2, "red"},
		{"overview.json", "Nodes without the wire program", 1, "red"},
		{"overview.json", "Failure ratio per peer", 0, "green"},
		{"overview.json", "Failure ratio per peer", rules.Default.DecryptFailureRatio * 0.9, "green"},
		{"overview.json", "Failure ratio per peer", rules.Default.DecryptFailureRatio, "red"},
		{"overview.json", "Failure ratio per direction", rules.Default.EncryptFailureRatio, "red"},
		{"overview.json", "Collector success (worst node)", 0, "red"},
		{"overview.json", "Collector success (worst node)", 1, "green"},
		{"sa-detail.json", "SAs per peer (the 20 with fewest)", 0, "red"},
		{"sa-detail.json", "SAs per peer (the 20 with fewest)", 1, "green"},
		{"sa-detail.json", "SAs nearest their hard expiry", rules.Default.SAExpiryHeadroomSeconds - 1, "red"},
		{"sa-detail.json", "SAs nearest their hard expiry", 3600, "green"},
		{"sa-detail.json", "Lifetime used per SA", 0.5, "green"},
		{"sa-detail.json", "Lifetime used per SA", 1, "red"},
	} {
		p := panelByTitle(t, c.file, c.panel)
		if got := colorOf(p, c.value); got != c.want {
			t.Errorf("%s %q: %v shows %s, want %s", c.file, c.panel, c.value, got, c.want)
		}
	}
}

// TestStatsAndTablesColorByThresholds: every stat and table colours its
// values by thresholds of its own, never Grafana's defaults (which show 0
// in green).
func TestStatsAndTablesColorByThresholds(t *testing.T) {
	for _, d := range all {
		for _, p := range loadDashboard(t, d.File).Panels {
			if p.Type != "stat" && p.Type != "table" {
				continue
			}
			th := p.FieldConfig.Defaults.Thresholds
			if th == nil || len(th.Steps) < 2 || th.Steps[0].Value != nil {
				t.Errorf("%s %q: no thresholds of its own (a base step and at least one more)", d.File, p.Title)
			}
			if p.FieldConfig.Defaults.Color.Mode != "thresholds" {
				t.Errorf("%s %q: colour mode %q, want thresholds", d.File, p.Title, p.FieldConfig.Defaults.Color.Mode)
			}
		}
	}
}
