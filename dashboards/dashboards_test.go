package dashboards

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

var update = flag.Bool("update", false, "rewrite the dashboards' JSON from the Go source (and, in the end-to-end test, testdata/lab-scrape.prom from the lab)")

// all is every dashboard this package ships.
var all = []Dashboard{Overview, SADetail}

// TestDashboardsUpToDate keeps the committed JSON equal to what the Go
// source renders.
func TestDashboardsUpToDate(t *testing.T) {
	for _, d := range all {
		want, err := d.JSON()
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(d.File, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(d.File)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from its Go source: run `go test -run TestDashboardsUpToDate -update` in dashboards/", d.File)
		}
	}
}

// TestEveryJSONFileIsShipped makes sure no dashboard JSON sits here without
// its Go source (and so without the checks below).
func TestEveryJSONFileIsShipped(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	var known []string
	for _, d := range all {
		known = append(known, d.File)
	}
	for _, f := range files {
		if !slices.Contains(known, f) {
			t.Errorf("%s is not built by this package", f)
		}
	}
}

// promql is the parser of the Prometheus version the module pins, with its
// defaults: no experimental functions, as a stock Prometheus.
var promql = parser.NewParser(parser.Options{})

// rateIntervalSentinel replaces $__rate_interval before parsing, so that the
// parsed ranges can be told apart from hard-coded ones.
const rateIntervalSentinel = 7777 * time.Second

// expandForParsing turns a Grafana query into PromQL the parser accepts:
// $__rate_interval becomes the sentinel duration; $job and friends only
// appear inside label matcher strings, where they are valid as they are.
func expandForParsing(expr string) string {
	return strings.ReplaceAll(expr, "$__rate_interval", fmt.Sprintf("%ds", int(rateIntervalSentinel.Seconds())))
}

// TestDashboardConventions checks the JSON files as Grafana will read them:
// the conventions of docs and STYLE.md, and that every query parses.
func TestDashboardConventions(t *testing.T) {
	for _, d := range all {
		t.Run(d.File, func(t *testing.T) {
			model := loadDashboard(t, d.File)
			if model.UID == "" || model.Title == "" || model.Description == "" {
				t.Errorf("dashboard needs a uid, a title and a description")
			}
			checkVariables(t, model)
			if len(model.Panels) == 0 {
				t.Fatal("no panels")
			}
			for _, p := range model.Panels {
				if p.Type == "row" {
					continue
				}
				checkPanel(t, p)
			}
		})
	}
}

func checkVariables(t *testing.T, model grafanaDashboard) {
	t.Helper()
	byName := map[string]grafanaVariable{}
	for _, v := range model.Templating.List {
		byName[v.Name] = v
	}
	for _, name := range []string{"datasource", "job", "node", "instance"} {
		if _, ok := byName[name]; !ok {
			t.Errorf("variable %q missing", name)
		}
	}
	if ds := byName["datasource"]; ds.Type != "datasource" || ds.Query != "prometheus" {
		t.Errorf("datasource variable must be of type datasource for prometheus, is %q/%v", ds.Type, ds.Query)
	}
	for _, v := range model.Templating.List {
		if v.Type != "query" {
			continue
		}
		checkDatasourceRef(t, "variable "+v.Name, v.Datasource)
		q := v.Definition
		if !strings.HasPrefix(q, "label_values(") || !strings.HasSuffix(q, ")") {
			t.Errorf("variable %s: want a label_values(selector, label) query, got %q", v.Name, q)
			continue
		}
		args := strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
		i := strings.LastIndex(args, ",")
		if _, err := promql.ParseExpr(args[:i]); err != nil {
			t.Errorf("variable %s: selector does not parse: %v", v.Name, err)
		}
	}
}

func checkDatasourceRef(t *testing.T, what string, ref map[string]string) {
	t.Helper()
	if ref["type"] != "prometheus" || (ref["uid"] != "${datasource}" && ref["uid"] != "$datasource") {
		t.Errorf("%s: datasource must be the ${datasource} variable, not a fixed UID: %v", what, ref)
	}
}

func checkPanel(t *testing.T, p grafanaPanel) {
	t.Helper()
	what := fmt.Sprintf("panel %q", p.Title)
	if p.Title == "" {
		t.Errorf("panel %d has no title", p.ID)
	}
	if strings.TrimSpace(p.Description) == "" {
		t.Errorf("%s has no description", what)
	}
	if p.FieldConfig.Defaults.Unit == "" {
		t.Errorf("%s has no unit", what)
	}
	checkDatasourceRef(t, what, p.Datasource)
	if len(p.Targets) == 0 {
		t.Errorf("%s has no query", what)
	}
	for _, target := range p.Targets {
		checkDatasourceRef(t, what+" target "+target.RefID, target.Datasource)
		expr, err := promql.ParseExpr(expandForParsing(target.Expr))
		if err != nil {
			t.Errorf("%s: query does not parse: %v\n%s", what, err, target.Expr)
			continue
		}
		// Ranges over raw series follow the scrape interval through
		// $__rate_interval; recorded ratios carry their own window.
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			if m, ok := node.(*parser.MatrixSelector); ok && m.Range != rateIntervalSentinel {
				t.Errorf("%s: range [%s] is not $__rate_interval: %s", what, m.Range, target.Expr)
			}
			if vs, ok := node.(*parser.VectorSelector); ok && !isRecorded(vs.Name) && vs.Name != "up" {
				for _, label := range []string{"job", "node", "instance"} {
					if !hasVariableMatcher(vs, label) {
						t.Errorf("%s: selector %s does not filter %s on $%s", what, vs, label, label)
					}
				}
			}
			return nil
		})
	}
}

// isRecorded tells a recording rule's output (level:metric:operation) from a
// raw metric name.
func isRecorded(name string) bool { return strings.Count(name, ":") == 2 }

func hasVariableMatcher(vs *parser.VectorSelector, label string) bool {
	for _, m := range vs.LabelMatchers {
		if m.Name == label && m.Value == "$"+label {
			return true
		}
	}
	return false
}

// The parts of Grafana's dashboard model the checks read.
type grafanaDashboard struct {
	UID         string `json:"uid"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Templating  struct {
		List []grafanaVariable `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaVariable struct {
	Name       string            `json:"name"`
	Type       string            `json:"type"`
	Query      any               `json:"query"`
	Definition string            `json:"definition"`
	Datasource map[string]string `json:"datasource"`
}

type grafanaPanel struct {
	ID          int               `json:"id"`
	Type        string            `json:"type"`
	Title       string            `json:"title"`
	Description string            `json:"description"`
	Datasource  map[string]string `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Thresholds *struct {
				Mode  string `json:"mode"`
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
			Color struct {
				Mode string `json:"mode"`
			} `json:"color"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []grafanaTarget `json:"targets"`
}

type grafanaTarget struct {
	RefID      string            `json:"refId"`
	Expr       string            `json:"expr"`
	Instant    bool              `json:"instant"`
	Datasource map[string]string `json:"datasource"`
}

func loadDashboard(t *testing.T, file string) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var model grafanaDashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&model); err != nil {
		t.Fatalf("%s is not valid dashboard JSON: %v", file, err)
	}
	return model
}

// dashboardQueries lists every query of every shipped dashboard file.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, d := range all {
		for _, p := range loadDashboard(t, d.File).Panels {
			for _, target := range p.Targets {
				qs = append(qs, query{Where: d.File + ": " + p.Title, Expr: target.Expr, Instant: target.Instant})
			}
		}
	}
	return qs
}

type query struct {
	Where   string
	Expr    string
	Instant bool
}
