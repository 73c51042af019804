package deploy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

const deployDoc = repoRoot + "/docs/deploy.md"

// TestDeployDoc keeps docs/deploy.md in step with the files it describes:
// the web config it quotes, the password, the capabilities, and every
// repository path it names.
func TestDeployDoc(t *testing.T) {
	raw, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)

	example, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var config []string
	for _, line := range strings.Split(string(example), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			config = append(config, line)
		}
	}
	if !strings.Contains(doc, "```yaml\n"+strings.Join(config, "\n")+"\n```") {
		t.Errorf("docs/deploy.md does not quote %s as it is:\n%s", exampleConfig, strings.Join(config, "\n"))
	}
	if !strings.Contains(doc, examplePassword) {
		t.Error("docs/deploy.md does not give the example password")
	}
	if !strings.Contains(doc, strings.Join(neededCaps, " ")) {
		t.Errorf("docs/deploy.md does not name the capabilities %v", neededCaps)
	}

	// Paths in backquotes that look like repository files must exist.
	for _, m := range regexp.MustCompile("`((?:examples|deploy|docs|dashboards)/[^` ]+|Dockerfile|\\.promu\\.yml|VERSION)`").FindAllStringSubmatch(doc, -1) {
		path := m[1]
		if strings.ContainsAny(path, "*<") {
			continue // a pattern, not a file
		}
		if _, err := os.Stat(repoRoot + "/" + path); err != nil {
			t.Errorf("docs/deploy.md names %s: %v", path, err)
		}
	}
}
