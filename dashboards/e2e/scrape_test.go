package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// labScrape is the committed scrape the host-side dashboard checks trust.
const labScrape = "../testdata/lab-scrape.prom"

// checkScrape takes the exporter's scrape in the lab (traffic and failures
// present) and either writes it (-update) or compares its shape — metric
// names, types and label names — with the committed one, so a renamed metric
// or label fails here and names what to re-check.
func checkScrape(t *testing.T, exporter string) {
	t.Helper()
	live, err := httpGet(exporter + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		writeFile(t, labScrape, []byte(live))
		t.Logf("wrote %s", labScrape)
		return
	}
	committed, err := os.ReadFile(labScrape)
	if err != nil {
		t.Fatal(err)
	}
	// The committed scrape comes from the default (newest) lab kernel; on
	// another kernel some series legitimately differ, so differences are
	// only logged there.
	report := t.Errorf
	if *kernel != "" {
		report = t.Logf
	}
	want, got := shape(t, string(committed)), shape(t, live)
	changed := false
	for _, line := range want {
		if !slices.Contains(got, line) {
			report("committed scrape has %s, the lab's does not", line)
			changed = true
		}
	}
	for _, line := range got {
		if !slices.Contains(want, line) {
			report("the lab's scrape has %s, the committed one does not", line)
			changed = true
		}
	}
	if changed {
		t.Logf("the exporter's metrics changed: check the dashboards and rules, then rerun with -update (default kernel) to commit the new scrape")
	}
}

// shape lists "name type {labels}" per metric family, label names sorted.
func shape(t *testing.T, text string) []string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing scrape: %v", err)
	}
	var out []string
	for name, f := range families {
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		var names []string
		for l := range labels {
			names = append(names, l)
		}
		slices.Sort(names)
		out = append(out, name+" "+f.GetType().String()+" {"+strings.Join(names, ",")+"}")
	}
	slices.Sort(out)
	return out
}
