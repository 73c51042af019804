package deploy_test

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// CI has no container daemon, so this test replays the Dockerfile's build
// stage on the host the way `docker buildx build --platform P` would run it
// for every platform of .promu.yml: a fresh directory holding only the
// build context (.dockerignore applied), the stage's ENV and ARG values
// with the platform arguments BuildKit sets, each RUN through /bin/sh. It
// then checks the final stage against what the build produced. It does not
// pull the base images.

type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

type stage struct {
	from, name   string
	platform     string // FROM --platform=..., unexpanded
	instructions []instruction
}

func parseDockerfile(t *testing.T, p string) (globalArgs map[string]string, stages []*stage) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	globalArgs = map[string]string{}
	var logical string
	scanner := bufio.NewScanner(f)
	var lines []string
	for scanner.Scan() {
		line := scanner.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if before, ok := strings.CutSuffix(line, "\\"); ok {
			logical += before
			continue
		}
		logical += line
		if strings.TrimSpace(logical) != "" {
			lines = append(lines, strings.TrimSpace(logical))
		}
		logical = ""
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	for _, line := range lines {
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			fields := strings.Fields(in.args)
			s := &stage{}
			if p, ok := strings.CutPrefix(fields[0], "--platform="); ok {
				s.platform, fields = p, fields[1:]
			}
			s.from = fields[0]
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
		case len(stages) == 0 && in.cmd == "ARG":
			name, value, _ := strings.Cut(in.args, "=")
			globalArgs[name] = value
		case len(stages) == 0:
			t.Fatalf("%s before the first FROM", in.cmd)
		default:
			stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
		}
	}
	return globalArgs, stages
}

// dockerignore returns a matcher with .dockerignore's semantics for the
// patterns used here: paths relative to the context root, a matched
// directory excludes everything in it.
func dockerignore(t *testing.T, root string) func(rel string) bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore exception %q: the replay does not implement them", line)
		}
		patterns = append(patterns, strings.Trim(path.Clean(line), "/"))
	}
	return func(rel string) bool {
		for _, p := range patterns {
			for prefix := rel; prefix != "."; prefix = path.Dir(prefix) {
				if ok, _ := path.Match(p, prefix); ok {
					return true
				}
				// "**/NAME": NAME at any depth (the only ** form used).
				if sub, ok := strings.CutPrefix(p, "**/"); ok {
					if ok, _ := path.Match(sub, path.Base(prefix)); ok {
						return true
					}
				}
			}
		}
		return false
	}
}

