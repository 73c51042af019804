package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// projectURL is where the repository's files are linked from the shipped
// alerts (runbook_url), the systemd unit (Documentation=) and the docs.
const projectURL = "https://github.com/ipsec-exporter/ipsec_exporter/blob/main/"

// userDocs are the documents users read, each checked for dead links.
var userDocs = []string{
	"README.md", "docs/deploy.md", "docs/runbook.md", "dashboards/README.md",
	"deploy/helm/ipsec-exporter/README.md", "lab/README.md",
}

// TestReadmeInstallFirst: the README says what it needs and how to install
// before anything about building or developing, names every install path
// (release tarball, image, chart, manifests, systemd), and the image it
// names is the one the DaemonSet and the chart run.
func TestReadmeInstallFirst(t *testing.T) {
	readme := readFile(t, repoRoot+"/README.md")
	var sections []string
	for _, line := range strings.Split(readme, "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			sections = append(sections, h)
		}
	}
	if len(sections) < 2 || sections[0] != "Requirements" || sections[1] != "Install" {
		t.Errorf("README sections start %q, want Requirements then Install", sections)
	}
	install := readme[strings.Index(readme, "## Install"):]
	install = install[:strings.Index(install[1:], "\n## ")+1]
	for _, want := range []string{"make release", "sha256sums.txt", "Dockerfile", "deploy/helm/ipsec-exporter",
		"examples/kubernetes/daemonset.yaml", "examples/systemd/ipsec_exporter.service", "examples/systemd/tls.conf",
		"### Build from source"} {
		if !strings.Contains(install, want) {
			t.Errorf("README's Install section does not name %s", want)
		}
	}
	if strings.Index(install, "### Build from source") < strings.Index(install, "**systemd**") {
		t.Error("Build from source comes before the install paths")
	}
	for _, want := range []string{"Go 1.", "Debian", "root", "amd64", "arm64", "CAP_BPF"} {
		if !strings.Contains(readme[:strings.Index(readme, "## Install")], want) {
			t.Errorf("README's Requirements do not state %q", want)
		}
	}
	goMod := readFile(t, repoRoot+"/go.mod")
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	if goLine == nil || !strings.Contains(readme, "Go "+goLine[1]) {
		t.Errorf("README's requirements do not name go.mod's Go version %v", goLine)
	}
	for _, p := range readPromu(t).Crossbuild.Platforms {
		if arch := strings.TrimPrefix(p, "linux/"); !strings.Contains(readme, arch) {
			t.Errorf("release platform %s is not in the README", p)
		}
	}

	// One image name everywhere.
	dsImage := regexp.MustCompile(`(?m)^\s+image: (\S+)`).FindStringSubmatch(readFile(t, repoRoot+"/examples/kubernetes/daemonset.yaml"))
	if dsImage == nil {
		t.Fatal("no image in daemonset.yaml")
	}
	var values struct {
		Image struct{ Repository, Tag string }
	}
	var chart struct {
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, repoRoot+"/deploy/helm/ipsec-exporter/values.yaml")), &values); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(readFile(t, repoRoot+"/deploy/helm/ipsec-exporter/Chart.yaml")), &chart); err != nil {
		t.Fatal(err)
	}
	tag := values.Image.Tag
	if tag == "" {
		tag = "v" + chart.AppVersion
	}
	if chartImage := values.Image.Repository + ":" + tag; chartImage != dsImage[1] {
		t.Errorf("the chart runs %s, the DaemonSet %s", chartImage, dsImage[1])
	}
	if !strings.Contains(install, dsImage[1]) {
		t.Errorf("README's Install does not name the DaemonSet's image %s", dsImage[1])
	}
}

// TestDocLinks: every relative link of the user docs and every link to the
// project's files (the alerts' runbook_url, the unit's Documentation=)
// reaches a file of the repository, and an anchor a heading in it.
func TestDocLinks(t *testing.T) {
	relLink := regexp.MustCompile(`\]\(([^)#\s]*)(#[^)\s]*)?\)`)
	for _, doc := range userDocs {
		text := readFile(t, repoRoot+"/"+doc)
		for _, m := range relLink.FindAllStringSubmatch(text, -1) {
			target, anchor := m[1], strings.TrimPrefix(m[2], "#")
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path := filepath.Join(filepath.Dir(repoRoot+"/"+doc), target)
			if target == "" {
				path = repoRoot + "/" + doc
			}
			checkTarget(t, doc, path, anchor)
		}
	}
	project := regexp.MustCompile(regexp.QuoteMeta(projectURL) + `([^\s#)"'>]+)(#[\w-]+)?`)
	for _, file := range append(userDocs, "examples/prometheus/rules.yml", "examples/systemd/ipsec_exporter.service",
		"deploy/helm/ipsec-exporter/Chart.yaml", "dashboards/rules/settings.go") {
		text := readFile(t, repoRoot+"/"+file)
		for _, m := range project.FindAllStringSubmatch(text, -1) {
			checkTarget(t, file, repoRoot+"/"+m[1], strings.TrimPrefix(m[2], "#"))
		}
	}
}

func checkTarget(t *testing.T, from, path, anchor string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
			return // a directory link
		}
		t.Errorf("%s links %s: %v", from, strings.TrimPrefix(path, repoRoot+"/"), err)
		return
	}
	if anchor == "" || !strings.HasSuffix(path, ".md") {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok && githubAnchor(strings.TrimLeft(h, "# ")) == anchor {
			return
		}
	}
	t.Errorf("%s links %s#%s: no such heading", from, strings.TrimPrefix(path, repoRoot+"/"), anchor)
}

// githubAnchor is the anchor GitHub gives a heading: lower case, spaces to
// dashes, punctuation other than - and _ dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}
