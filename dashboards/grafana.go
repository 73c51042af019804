// Package dashboards builds the Grafana dashboards shipped as JSON in this
// directory (overview.json, sa-detail.json) and checks them. The JSON files
// are what users import; this Go source is where they are edited: run
// `go test -update` here to rewrite them, and a test fails when the two
// disagree.
package dashboards

import (
	"encoding/json"
	"fmt"
)

// datasourceRef points every panel and variable at the dashboard's
// datasource variable, never at a UID from someone's Grafana.
var datasourceRef = map[string]string{"type": "prometheus", "uid": "${datasource}"}

// sel is the label selector of every query on the exporter's series: the
// job, node and instance variables.
const sel = `job=~"$job", node=~"$node", instance=~"$instance"`

// Dashboard is one dashboard before it is turned into Grafana's JSON model.
type Dashboard struct {
	File        string // file name in dashboards/
	UID         string // our own, stable across imports
	Title       string
	Description string
	// Filters are variables after the common ones (datasource, job, node,
	// instance), each a label the panels' selectors match on.
	Filters []Filter
	Rows    []Row
}

// Filter is a multi-value variable over one label's values.
type Filter struct {
	Name, Label string
	// Metric is the series whose label values the variable offers.
	Metric string
}

// maxSeries bounds what one panel draws: a query over labels with unbounded
// values (instance, peer, netns, spi, interface) keeps its top (or bottom)
// maxSeries series. TestSeriesBounded checks every query.
const maxSeries = 20

// top keeps the maxSeries largest series of expr at each step.
func top(expr string) string { return fmt.Sprintf("topk(%d, %s)", maxSeries, expr) }

// bottom keeps the maxSeries smallest.
func bottom(expr string) string { return fmt.Sprintf("bottomk(%d, %s)", maxSeries, expr) }

// Row is a titled row of panels, laid out left to right, wrapping at 24.
type Row struct {
	Title  string
	Panels []Panel
}

// Panel is a time series, stat or table panel.
type Panel struct {
	Type        string // timeseries (default), stat, table
	Title       string
	Description string
	Unit        string
	Width       int // of 24; default 12
	Height      int // default 8
	Min, Max    *float64
	Stack       bool
	Targets     []Target
	// Thresholds give values their colour: a stat's value and a table's
	// cells always, a time series' lines with ColorByValue, and bands
	// behind it with ShowThresholds. Without them Grafana colours every
	// value green (red from 80), so every stat and table sets its own.
	Thresholds []Step
	// ShowThresholds draws Thresholds behind a time series: "line+area",
	// "area", "line" or "dashed".
	ShowThresholds string
	// ColorByValue colours a time series' lines by Thresholds (a peer at 0
	// SAs red) instead of one palette colour per series.
	ColorByValue bool
	// FixedColor gives every series one colour (plaintext to peers: red).
	FixedColor string
	// SeriesColors colour the series whose display name matches a regexp.
	SeriesColors []SeriesColor
}

// Step is one threshold: values from From up (the first step has no From:
// it starts at minus infinity) are shown in Color.
type Step struct {
	From  *float64
	Color string
}

// SeriesColor is a fixed colour for the series whose name matches Regexp.
type SeriesColor struct {
	Regexp, Color string
}

// Colours with a meaning; Grafana's named colours.
const (
	good    = "green"
	warning = "orange"
	bad     = "red"
	neutral = "blue"
)

// steps builds thresholds: a base colour, then (value, colour) pairs in
// ascending order.
func steps(base string, more ...any) []Step {
	out := []Step{{Color: base}}
	for i := 0; i+1 < len(more); i += 2 {
		out = append(out, Step{From: f(more[i].(float64)), Color: more[i+1].(string)})
	}
	return out
}

// Target is one PromQL query of a panel.
type Target struct {
	Expr   string
	Legend string
	// Instant queries feed tables and stats that show a current value.
	Instant bool
}

func f(v float64) *float64 { return &v }

// JSON renders the Grafana dashboard model (schemaVersion 39, Grafana 10+).
func (d Dashboard) JSON() ([]byte, error) {
	var panels []any
	id, y := 1, 0
	for _, row := range d.Rows {
		panels = append(panels, map[string]any{
			"type":      "row",
			"id":        id,
			"title":     row.Title,
			"collapsed": false,
			"gridPos":   map[string]int{"h": 1, "w": 24, "x": 0, "y": y},
			"panels":    []any{},
		})
		id++
		y++
		x, rowHeight := 0, 0
		for _, p := range row.Panels {
			w, h := p.Width, p.Height
			if w == 0 {
				w = 12
			}
			if h == 0 {
				h = 8
			}
			if x+w > 24 {
				x, y = 0, y+rowHeight
				rowHeight = 0
			}
			panels = append(panels, p.model(id, x, y, w, h))
			id++
			x += w
			rowHeight = max(rowHeight, h)
		}
		y += rowHeight
	}
	model := map[string]any{
		"uid":                  d.UID,
		"title":                d.Title,
		"description":          d.Description,
		"tags":                 []string{"ipsec", "ipsec_exporter"},
		"editable":             true,
		"graphTooltip":         1,
		"schemaVersion":        39,
		"version":              1,
		"refresh":              "30s",
		"time":                 map[string]string{"from": "now-1h", "to": "now"},
		"timepicker":           map[string]any{},
		"timezone":             "",
		"fiscalYearStartMonth": 0,
		"liveNow":              false,
		"annotations":          map[string]any{"list": []any{}},
		"links": []any{map[string]any{
			"type":        "dashboards",
			"tags":        []string{"ipsec"},
			"title":       "IPsec dashboards",
			"asDropdown":  true,
			"includeVars": true,
			"keepTime":    true,
		}},
		"templating": map[string]any{"list": variables(d.Filters)},
		"panels":     panels,
	}
	b, err := json.MarshalIndent(model, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding dashboard %s: %w", d.File, err)
	}
	return append(b, '\n'), nil
}