func copyContext(t *testing.T, root, dst string, srcs []string, ignored func(string) bool) {
	t.Helper()
	for _, src := range srcs {
		src = path.Clean(src)
		err := filepath.WalkDir(filepath.Join(root, src), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.ToSlash(rel)
			if rel != "." && ignored(rel) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			relToSrc, _ := filepath.Rel(filepath.Join(root, src), p)
			target := filepath.Join(dst, relToSrc)
			if src != "." && !d.IsDir() {
				target = filepath.Join(dst, filepath.Base(p))
			}
			if d.IsDir() {
				return os.MkdirAll(target, 0o755)
			}
			if !d.Type().IsRegular() {
				return nil
			}
			return copyFile(p, target)
		})
		if err != nil {
			t.Fatalf("COPY %s: %v", src, err)
		}
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

var argRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

func expandArgs(s string, vars map[string]string) string {
	return argRef.ReplaceAllStringFunc(s, func(m string) string {
		name := argRef.FindStringSubmatch(m)[1]
		if v, ok := vars[name]; ok {
			return v
		}
		return m
	})
}

func TestDockerfile(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the replayed build compiles the exporter")
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	globalArgs, stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}
	ignored := dockerignore(t, root)
	for _, must := range []string{".git", "ipsec_exporter", "deploy/x.test"} {
		if !ignored(must) {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}

	for _, platform := range readPromu(t).Crossbuild.Platforms {
		t.Run(strings.ReplaceAll(platform, "/", "_"), func(t *testing.T) {
			replayDockerfile(t, root, globalArgs, stages, ignored, platform)
		})
	}
}

// The ELF machine of each GOARCH the image is built for.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func replayDockerfile(t *testing.T, root string, globalArgs map[string]string, stages []*stage, ignored func(string) bool, platform string) {
	goos, goarch, _ := strings.Cut(platform, "/")
	// What BuildKit defines for every stage that declares them.
	buildArgs := map[string]string{
		"BUILDPLATFORM": runtime.GOOS + "/" + runtime.GOARCH, "TARGETPLATFORM": platform,
		"TARGETOS": goos, "TARGETARCH": goarch,
	}
	// Replay every stage but the last. "/" of each stage is a temp dir.
	stageRoots := map[string]string{}
	for _, s := range stages[:len(stages)-1] {
		if s.platform != "$BUILDPLATFORM" {
			t.Errorf("build stage %s runs on platform %q: want $BUILDPLATFORM (cross-compile, no emulation)", s.name, s.platform)
		}
		fsRoot := t.TempDir()
		stageRoots[s.name] = fsRoot
		workdir := "/"
		env := map[string]string{}
		args := map[string]string{}
		for _, in := range s.instructions {
			switch in.cmd {
			case "WORKDIR":
				workdir = path.Join(workdir, in.args)
				if err := os.MkdirAll(filepath.Join(fsRoot, workdir), 0o755); err != nil {
					t.Fatal(err)
				}
			case "ENV":
				for _, kv := range strings.Fields(in.args) {
					k, v, ok := strings.Cut(kv, "=")
					if !ok {
						t.Fatalf("ENV %q: use the KEY=value form", in.args)
					}
					env[k] = v
				}
			case "ARG":
				k, v, _ := strings.Cut(in.args, "=")
				if b, ok := buildArgs[k]; ok {
					v = b
				}
				args[k] = v
			case "COPY":
				fields := strings.Fields(in.args)
				if strings.HasPrefix(fields[0], "--") {
					t.Fatalf("COPY %s in a build stage: the replay copies only from the context", in.args)
				}
				dst := fields[len(fields)-1]
				if !path.IsAbs(dst) {
					dst = path.Join(workdir, dst)
				}
				copyContext(t, root, filepath.Join(fsRoot, dst), fields[:len(fields)-1], ignored)
			case "RUN":
				cmd := exec.Command("/bin/sh", "-c", in.args)
				cmd.Dir = filepath.Join(fsRoot, workdir)
				// The host's toolchain, module and build caches stand in for the
				// image's; everything the build reads comes from the context dir
				// or the module proxy (GOFLAGS=-mod=readonly: no vendor, and go.sum
				// must be complete).
				cmd.Env = append(os.Environ(), "GOFLAGS=")
				for k, v := range args {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
				for k, v := range env {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("RUN %s: %v\n%s", in.args, err, out)
				} else {
					t.Logf("RUN %.60s...: ok\n%s", in.args, out)
				}
			default:
				t.Fatalf("%s in a build stage: the replay does not implement it", in.cmd)
			}
		}
		if env["CGO_ENABLED"] != "0" {
			t.Errorf("build stage %s does not set CGO_ENABLED=0: the image has no libc", s.name)
		}
	}

	final := stages[len(stages)-1]
	base := expandArgs(final.from, globalArgs)
	if !strings.Contains(base, "distroless/static") && !strings.Contains(base, "busybox") && base != "scratch" {
		t.Errorf("final base image %q: want a minimal one (distroless static, busybox, scratch)", base)
	}
	var entrypoint []string
	var user, exposed, copiedTo string
	for _, in := range final.instructions {
		switch in.cmd {
		case "COPY":
			fields := strings.Fields(in.args)
			from, ok := strings.CutPrefix(fields[0], "--from=")
			if !ok || len(fields) != 3 {
				t.Fatalf("final stage COPY %q: want COPY --from=STAGE SRC DST", in.args)
			}
			built := filepath.Join(stageRoots[from], fields[1])
			checkStatic(t, built, elfMachine[goarch])
			copiedTo = fields[2]
		case "USER":
			user = in.args
		case "EXPOSE":
			exposed = in.args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s: use the exec (JSON) form so signals reach the exporter: %v", in.args, err)
			}
		}
	}
	if len(entrypoint) == 0 || entrypoint[0] != copiedTo {
		t.Errorf("ENTRYPOINT %v does not run the copied binary %s", entrypoint, copiedTo)
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: the image must default to a non-root user", user)
	}
	if exposed != "10871" || !strings.Contains(helpText(t), "--web.listen-address=:10871") {
		t.Errorf("EXPOSE %q does not match the exporter's default port 10871", exposed)
	}
}

// checkStatic fails unless path is a statically linked ELF executable for
// the machine.
func checkStatic(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("built binary: %v", err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is built for %v, want %v", path, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v: not static", path, libs)
	}
}

func helpText(t *testing.T) string {
	t.Helper()
	_, out := runExporter(t, "--help")
	return out
}
