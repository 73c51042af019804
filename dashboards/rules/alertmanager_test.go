package rules

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/lab/testtool"
)

const alertmanagerExample = "../../examples/alertmanager/alertmanager.yml"

// TestAlertmanagerExample checks the worked Alertmanager example with
// Debian's amtool and routes every shipped alert through it: the
// decrypt-failure alert and the critical ones reach the on-call receiver,
// the rest the team's channel.
func TestAlertmanagerExample(t *testing.T) {
	amtool := testtool.Find(t, "amtool", "prometheus-alertmanager")
	if amtool == "" {
		t.Skip("no amtool")
	}
	if out, err := exec.Command(amtool, "check-config", alertmanagerExample).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	for _, g := range loadShipped(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			severity := r.Labels["severity"]
			want := "network-team"
			if r.Alert == "IpsecDecryptFailures" || severity == "critical" {
				want = "ipsec-oncall"
			}
			out, err := exec.Command(amtool, "config", "routes", "test", "--config.file="+alertmanagerExample,
				"alertname="+r.Alert, "severity="+severity).Output()
			if err != nil {
				t.Fatalf("amtool config routes test %s: %v", r.Alert, err)
			}
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("%s (severity %s) routes to %q, want %q", r.Alert, severity, got, want)
			}
		}
	}
}
