package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// What the interactive lab reports while it runs: once a minute the
// packets per peer and result that the exporter counted in that minute,
// and, with monitoring, when Prometheus got its first samples and each
// alert's firing and resolution.

// verdictKey is one series of ipsec_xfrm_packets_total.
type verdictKey struct{ direction, peer, peerName, result string }

// readVerdicts scrapes the exporter and returns ipsec_xfrm_packets_total.
func readVerdicts(ctx context.Context, client *http.Client, metricsURL string) (map[verdictKey]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", metricsURL, resp.Status)
	}
	return parseVerdicts(resp.Body)
}

func parseVerdicts(r io.Reader) (map[verdictKey]float64, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing the exporter's metrics: %w", err)
	}
	out := map[verdictKey]float64{}
	for _, m := range families["ipsec_xfrm_packets_total"].GetMetric() {
		var k verdictKey
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "direction":
				k.direction = l.GetValue()
			case "peer":
				k.peer = l.GetValue()
			case "peer_name":
				k.peerName = l.GetValue()
			case "result":
				k.result = l.GetValue()
			}
		}
		out[k] += m.GetCounter().GetValue()
	}
	return out, nil
}

// statusLines says, per direction and peer, how many packets of each
// result the exporter counted between two scrapes. A counter that went
// down (the exporter restarted) counts from zero.
func statusLines(prev, cur map[verdictKey]float64) []string {
	type peerKey struct{ direction, peer, peerName string }
	moved := map[peerKey][]string{}
	for k, v := range cur {
		d := v - prev[k]
		if d < 0 {
			d = v
		}
		if d == 0 {
			continue
		}
		pk := peerKey{k.direction, k.peer, k.peerName}
		moved[pk] = append(moved[pk], fmt.Sprintf("%s=%.0f", k.result, d))
	}
	keys := make([]peerKey, 0, len(moved))
	for k := range moved {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b peerKey) int {
		return strings.Compare(a.direction+" "+a.peer, b.direction+" "+b.peer)
	})
	var lines []string
	for _, k := range keys {
		results := moved[k]
		// ok first, then the failure reasons alphabetically.
		slices.SortFunc(results, func(a, b string) int {
			if strings.HasPrefix(a, "ok=") != strings.HasPrefix(b, "ok=") {
				if strings.HasPrefix(a, "ok=") {
					return -1
				}
				return 1
			}
			return strings.Compare(a, b)
		})
		peer := k.peer
		if k.peerName != "" {
			peer += " (" + k.peerName + ")"
		}
		lines = append(lines, fmt.Sprintf("  %-7s %-24s %s", k.direction, peer, strings.Join(results, " ")))
	}
	return lines
}

// reportStatus prints statusLines every interval until ctx ends.
func reportStatus(ctx context.Context, w io.Writer, metricsURL string, interval time.Duration) {
	client := &http.Client{Timeout: 20 * time.Second}
	prev, err := readVerdicts(ctx, client, metricsURL)
	if err != nil {
		prev = map[verdictKey]float64{}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		cur, err := readVerdicts(ctx, client, metricsURL)
		if ctx.Err() != nil {
			// Ctrl-C: the VM is going away, its port with it.
			return
		}
		if err != nil {
			fmt.Fprintf(w, "ipsec-lab: status: %v\n", err)
			continue
		}
		lines := statusLines(prev, cur)
		prev = cur
		if len(lines) == 0 {
			fmt.Fprintf(w, "ipsec-lab: %s no packet verdicts in the last %s (ipsec_xfrm_packets_total did not move)\n", time.Now().Format("15:04:05"), interval)
			continue
		}
		fmt.Fprintf(w, "ipsec-lab: %s packets per peer and result in the last %s (ipsec_xfrm_packets_total):\n%s\n",
			time.Now().Format("15:04:05"), interval, strings.Join(lines, "\n"))
	}
}

// promAlert is one entry of Prometheus' /api/v1/alerts.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// alertIdentity names an alert instance: its name and the labels that
// tell instances apart (not the target's or the severity).
func alertIdentity(a promAlert) string {
	var parts []string
	for k, v := range a.Labels {
		switch k {
		case "alertname", "job", "instance", "node", "severity":
			continue
		}
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return a.Labels["alertname"]
	}
	return a.Labels["alertname"] + " {" + strings.Join(parts, " ") + "}"
}

// watchPrometheus prints when Prometheus first has the exporter's samples
// and every alert that starts or stops firing, with the time since start.
func watchPrometheus(ctx context.Context, w io.Writer, prometheus string, start time.Time) {
	client := &http.Client{Timeout: 5 * time.Second}
	since := func() string { return time.Since(start).Round(time.Second).String() }
	get := func(path string, v any) error {
		resp, err := client.Get(prometheus + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(v)
	}
	firstSample := false
	firing := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
		if !firstSample {
			var q struct {
				Data struct {
					Result []json.RawMessage `json:"result"`
				} `json:"data"`
			}
			expr := url.QueryEscape(`count({__name__=~"ipsec_.+", job="ipsec"})`)
			if get("/api/v1/query?query="+expr, &q) == nil && len(q.Data.Result) > 0 {
				firstSample = true
				fmt.Fprintf(w, "ipsec-lab: Prometheus has the exporter's first samples, %s after start\n", since())
			}
		}
		var alerts struct {
			Data struct {
				Alerts []promAlert `json:"alerts"`
			} `json:"data"`
		}
		if err := get("/api/v1/alerts", &alerts); err != nil {
			continue
		}
		now := map[string]bool{}
		for _, a := range alerts.Data.Alerts {
			if a.State == "firing" {
				now[alertIdentity(a)] = true
			}
		}
		for _, id := range sortedKeys(now) {
			if !firing[id] {
				fmt.Fprintf(w, "ipsec-lab: alert firing: %s, %s after start\n", id, since())
			}
		}
		for _, id := range sortedKeys(firing) {
			if !now[id] {
				fmt.Fprintf(w, "ipsec-lab: alert resolved: %s, %s after start\n", id, since())
			}
		}
		firing = now
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
