package rules

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	alertName  = regexp.MustCompile(`^Ipsec[A-Z][A-Za-z0-9]*$`)
	recordName = regexp.MustCompile(`^[a-z_]+:[a-z_]+:[a-z_0-9]+$`)
	severities = map[string]bool{"critical": true, "warning": true, "info": true}
)

func loadShipped(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAlertConventions: CamelCase names with the Ipsec prefix, a severity,
// a fixed summary, a templated description and a runbook_url whose anchor
// exists in docs/runbook.md.
func TestAlertConventions(t *testing.T) {
	runbook, err := os.ReadFile("../../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, g := range loadShipped(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				if !recordName.MatchString(r.Record) {
					t.Errorf("recording rule %s is not named level:metric:operation", r.Record)
				}
				continue
			}
			alerts++
			if !alertName.MatchString(r.Alert) {
				t.Errorf("alert %q is not CamelCase with the Ipsec prefix", r.Alert)
			}
			if !severities[r.Labels["severity"]] {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			if s := r.Annotations["summary"]; s == "" || strings.Contains(s, "{{") {
				t.Errorf("%s: summary must be fixed text, is %q", r.Alert, s)
			}
			if d := r.Annotations["description"]; !strings.Contains(d, "{{") {
				t.Errorf("%s: description must be templated (labels, value), is %q", r.Alert, d)
			}
			want := Default.RunbookURL + "#" + strings.ToLower(r.Alert)
			if r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !strings.Contains(string(runbook), "\n## "+r.Alert+"\n") {
				t.Errorf("%s: docs/runbook.md has no section \"## %s\"", r.Alert, r.Alert)
			}
			if r.For == "" {
				t.Errorf("%s: no for: duration", r.Alert)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alerts")
	}
}

// TestEveryRuleIsUnitTested: each alert has a promtool test case where it
// fires and one where it does not, and each recording rule is evaluated by
// a promql_expr_test.
func TestEveryRuleIsUnitTested(t *testing.T) {
	files, err := filepath.Glob("../../examples/prometheus/tests/*.yml")
	if err != nil {
		t.Fatal(err)
	}
	fires, silent, recorded := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var tf struct {
			Tests []struct {
				AlertRuleTests []struct {
					Alertname string `yaml:"alertname"`
					ExpAlerts []any  `yaml:"exp_alerts"`
				} `yaml:"alert_rule_test"`
				PromQLExprTests []struct {
					Expr string `yaml:"expr"`
				} `yaml:"promql_expr_test"`
			} `yaml:"tests"`
		}
		if err := yaml.Unmarshal(b, &tf); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, tc := range tf.Tests {
			for _, a := range tc.AlertRuleTests {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					silent[a.Alertname] = true
				}
			}
			for _, e := range tc.PromQLExprTests {
				for _, word := range regexp.MustCompile(`[a-z_]+:[a-z_]+:[a-z_0-9]+`).FindAllString(e.Expr, -1) {
					recorded[word] = true
				}
			}
		}
	}
	for _, g := range loadShipped(t).Groups {
		for _, r := range g.Rules {
			switch {
			case r.Record != "" && !recorded[r.Record]:
				t.Errorf("recording rule %s has no promql_expr_test", r.Record)
			case r.Alert != "" && !fires[r.Alert]:
				t.Errorf("alert %s has no test where it fires", r.Alert)
			case r.Alert != "" && !silent[r.Alert]:
				t.Errorf("alert %s has no test where it stays silent", r.Alert)
			}
		}
	}
}
