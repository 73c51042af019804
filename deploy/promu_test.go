package deploy_test

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// promuConfig is the part of .promu.yml the tests use. Decoded strictly, so
// a misspelled key there fails TestPromuConfig.
type promuConfig struct {
	Go struct {
		Version string `yaml:"version"`
		CGO     bool   `yaml:"cgo"`
	} `yaml:"go"`
	Repository struct {
		Path string `yaml:"path"`
	} `yaml:"repository"`
	Build struct {
		Binaries []struct {
			Name string `yaml:"name"`
		} `yaml:"binaries"`
		Flags   string `yaml:"flags"`
		LDFlags string `yaml:"ldflags"`
	} `yaml:"build"`
	Tarball struct {
		Files []string `yaml:"files"`
	} `yaml:"tarball"`
	Crossbuild struct {
		Platforms []string `yaml:"platforms"`
	} `yaml:"crossbuild"`
}

func readPromu(t testing.TB) promuConfig {
	t.Helper()
	raw, err := os.ReadFile(repoRoot + "/.promu.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c promuConfig
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatalf(".promu.yml: %v", err)
	}
	return c
}

// promuLdflags renders .promu.yml's ldflags with testLdflags' values, as
// promu would with the real ones. A template it does not know is an error,
// so a new template in .promu.yml shows up here.
func promuLdflags() (string, error) {
	raw, err := os.ReadFile(repoRoot + "/.promu.yml")
	if err != nil {
		return "", err
	}
	var c promuConfig
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return "", fmt.Errorf(".promu.yml: %w", err)
	}
	flags := c.Build.LDFlags
	for tmpl, value := range testLdflags {
		flags = strings.ReplaceAll(flags, tmpl, value)
	}
	if strings.Contains(flags, "{{") {
		return "", fmt.Errorf("unknown template in .promu.yml ldflags: %s", flags)
	}
	return strings.Join(strings.Fields(flags), " "), nil
}

func TestPromuConfig(t *testing.T) {
	c := readPromu(t)
	goMod, err := os.ReadFile(repoRoot + "/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	var module, goLine string
	for _, line := range strings.Split(string(goMod), "\n") {
		if v, ok := strings.CutPrefix(line, "module "); ok {
			module = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "go "); ok {
			goLine = strings.TrimSpace(v)
		}
	}
	if c.Repository.Path != module {
		t.Errorf("repository.path = %q, go.mod module is %q", c.Repository.Path, module)
	}
	if !strings.HasPrefix(goLine+".", c.Go.Version+".") {
		t.Errorf("go.version = %q does not match go.mod's go %s", c.Go.Version, goLine)
	}
	if c.Go.CGO {
		t.Error("go.cgo must be false: the binary is static so it runs on any node and in a distroless image")
	}
	if len(c.Build.Binaries) != 1 || c.Build.Binaries[0].Name != "ipsec_exporter" {
		t.Errorf("build.binaries = %+v, want one named ipsec_exporter", c.Build.Binaries)
	}
	for _, v := range []string{"Version", "Revision", "Branch", "BuildUser", "BuildDate"} {
		if !strings.Contains(c.Build.LDFlags, "github.com/prometheus/common/version."+v+"=") {
			t.Errorf("ldflags do not set version.%s", v)
		}
	}
	for _, f := range c.Tarball.Files {
		if _, err := os.Stat(repoRoot + "/" + f); err != nil {
			t.Errorf("tarball file: %v", err)
		}
	}
	if _, err := os.Stat(repoRoot + "/VERSION"); err != nil {
		t.Errorf("promu reads the version from VERSION: %v", err)
	}
	for _, want := range []string{"linux/amd64", "linux/arm64"} {
		if !slices.Contains(c.Crossbuild.Platforms, want) {
			t.Errorf("crossbuild platforms %v lack %s", c.Crossbuild.Platforms, want)
		}
	}
	for _, p := range c.Crossbuild.Platforms {
		if !strings.HasPrefix(p, "linux/") {
			t.Errorf("crossbuild platform %q: XFRM and BPF exist only on Linux", p)
		}
	}
}

// TestCrossbuild compiles every platform promu would build, so a BPF object
// generated for one architecture only shows up here and not in a release.
func TestCrossbuild(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: cross-compiling takes a while")
	}
	for _, p := range readPromu(t).Crossbuild.Platforms {
		goos, goarch, _ := strings.Cut(p, "/")
		if goos == runtime.GOOS && goarch == runtime.GOARCH {
			continue // the other tests build and run this one
		}
		t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
			ldflags, err := promuLdflags()
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir() + "/ipsec_exporter"
			if err := goBuild(out, ldflags, []string{"GOOS=" + goos, "GOARCH=" + goarch}); err != nil {
				t.Fatal(err)
			}
			checkStatic(t, out, elfMachine[goarch])
		})
	}
}

func TestVersionFlag(t *testing.T) {
	code, out := runExporter(t, "--version")
	if code != 0 {
		t.Fatalf("--version exited %d:\n%s", code, out)
	}
	if !strings.Contains(out, "ipsec_exporter, version ") || !strings.Contains(out, "go version:") {
		t.Errorf("--version output is not the build info:\n%s", out)
	}
	if os.Getenv("IPSEC_EXPORTER_BIN") != "" {
		return // a given binary carries its own build info
	}
	// The values .promu.yml's ldflags put in at build time come out.
	for _, want := range []string{
		"ipsec_exporter, version " + testLdflags["{{.Version}}"],
		"branch: " + testLdflags["{{.Branch}}"],
		"revision: " + testLdflags["{{.Revision}}"],
		"build user:       tester@testhost",
		"build date:       20260101-00:00:00",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--version output lacks %q:\n%s", want, out)
		}
	}
}

func TestBadFlag(t *testing.T) {
	code, out := runExporter(t, "--web.listen-adress=:1") //nolint:misspell // the misspelled flag is the test
	if code != 2 {
		t.Errorf("a misspelled flag exited %d, want 2", code)
	}
	if !strings.Contains(out, "web.listen-adress") { //nolint:misspell // the flag the test misspelled
		t.Errorf("error does not name the bad flag:\n%s", out)
	}
	if strings.Contains(out, "starting ipsec_exporter") {
		t.Errorf("the exporter started despite a bad flag:\n%s", out)
	}
}
