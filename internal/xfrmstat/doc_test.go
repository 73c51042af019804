package xfrmstat

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var updateDoc = flag.Bool("update", false, "rewrite docs/xfrm_stat.md from the counters' meanings")

const docPath = "../../docs/xfrm_stat.md"

// doc is docs/xfrm_stat.md as the meanings make it.
func doc() string {
	var b strings.Builder
	b.WriteString(`# The kernel's XFRM error counters

` + "`ipsec_xfrm_stat_errors_total{netns, counter}`" + ` (the ` + "`xfrm_stat`" + ` collector) passes every counter of the
namespace's ` + "`/proc/net/xfrm_stat`" + ` through unchanged, under the kernel's own name. Every one counts dropped
packets. The meanings are the kernel's (Documentation/networking/xfrm_proc.rst), with the usual cause where
that text alone does not say what to look at; the order is the kernel's (include/uapi/linux/snmp.h). A
counter a newer kernel adds comes through as it is, before it is listed here.
[runbook.md](runbook.md) ties the decrypt and encrypt failure reasons of the verdicts to these counters.

This file is generated from internal/xfrmstat/meaning.go: ` + "`go test ./internal/xfrmstat -run TestDoc -update`" + `.

| counter | packets dropped |
|---|---|
`)
	for _, name := range Known() {
		m, _ := Meaning(name)
		fmt.Fprintf(&b, "| `%s` | %s |\n", name, m)
	}
	return b.String()
}

// TestDoc: docs/xfrm_stat.md lists every counter this version knows, with
// its meaning, and nothing else.
func TestDoc(t *testing.T) {
	want := doc()
	if *updateDoc {
		if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s differs from the counters' meanings (rerun with -update after checking):\n%s", docPath, want)
	}
	for _, name := range Known() {
		if m, ok := Meaning(name); !ok || m == "" {
			t.Errorf("%s has no meaning", name)
		}
	}
	if len(meanings) != len(Known()) {
		t.Errorf("%d meanings for %d known counters", len(meanings), len(Known()))
	}
}
