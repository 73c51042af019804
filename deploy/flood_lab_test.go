package deploy_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabSpoofedFloodSeries (issue 13 finding 1): 20,000 ESP packets with
// random sources and SPIs, which anyone can send without credentials, reach
// a node running the exporter with its default flags. On cebdf7d each source
// became a peer label of its own until the verdict map was full: /metrics
// grew from 353 series to 33,129, and a new peer's failures afterwards were
// not counted at all. Now the flood is counted, exactly (against the
// kernel's XfrmInNoStates), in the one peer="unknown" series; /metrics gains
// at most the few series of that bucket; and afterwards a new peer with a
// wrong key, and one without inbound SA, are counted under their own
// addresses.
func TestLabSpoofedFloodSeries(t *testing.T) {
	scenario.RequireVM(t)
	const flood = 20000
	p := scenario.NewPair(t)
	esp := p.ESP(t, scenario.ESPOptions{})
	e := startExporter(t, nil)
	// Attaching the verdict programs takes seconds under emulation.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if !waitServing(e, time.Until(deadline)) {
			t.Fatalf("exporter not serving:\n%s", e.output.String())
		}
		if _, body := e.scrape(t); sample(t, body, "ipsec_bpf_verdict_programs_attached", nil) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verdict program attached after 90s:\n%s", e.output.String())
		}
		time.Sleep(time.Second)
	}

	c := p.B.CaptureESP(t)
	if got := p.A.Ping(t, esp.BAddr, 1); got != 1 {
		t.Fatalf("ping: %d of 1 replies", got)
	}
	frames := c.Stop()
	if len(frames) == 0 {
		t.Fatal("no ESP frame captured")
	}
	spoofed := scenario.SpoofedESP(t, frames[0], flood)
	_, bodyBefore := e.scrape(t)
	body := bodyBefore
	seriesBefore, bytesBefore := seriesCount(body), len(body)
	unknown := map[string]string{"direction": "decrypt", "peer": "unknown", "result": "no_state"}
	unknownBefore := sample(t, body, "ipsec_xfrm_packets_total", unknown)
	statB := p.B.XfrmStat(t)
	sent := time.Now()
	p.A.SendFlood(t, spoofed)
	sending := time.Since(sent)
	time.Sleep(300 * time.Millisecond)
	noStates := p.B.XfrmStat(t).Sub(statB)["XfrmInNoStates"]

	begin := time.Now()
	code, body := e.scrape(t)
	took := time.Since(begin)
	if code != http.StatusOK {
		t.Fatalf("scrape after the flood: status %d", code)
	}
	seriesAfter := seriesCount(body)
	counted := sample(t, body, "ipsec_xfrm_packets_total", unknown) - unknownBefore
	t.Logf("kernel %s: %d spoofed packets in %.1fs, XfrmInNoStates +%d, peer=unknown no_state +%.0f; /metrics %d -> %d series, %d -> %d bytes, scrape %.3fs; verdict map %v of %v keys",
		scenario.Kernel(), flood, sending.Seconds(), noStates, counted, seriesBefore, seriesAfter, bytesBefore, len(body), took.Seconds(),
		sample(t, body, "ipsec_bpf_verdict_map_entries", nil), sample(t, body, "ipsec_bpf_verdict_map_max_entries", nil))
	if counted != float64(noStates) || noStates < flood*9/10 {
		t.Errorf("XfrmInNoStates moved by %d, peer=unknown no_state by %.0f: want equal, and most of the %d packets", noStates, counted, flood)
	}
	// The unknown bucket's packets and bytes, and what else a packet can
	// make appear once (a wire class on an interface, a kernel counter that
	// moved): a handful, however many sources. A peer label of its own
	// per source would be thousands.
	added := addedSeries(bodyBefore, body)
	t.Logf("%d series the flood added, the first at most 20:\n%s", len(added), strings.Join(added[:min(len(added), 20)], "\n"))
	if len(added) > floodSeriesBound {
		t.Errorf("the flood added %d series (%d -> %d), want at most %d", len(added), seriesBefore, seriesAfter, floodSeriesBound)
	}
	if peers := newPeerValues(bodyBefore, body); len(peers) > 1 || (len(peers) == 1 && peers[0] != "unknown") {
		t.Errorf("the flood added %d peer label values (%v ...), want at most \"unknown\"", len(peers), peers[:min(len(peers), 10)])
	}

	// New peers after the flood: one with a wrong key (integrity, under its
	// SA's peer) and one without inbound SA (no_state under the packet's
	// source, known from the node's policies once the exporter follows
	// them).
	known := sample(t, body, "ipsec_bpf_verdict_known_peers", nil)
	wrong := scenario.NewPairNamed(t, "wa", "wb", 5)
	we := wrong.ESP(t, scenario.ESPOptions{WrongKey: true})
	missing := scenario.NewPairNamed(t, "ma", "mb", 6)
	me := missing.ESP(t, scenario.ESPOptions{NoInboundSA: true})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, body = e.scrape(t)
		now := sample(t, body, "ipsec_bpf_verdict_known_peers", nil)
		if now >= known+4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the known-peer set did not take the new peers' 4 addresses in 30s: %v, %v before", now, known)
		}
	}
	wrong.A.PingTimeout(t, we.BAddr, 5, 300*time.Millisecond)
	missing.A.PingTimeout(t, me.BAddr, 5, 300*time.Millisecond)
	_, body = e.scrape(t)
	for _, want := range []map[string]string{
		{"direction": "decrypt", "peer": we.AB.Src.String(), "result": "integrity"},
		{"direction": "decrypt", "peer": me.AB.Src.String(), "result": "no_state"},
	} {
		if got := sample(t, body, "ipsec_xfrm_packets_total", want); got != 5 {
			t.Errorf("ipsec_xfrm_packets_total%v = %v after the flood, want 5", want, got)
		}
	}
	if v := sample(t, body, "ipsec_bpf_verdict_map_overflow_total", nil); v != 0 {
		t.Errorf("%v verdicts lost to a full map", v)
	}
	t.Logf("after two new peers: %d series", seriesCount(body))
}

