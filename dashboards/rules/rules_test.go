package rules

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/lab/testtool"
)

var update = flag.Bool("update", false, "rewrite examples/prometheus/rules.yml and rules-lab.yml from the template and settings")

// shipped is the rules file users take, relative to this package.
const shipped = "../../examples/prometheus/rules.yml"

// labRules is what the Prometheus of `make lab` loads
// (examples/prometheus/prometheus-lab.yml).
const labRules = "../../examples/prometheus/rules-lab.yml"

// rendered are the committed rules files and the settings each is rendered with.
var rendered = []struct {
	file     string
	settings Settings
}{{shipped, Default}, {labRules, Lab}}

// TestShippedRulesMatchTemplate keeps the committed rules files and their
// source (template + settings) from drifting apart.
func TestShippedRulesMatchTemplate(t *testing.T) {
	for _, r := range rendered {
		want, err := Render(r.settings)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(r.file, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(r.file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the template rendered with %s: run `go test ./rules -update` in dashboards/", r.file, r.settings.Name)
		}
	}
}

// TestLabSettingsKeepThresholds: the lab's rules differ from the shipped
// ones only in windows, for: durations and their name, so an alert that
// fires in `make lab` is the shipped alert, only sooner.
func TestLabSettingsKeepThresholds(t *testing.T) {
	def, lab := reflect.ValueOf(Default), reflect.ValueOf(Lab)
	for i := range def.NumField() {
		f := def.Type().Field(i)
		if f.Type.Kind() == reflect.String {
			continue // windows, durations, selectors and names
		}
		if !reflect.DeepEqual(def.Field(i).Interface(), lab.Field(i).Interface()) {
			t.Errorf("Lab.%s = %v, Default.%s = %v: the lab may shorten windows, not move thresholds", f.Name, lab.Field(i), f.Name, def.Field(i))
		}
	}
	for _, name := range []string{"Selector", "InstanceLabels", "RunbookURL"} {
		if def.FieldByName(name).String() != lab.FieldByName(name).String() {
			t.Errorf("Lab.%s differs from Default.%s", name, name)
		}
	}
}

// TestPromtool runs Debian's promtool on the shipped rules: `check rules`
// (syntax, PromQL, templates), `check config` on the lab's Prometheus
// configuration, and `test rules` on every unit test file.
func TestPromtool(t *testing.T) {
	promtool := lookPromtool(t)
	out, err := exec.Command(promtool, "check", "rules", shipped, labRules).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	out, err = exec.Command(promtool, "check", "config", "../../examples/prometheus/prometheus-lab.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config prometheus-lab.yml: %v\n%s", err, out)
	}
	tests, err := filepath.Glob("../../examples/prometheus/tests/*.yml")
	if err != nil || len(tests) == 0 {
		t.Fatalf("no promtool unit tests found (%v)", err)
	}
	args := append([]string{"test", "rules"}, tests...)
	out, err = exec.Command(promtool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestShortSettingsRender checks the fast variant the end-to-end test uses:
// a group interval appears and promtool accepts it.
func TestShortSettingsRender(t *testing.T) {
	s := Default
	s.EvaluationInterval = "1s"
	s.RateWindow = "10s"
	s.DecryptFailureFor = "2s"
	b, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("interval: 1s")) || !bytes.Contains(b, []byte("[10s]")) {
		t.Fatalf("short settings not rendered:\n%s", b)
	}
	path := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(lookPromtool(t), "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// lookPromtool finds promtool (testtool's policy), skipping the test
// without it.
func lookPromtool(t *testing.T) string {
	t.Helper()
	path := testtool.Find(t, "promtool", "prometheus")
	if path == "" {
		t.Skip("no promtool")
	}
	return path
}
