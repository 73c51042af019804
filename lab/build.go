package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// TestPackage is a Go package with VM tests (a func TestLab... in its tests).
type TestPackage struct {
	ImportPath string
	Dir        string // host directory
	Rel        string // directory relative to the module root
	Binary     string // host path of the compiled test binary
}

var testLabFunc = regexp.MustCompile(`(?m)^func TestLab`)

// FindTestPackages lists the packages matched by pattern (as for go list)
// whose _test.go files contain a func TestLab.
func FindTestPackages(root, pattern string) ([]TestPackage, error) {
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Dir,TestGoFiles,XTestGoFiles", pattern)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %w\n%s", pattern, err, stderr.String())
	}
	var pkgs []TestPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath, Dir           string
			TestGoFiles, XTestGoFiles []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list: %w", err)
		}
		for _, f := range append(p.TestGoFiles, p.XTestGoFiles...) {
			src, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				return nil, err
			}
			if testLabFunc.Match(src) {
				rel, err := filepath.Rel(root, p.Dir)
				if err != nil {
					return nil, err
				}
				pkgs = append(pkgs, TestPackage{ImportPath: p.ImportPath, Dir: p.Dir, Rel: rel})
				break
			}
		}
	}
	return pkgs, nil
}

// goBuildEnv builds static linux binaries of the architecture, whatever
// the host.
func goBuildEnv(a Arch) []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+a.Name)
}

// BuildTests compiles each package's test binary for the architecture into
// dir.
func BuildTests(root, dir string, pkgs []TestPackage, a Arch) error {
	for i := range pkgs {
		name := strings.ReplaceAll(pkgs[i].Rel, string(filepath.Separator), "_")
		if name == "." {
			name = "root"
		}
		pkgs[i].Binary = filepath.Join(dir, name+".test")
		cmd := exec.Command("go", "test", "-c", "-o", pkgs[i].Binary, "./"+pkgs[i].Rel)
		cmd.Dir = root
		cmd.Env = goBuildEnv(a)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go test -c %s: %w\n%s", pkgs[i].ImportPath, err, out)
		}
	}
	return nil
}

// BuildBinary builds the main package at pkg (relative to root) into out,
// for amd64.
func BuildBinary(root, pkg, out string) error {
	return BuildArchBinary(root, pkg, out, Amd64)
}

// BuildArchBinary builds the main package at pkg (relative to root) into
// out, for the architecture.
func BuildArchBinary(root, pkg, out string, a Arch) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = goBuildEnv(a)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// ModuleRoot is the directory of the main module (the repo root).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
