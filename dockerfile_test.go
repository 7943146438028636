package sluice_test

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfileBuildStage replays the Dockerfile's build stage without
// Docker (no engine runs here): in an empty folder, each COPY brings in
// exactly what it names from the build context (less .dockerignore), each
// RUN runs there with the stage's ARGs and ENVs, and absolute paths are
// taken under the folder. It fails when a step could not succeed in a real
// build, as `go mod download` did before third_party/ (which go.mod's
// replace needs) was copied in; then it checks the files the final stage
// copies from the build stage were made.
func TestDockerfileBuildStage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sluice")
	}
	stages := parseDockerfile(t, "Dockerfile")
	build, ok := stages["build"]
	if !ok {
		t.Fatal(`Dockerfile has no stage "AS build"`)
	}
	checkGoVersion(t, build.from)
	ignore := readDockerignore(t)
	root := t.TempDir()
	under := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	workdir := "/"
	env := append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=")
	abs := regexp.MustCompile(`(^|[\s=])(/[A-Za-z0-9_.\-/]*)`)
	for _, in := range build.steps {
		switch in.cmd {
		case "WORKDIR":
			workdir = path.Join(workdir, in.args)
			if err := os.MkdirAll(under(workdir), 0o755); err != nil {
				t.Fatal(err)
			}
		case "ARG", "ENV":
			name, value, _ := strings.Cut(in.args, "=")
			env = append(env, strings.TrimSpace(name)+"="+strings.Trim(strings.TrimSpace(value), `"`))
		case "COPY":
			args := strings.Fields(in.args)
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				if strings.HasPrefix(args[0], "--from") {
					t.Fatalf("line %d: the build stage copies from another stage", in.line)
				}
				args = args[1:]
			}
			if len(args) < 2 {
				t.Fatalf("line %d: COPY %s", in.line, in.args)
			}
			dest := path.Join(workdir, args[len(args)-1])
			intoDir := strings.HasSuffix(args[len(args)-1], "/") || args[len(args)-1] == "." || len(args) > 2
			for _, src := range args[:len(args)-1] {
				copyIn(t, path.Clean(src), under(dest), intoDir, ignore)
			}
		case "RUN":
			script := abs.ReplaceAllString(in.args, "${1}"+filepath.ToSlash(root)+"${2}")
			cmd := exec.Command("sh", "-c", script)
			cmd.Dir = under(workdir)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("Dockerfile:%d: RUN %s: %v\n%s", in.line, in.args, err, out)
			}
		case "FROM", "LABEL", "EXPOSE", "USER", "VOLUME", "ENTRYPOINT", "CMD", "SHELL":
		default:
			t.Fatalf("Dockerfile:%d: this test does not know how to replay %s", in.line, in.cmd)
		}
	}
	// What the other stages take from this one must exist.
	copied := regexp.MustCompile(`--from=build\s+(?:--\S+\s+)*(\S+)`)
	for name, st := range stages {
		for _, in := range st.steps {
			if m := copied.FindStringSubmatch(in.cmd + " " + in.args); in.cmd == "COPY" && m != nil {
				if _, err := os.Stat(under(m[1])); err != nil {
					t.Errorf("stage %s, Dockerfile:%d copies %s from the build stage, which did not make it: %v", name, in.line, m[1], err)
				}
			}
		}
	}
}

type dockerStep struct {
	line      int
	cmd, args string
}

type dockerStage struct {
	from  string
	steps []dockerStep
}

// parseDockerfile returns the stages of a Dockerfile by name (unnamed ones
// by index), joining continued lines and dropping comments.
func parseDockerfile(t *testing.T, file string) map[string]*dockerStage {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := map[string]*dockerStage{}
	var cur *dockerStage
	sc := bufio.NewScanner(f)
	var text string
	start, n := 0, 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if text == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if text == "" {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			text += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		text += line
		cmd, args, _ := strings.Cut(text, " ")
		text = ""
		step := dockerStep{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if step.cmd == "FROM" {
			f := strings.Fields(step.args)
			cur = &dockerStage{from: f[0]}
			name := string(rune('0' + len(stages)))
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				name = f[2]
			}
			stages[name] = cur
		}
		if cur == nil {
			t.Fatalf("%s:%d: %s before FROM", file, start, step.cmd)
		}
		cur.steps = append(cur.steps, step)
	}
	return stages
}

// checkGoVersion checks the build image's Go is at least go.mod's.
func checkGoVersion(t *testing.T, image string) {
	t.Helper()
	m := regexp.MustCompile(`^golang:(\d+)\.(\d+)`).FindStringSubmatch(image)
	if m == nil {
		t.Fatalf("build stage FROM %s: want a golang:X.Y image", image)
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindStringSubmatch(string(mod))
	if want == nil {
		t.Fatal("go.mod has no go directive")
	}
	if atoi(m[1])*1000+atoi(m[2]) < atoi(want[1])*1000+atoi(want[2]) {
		t.Errorf("build stage FROM %s; go.mod wants go %s.%s", image, want[1], want[2])
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// readDockerignore returns the .dockerignore patterns (this test knows
// plain patterns and globs, not exceptions).
func readDockerignore(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(".dockerignore")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "!") {
			t.Fatalf(".dockerignore: this test does not know exceptions (%s)", l)
		}
		pats = append(pats, path.Clean(strings.TrimPrefix(l, "/")))
	}
	return pats
}

func ignored(rel string, pats []string) bool {
	for _, p := range pats {
		for q := rel; q != "." && q != "/"; q = path.Dir(q) {
			if ok, _ := path.Match(p, q); ok {
				return true
			}
		}
	}
	return false
}

// copyIn does what COPY does with src (relative to the build context): a
// folder's contents go into dest, a file to dest or, with intoDir, into it.
func copyIn(t *testing.T, src, dest string, intoDir bool, ignore []string) {
	t.Helper()
	info, err := os.Stat(src)
	if err != nil {
		t.Fatalf("COPY %s: not in the build context: %v", src, err)
	}
	if !info.IsDir() {
		if intoDir {
			dest = filepath.Join(dest, path.Base(src))
		}
		copyFile(t, src, dest)
		return
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(p)
		if rel != "." && ignored(rel, ignore) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		inner, _ := filepath.Rel(src, p)
		target := filepath.Join(dest, inner)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Type().IsRegular() {
			copyFile(t, p, target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dest string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(src)
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dest, data, info.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}