// floodSeriesBound is how many series a flood of spoofed ESP may add
// (docs/deploy.md, "Series").
const floodSeriesBound = 16

// addedSeries lists the series (name and labels) of after that before
// lacks.
func addedSeries(before, after string) []string {
	had := map[string]bool{}
	for _, line := range strings.Split(before, "\n") {
		had[seriesOf(line)] = true
	}
	var added []string
	for _, line := range strings.Split(after, "\n") {
		if s := seriesOf(line); s != "" && !had[s] {
			added = append(added, s)
		}
	}
	return added
}

// seriesOf is a sample line without its value ("" for other lines).
func seriesOf(line string) string {
	if line == "" || strings.HasPrefix(line, "#") {
		return ""
	}
	return line[:strings.LastIndexByte(line, ' ')]
}

// newPeerValues lists the values of peer labels in after that before
// lacks.
func newPeerValues(before, after string) []string {
	values := func(body string) map[string]bool {
		v := map[string]bool{}
		for _, line := range strings.Split(body, "\n") {
			if _, rest, ok := strings.Cut(seriesOf(line), `peer="`); ok {
				value, _, _ := strings.Cut(rest, `"`)
				v[value] = true
			}
		}
		return v
	}
	had := values(before)
	var added []string
	for v := range values(after) {
		if !had[v] {
			added = append(added, v)
		}
	}
	return added
}

// seriesCount is the number of samples in an exposition.
func seriesCount(body string) int {
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n
}

// sample is the value of the sample of family name whose labels include
// labels (0 when there is none), summed if several match.
func sample(t *testing.T, body, name string, labels map[string]string) float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	var sum float64
	for _, m := range families[name].GetMetric() {
		if hasLabels(m, labels) {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, labels map[string]string) bool {
	found := 0
	for _, l := range m.GetLabel() {
		if v, ok := labels[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(labels)
}
