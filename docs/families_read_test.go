package docs_test

import (
	"fmt"
	"strings"
	"testing"
)

// The reader of families is itself tested on fixtures: one package that
// declares families in every way it follows, one with what it must refuse.

func TestReadCodeFollowsDescriptors(t *testing.T) {
	c, err := readCode(repoRoot, []string{"./docs/testdata/families/follows"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range c.problems {
		t.Errorf("unexpected problem: %v", p)
	}
	const file = "docs/testdata/families/follows/follows.go"
	want := map[string]string{
		"fixture_literal_total":     "counter [[]]",
		"fixture_fixture_assembled": "gauge [[netns peer]]",
		"fixture_appended":          "gauge [[netns peer extra fixed]]",
		"fixture_closure_total":     "counter [[]]",
		"fixture_method":            "gauge [[]]",
		"fixture_returned_total":    "counter [[a] [a name]]",
		"fixture_table":             "gauge [[]]",
		"fixture_slice_total":       "counter [[]]",
		"fixture_map":               "gauge [[]]",
		"fixture_fixture_vec_total": "counter [[cause]]",
		"fixture_func":              "gauge [[]]",
		"fixture_seconds":           "histogram [[k]]",
	}
	for name, w := range want {
		f, ok := c.families[name]
		if !ok {
			t.Errorf("%s not found", name)
			continue
		}
		if got := fmt.Sprintf("%s %v", f.Type, f.LabelSets); got != w {
			t.Errorf("%s: got %s, want %s", name, got, w)
		}
		if len(f.Files) != 1 || f.Files[0] != file {
			t.Errorf("%s: files %v, want [%s]", name, f.Files, file)
		}
	}
	for name := range c.families {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected family %s", name)
		}
	}
	if c.resolve("follows.sender.gauge") != nil || c.resolve("follows.Update") != nil {
		t.Error("the fixture's own identifiers do not resolve")
	}
	for _, ref := range []string{"follows.nothing", "follows.sender.nothing", "other.Update", "follows"} {
		if c.resolve(ref) == nil {
			t.Errorf("%s resolves", ref)
		}
	}
}

func TestReadCodeRefusesWhatItCannotFollow(t *testing.T) {
	c, err := readCode(repoRoot, []string{"./docs/testdata/families/fails"})
	if err != nil {
		t.Fatal(err)
	}
	const file = "docs/testdata/families/fails/fails.go"
	// Each problem names the line (the column moves with gofmt).
	want := []struct {
		line int
		msg  string
	}{
		{9, "fixture_never_sent is declared but never sent"},
		{10, "fixture_two_types is sent as counter and as gauge"},
		{11, "label names computed() are not a literal this reader can follow"},
		{24, "descriptor <-fromChan is an expression this reader cannot follow"},
		{25, "name() is not a constant string"},
	}
	var got []string
	for _, p := range c.problems {
		got = append(got, p.Error())
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, fmt.Sprintf("%s:%d:", file, w.line)) && strings.HasSuffix(g, ": "+w.msg)
		}
		if !found {
			t.Errorf("no problem at line %d %q; got:\n%s", w.line, w.msg, strings.Join(got, "\n"))
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}
