package docs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// fence is a fenced code block; links in it are not links.
	fence = regexp.MustCompile("(?ms)^\\s*```.*?^\\s*```")
	// inlineCode is a code span: `...`.
	inlineCode = regexp.MustCompile("`[^`\n]+`")
	// mdLink is [text](target "title") and ![alt](target).
	mdLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// refLink is a reference definition: [name]: target
	refLink = regexp.MustCompile(`(?m)^\s*\[[^\]]+\]:\s+<?(\S+?)>?(?:\s|$)`)
	// scheme starts an absolute URL (https:, mailto:).
	scheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	// codePath is a code span naming a relative Markdown file, as in
	// "see `../docs/deploy.md`".
	codePath = regexp.MustCompile("^`(\\.\\.?/[^`\\s]+\\.md)`$")
)

// TestRelativeLinks: every relative link in the repository's Markdown files
// (and every code span naming a ./ or ../ Markdown path) points at a file or
// directory that exists in the repository, not outside it, so a reader of a
// clone or of the release tarball never follows a dead one.
func TestRelativeLinks(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir // .git, .build, .tarballs: not the repository's documents
		}
		if d.IsDir() || !strings.HasSuffix(p, ".md") {
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for _, target := range relativeTargets(string(raw)) {
			checked++
			if problem := resolve(root, filepath.Dir(p), target); problem != "" {
				t.Errorf("%s: link %s: %s", rel, target, problem)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no relative link found in any Markdown file: the scan is broken")
	}
}

// relativeTargets returns the relative link targets of a Markdown text,
// without #fragments; links to a fragment of the same file are left out.
func relativeTargets(text string) []string {
	text = fence.ReplaceAllString(text, "")
	var targets []string
	for _, span := range inlineCode.FindAllString(text, -1) {
		if m := codePath.FindStringSubmatch(span); m != nil {
			targets = append(targets, m[1])
		}
	}
	text = inlineCode.ReplaceAllString(text, "")
	var raw []string
	for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
		raw = append(raw, m[1])
	}
	for _, m := range refLink.FindAllStringSubmatch(text, -1) {
		raw = append(raw, m[1])
	}
	for _, r := range raw {
		if scheme.MatchString(r) || strings.HasPrefix(r, "#") || strings.HasPrefix(r, "/") {
			continue
		}
		r, _, _ = strings.Cut(r, "#")
		targets = append(targets, r)
	}
	return targets
}

// resolve says what is wrong with target relative to dir ("" if nothing).
func resolve(root, dir, target string) string {
	p := filepath.Join(dir, filepath.FromSlash(target))
	if rel, err := filepath.Rel(root, p); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "points outside the repository"
	}
	if _, err := os.Stat(p); err != nil {
		return "no such file"
	}
	return ""
}

// TestRelativeTargets: the scanner finds links in the forms Markdown has and
// ignores URLs, fragments and code.
func TestRelativeTargets(t *testing.T) {
	text := "See [a](a.md), [b](../b/README.md#install \"title\"), ![img](x.png),\n" +
		"[web](https://example.com/x.md), [here](#section), `[not](code.md)`,\n" +
		"the notes in `../notes.md`, a plain `file.md`.\n" +
		"```\n[fenced](fenced.md)\n```\n" +
		"[ref]: docs/ref.md\n"
	got := strings.Join(relativeTargets(text), " ")
	if want := "../notes.md a.md ../b/README.md x.png docs/ref.md"; got != want {
		t.Errorf("targets %q, want %q", got, want)
	}
	root := t.TempDir()
	if p := resolve(root, root, "../outside.md"); p != "points outside the repository" {
		t.Errorf("a link out of the repository: %q", p)
	}
	if p := resolve(root, root, "missing.md"); p != "no such file" {
		t.Errorf("a missing file: %q", p)
	}
}
