package lab

import (
	"os"
	"strings"
	"testing"
)

// TestStatusLines: the once-a-minute status says, per direction and peer,
// what moved between two real scrapes of the exporter in the lab: here the
// committed lab scrape, and the same scrape with some counters advanced,
// one added and one reset (an exporter restart).
func TestStatusLines(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(root + "/dashboards/testdata/lab-scrape.prom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prev, err := parseVerdicts(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(prev) == 0 {
		t.Fatal("no ipsec_xfrm_packets_total in the lab scrape")
	}
	if got := statusLines(prev, prev); len(got) != 0 {
		t.Errorf("nothing moved, yet: %q", got)
	}
	cur := map[verdictKey]float64{}
	for k, v := range prev {
		cur[k] = v
	}
	okDecrypt := verdictKey{"decrypt", "10.77.0.2", "", "ok"}
	integrity := verdictKey{"decrypt", "10.77.0.2", "", "integrity"}
	encrypt := verdictKey{"encrypt", "10.77.0.1", "", "ok"}
	for _, k := range []verdictKey{okDecrypt, integrity, encrypt} {
		if _, ok := prev[k]; !ok {
			t.Fatalf("the lab scrape has no %+v", k)
		}
	}
	cur[okDecrypt] += 300
	cur[integrity] += 12
	cur[encrypt] = 7 // below the previous value: counted from zero
	cur[verdictKey{"encrypt", "10.77.5.2", "nout", "no_state"}] = 15
	got := strings.Join(statusLines(prev, cur), "\n")
	want := strings.Join([]string{
		"  decrypt 10.77.0.2                ok=300 integrity=12",
		"  encrypt 10.77.0.1                ok=7",
		"  encrypt 10.77.5.2 (nout)         no_state=15",
	}, "\n")
	if got != want {
		t.Errorf("status lines:\n%s\nwant:\n%s", got, want)
	}
}
