package xfrmstat

import (
	"os"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// TestLabXfrmStatFixture parses the lab kernel's real file, checks it
// against the scenario's independent reader and the counter set the kernel
// should have, and prints it so it can be committed as
// testdata/xfrm_stat-<kernel> (the lines after "FIXTURE xfrm_stat").
func TestLabXfrmStatFixture(t *testing.T) {
	scenario.RequireVM(t)
	data, err := os.ReadFile(Path)
	if err != nil {
		t.Fatal(err)
	}
	counters, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	n := scenario.NewNetns(t, "stat")
	independent := n.XfrmStat(t)
	if len(independent) != len(counters) {
		t.Errorf("%d counters here, %d in a fresh namespace", len(counters), len(independent))
	}
	for _, c := range counters {
		if _, ok := Meaning(c.Name); !ok {
			t.Errorf("kernel %s has %s, which has no meaning here", scenario.Kernel(), c.Name)
		}
		if _, ok := independent[c.Name]; !ok {
			t.Errorf("%s missing in the scenario's reading", c.Name)
		}
	}
	want := map[string]int{"6.1": 28, "6.12": 30}[scenario.Kernel()]
	if want != 0 && len(counters) != want {
		t.Errorf("kernel %s: %d counters, want %d", scenario.Kernel(), len(counters), want)
	}
	t.Logf("FIXTURE xfrm_stat-%s\n%sEND FIXTURE", scenario.Kernel(), data)
}