func (p Panel) model(id, x, y, w, h int) map[string]any {
	typ := p.Type
	if typ == "" {
		typ = "timeseries"
	}
	defaults := map[string]any{"unit": p.Unit, "color": p.colorMode()}
	if len(p.Thresholds) > 0 {
		var st []any
		for _, step := range p.Thresholds {
			var from any // JSON null: the base step
			if step.From != nil {
				from = *step.From
			}
			st = append(st, map[string]any{"color": step.Color, "value": from})
		}
		defaults["thresholds"] = map[string]any{"mode": "absolute", "steps": st}
	}
	if p.Min != nil {
		defaults["min"] = *p.Min
	}
	if p.Max != nil {
		defaults["max"] = *p.Max
	}
	var options map[string]any
	switch typ {
	case "timeseries":
		custom := map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": false}
		custom["thresholdsStyle"] = map[string]any{"mode": "off"}
		if p.ShowThresholds != "" {
			custom["thresholdsStyle"] = map[string]any{"mode": p.ShowThresholds}
		}
		if p.ColorByValue {
			custom["gradientMode"] = "scheme"
		}
		if p.Stack {
			custom["stacking"] = map[string]any{"mode": "normal", "group": "A"}
			custom["fillOpacity"] = 30
		}
		defaults["custom"] = custom
		options = map[string]any{
			"legend":  map[string]any{"showLegend": true, "displayMode": "table", "placement": "bottom", "calcs": []string{"mean", "max", "lastNotNull"}},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		}
	case "stat":
		options = map[string]any{
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"colorMode":     "value",
			"graphMode":     "area",
			"textMode":      "auto",
			"justifyMode":   "auto",
			"orientation":   "auto",
		}
	case "table":
		options = map[string]any{"showHeader": true, "cellHeight": "sm", "footer": map[string]any{"show": false}}
		// Cells of the value column in their threshold's colour.
		defaults["custom"] = map[string]any{"cellOptions": map[string]any{"type": "color-background"}}
	}
	var overrides []any
	for _, c := range p.SeriesColors {
		overrides = append(overrides, map[string]any{
			"matcher":    map[string]any{"id": "byRegexp", "options": c.Regexp},
			"properties": []any{map[string]any{"id": "color", "value": map[string]any{"mode": "fixed", "fixedColor": c.Color}}},
		})
	}
	if overrides == nil {
		overrides = []any{}
	}
	var targets []any
	for i, t := range p.Targets {
		target := map[string]any{
			"refId":        string(rune('A' + i)),
			"datasource":   datasourceRef,
			"expr":         t.Expr,
			"legendFormat": t.Legend,
			"range":        !t.Instant,
			"instant":      t.Instant,
		}
		if typ == "table" {
			target["format"] = "table"
		}
		targets = append(targets, target)
	}
	panel := map[string]any{
		"id":          id,
		"type":        typ,
		"title":       p.Title,
		"description": p.Description,
		"datasource":  datasourceRef,
		"gridPos":     map[string]int{"h": h, "w": w, "x": x, "y": y},
		"fieldConfig": map[string]any{"defaults": defaults, "overrides": overrides},
		"options":     options,
		"targets":     targets,
	}
	if typ == "table" {
		// One row per series: Prometheus' instant vectors come as one frame
		// each; merge them and drop the timestamp column.
		panel["transformations"] = []any{
			map[string]any{"id": "merge", "options": map[string]any{}},
			map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true}}},
		}
	}
	return panel
}

// colorMode is how Grafana picks colours: by the thresholds for stats,
// tables and ColorByValue, one fixed colour, or the palette (one colour per
// series).
func (p Panel) colorMode() map[string]any {
	switch {
	case p.FixedColor != "":
		return map[string]any{"mode": "fixed", "fixedColor": p.FixedColor}
	case p.ColorByValue || p.Type == "stat" || p.Type == "table":
		return map[string]any{"mode": "thresholds"}
	}
	return map[string]any{"mode": "palette-classic"}
}

// variables are the same on every dashboard: the datasource, then job, node
// and instance, each narrowing the next. node is the label the Kubernetes
// example adds; where it does not exist, "All" (.*) matches every series.
func variables(filters []Filter) []any {
	query := func(name, label, q string, all bool) map[string]any {
		v := map[string]any{
			"name":       name,
			"label":      label,
			"type":       "query",
			"datasource": datasourceRef,
			"query":      map[string]any{"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
			"definition": q,
			"refresh":    2,
			"sort":       1,
			"hide":       0,
			"regex":      "",
			"current":    map[string]any{},
			"options":    []any{},
			"includeAll": all,
			"multi":      all,
		}
		if all {
			v["allValue"] = ".*"
			v["current"] = map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}}
		}
		return v
	}
	vars := []any{
		map[string]any{
			"name":    "datasource",
			"label":   "Data source",
			"type":    "datasource",
			"query":   "prometheus",
			"current": map[string]any{},
			"hide":    0,
			"refresh": 1,
			"regex":   "",
			"options": []any{},
		},
		query("job", "Job", `label_values(ipsec_exporter_build_info, job)`, false),
		query("node", "Node", `label_values(ipsec_exporter_build_info{job=~"$job"}, node)`, true),
		query("instance", "Instance", `label_values(ipsec_exporter_build_info{job=~"$job", node=~"$node"}, instance)`, true),
	}
	for _, f := range filters {
		vars = append(vars, query(f.Name, f.Label, fmt.Sprintf("label_values(%s{%s}, %s)", f.Metric, sel, f.Name), true))
	}
	return vars
}
