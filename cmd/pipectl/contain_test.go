package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// Values pipectl holds in its environment that no child and no record may show.
const (
	providerKey = "sk-provider-7c1d2e3f4a5b"
	awsSecret   = "aws-secret-0a9b8c7d6e5f"
)

// peakRSS is the largest resident set a finished child process reached, in bytes.
func peakRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024 // kilobytes on Linux
	}
	return 0
}

// assertNoSecrets fails when any value pipectl holds appears in the ledger files or in texts.
func assertNoSecrets(t *testing.T, dir string, texts ...string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "ledger.db*"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		texts = append(texts, string(data))
	}
	for i, text := range texts {
		for _, s := range []string{testSecret, providerKey, awsSecret} {
			if strings.Contains(text, s) {
				t.Fatalf("text %d (of %d; ledger files come last) holds %q", i, len(texts), s)
			}
		}
	}
}

const snoopSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: snoop
inputs: {type: object}
secrets: [TARGET_TOKEN]
steps:
  - id: snoop
    type: exec
    env: {STEP_VAR: declared}
    command: [./snoop.sh]
`

const snoopScript = `echo "environ:"
tr "\0" "\n" < /proc/$PPID/environ
echo "env:"
env
`

// writeScript writes an executable shell script: exec steps refuse sh -c.
func writeScript(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestExecChildCannotReadParentEnviron runs pipectl with a secret, a provider key and an
// unrelated credential in its environment, and a step whose child dumps its own environment
// and tries to read its parent's /proc/PID/environ. The child's environment holds only what
// the step declared, PATH, HOME, locale and PIPECTL_*; the parent's environ is unreadable.
//
// Root may read any process's environ whatever its dumpable flag, so the attack on
// /proc/$PPID/environ is run with pipectl and its child as the unprivileged user nobody.
func TestExecChildCannotReadParentEnviron(t *testing.T) {
	for _, asNobody := range []bool{false, true} {
		t.Run(fmt.Sprintf("as_nobody=%v", asNobody), func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, snoopSpec)
			cmd := c.command("run", c.spec, "--input", "{}")
			cmd.Env = append(cmd.Env, "OPENAI_API_KEY="+providerKey, "AWS_SECRET_ACCESS_KEY="+awsSecret, "LC_TIME=C", "HOME="+c.dir)
			if asNobody {
				cmd = asUser(t, c, "nobody", cmd.Env, "run", "SPEC", "--input", "{}")
			}
			writeScript(t, c.dir, "snoop.sh", snoopScript)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			show, err := c.command("runs", "show", c.runsJSON()[0]["id"].(string), "--format", "json").Output()
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Attempts []struct {
					Output struct{ Stdout, Stderr string }
				}
			}
			if err := json.Unmarshal(show, &doc); err != nil || len(doc.Attempts) != 1 {
				t.Fatalf("runs show: %v\n%s", err, show)
			}
			out := doc.Attempts[0].Output.Stdout + doc.Attempts[0].Output.Stderr
			for _, want := range []string{"environ:", "\nenv:\n", "STEP_VAR=declared", "PIPECTL_RUN_ID=", "PIPECTL_IDEMPOTENCY_KEY=", "PATH=", "LC_TIME=C"} {
				if !strings.Contains(out, want) {
					t.Fatalf("the child's output lacks %q:\n%s", want, out)
				}
			}
			env := out[strings.Index(out, "\nenv:\n"):]
			for _, leaked := range []string{"TARGET_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "PIPECTL_LEDGER"} {
				if strings.Contains(env, leaked) {
					t.Fatalf("the child inherited %s:\n%s", leaked, env)
				}
			}
			if asNobody {
				if !strings.Contains(out, "Permission denied") {
					t.Fatalf("the child was not refused its parent's environ:\n%s", out)
				}
				assertNoSecrets(t, c.dir, stdout.String(), stderr.String(), string(show))
			}
		})
	}
}

// asUser moves the test's folder to one the named user owns, with a copy of the binary it can
// run, and returns the command line args run as that user. It skips the test when the user does
// not exist or this process cannot switch to it.
func asUser(t *testing.T, c *cli, name string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil || os.Geteuid() != 0 {
		t.Skipf("needs root and a user %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// t.TempDir's parents are private to root: give the user a folder of its own.
	dir, err := os.MkdirTemp("", "pipectl-"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "pipectl")
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, _ := os.ReadFile(c.spec)
	c.dir, c.spec, c.ledger = dir, filepath.Join(dir, "pipeline.yaml"), "sqlite:"+filepath.Join(dir, "ledger.db")
	if err := os.WriteFile(c.spec, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	for i, a := range args {
		if a == "SPEC" {
			args[i] = c.spec
		}
	}
	cmd := exec.Command(bin, append([]string{"--ledger", c.ledger}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(env, "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return cmd
}

const orphanSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: orphan
inputs: {type: object}
defaults:
  timeout: 2m
steps:
  - id: work
    type: exec
    command: [./work.sh]
`

// orphanScript: the first copy leaves a grandchild in its process group and waits; a second
// copy reports whether the first one's grandchild still ran when it started.
const orphanScript = `if [ -e kid ]; then
  s=$(cut -d" " -f3 /proc/$(cat kid)/stat 2>/dev/null)
  echo "${s:-gone}" > seen
  exit 0
fi
echo $$ > leader
sleep 300 &
echo $! > kid
wait
`

// TestExecChildDiesWithPipectl kills pipectl with SIGKILL while its exec step runs a child
// that started a grandchild. The child dies with pipectl (parent-death signal); the grandchild,
// which the kernel does not signal, is killed by the takeover before the resumed run starts
// the step again, so two copies never run side by side.
func TestExecChildDiesWithPipectl(t *testing.T) {
	t.Parallel()
	c := newCLI(t, orphanSpec)
	writeScript(t, c.dir, "work.sh", orphanScript)
	first := c.command("run", c.spec, "--input", "{}")
	var out bytes.Buffer
	first.Stdout, first.Stderr = &out, &out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	leader, kid := waitPID(t, filepath.Join(c.dir, "leader")), waitPID(t, filepath.Join(c.dir, "kid"))
	// The record of the running child is written right after it starts, while the script
	// already runs: on a loaded machine the script can get here first. The kill is meant to
	// land once the record exists (the window before it is covered by the parent-death signal).
	if !eventually(func() bool { files, _ := filepath.Glob(filepath.Join(c.dir, "children", "*")); return len(files) > 0 }) {
		t.Fatalf("no child record was written\n%s", out.String())
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	if !eventually(func() bool { return !running(leader) }) {
		t.Fatalf("the child %d outlived pipectl's SIGKILL\n%s", leader, out.String())
	}
	if !running(kid) {
		t.Fatalf("the grandchild %d died with pipectl: the takeover path is not exercised", kid)
	}
	second := c.command("run", c.spec, "--input", "{}")
	if b, err := second.CombinedOutput(); err != nil {
		t.Fatalf("resume: %v\n%s", err, b)
	}
	seen, err := os.ReadFile(filepath.Join(c.dir, "seen"))
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(string(seen)); s != "gone" && s != "Z" {
		t.Fatalf("the step ran again while the first copy's grandchild was in state %q", s)
	}
	if running(kid) {
		t.Fatalf("the grandchild %d still runs after the resumed run ended", kid)
	}
	if files, _ := filepath.Glob(filepath.Join(c.dir, "children", "*")); len(files) != 0 {
		t.Fatalf("child records left behind: %v", files)
	}
}

// waitPID waits for a file holding a pid.
func waitPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	if !eventually(func() bool {
		b, err := os.ReadFile(path)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	}) {
		t.Fatalf("%s was not written", path)
	}
	return pid
}

func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// running reports whether a process exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestExecOutputCap: a child that writes far more than the cap is streamed into a capped
// buffer; text output is kept cut with a marker, JSON output fails the step permanently.
func TestExecOutputCap(t *testing.T) {
	for _, tc := range []struct {
		output string
		code   int
		want   string
	}{
		{"text", 0, "more bytes not kept"},
		{"json", 1, "over the 1048576-byte cap"},
	} {
		t.Run(tc.output, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, fmt.Sprintf(`apiVersion: pipectl/v1
kind: Pipeline
name: flood
inputs: {type: object}
steps:
  - id: flood
    type: exec
    output: %s
    command: [./flood.sh]
`, tc.output))
			writeScript(t, c.dir, "flood.sh", `printf "["; head -c 50000000 /dev/zero | tr "\0" "1"; printf "]"`)
			cmd := c.command("run", c.spec, "--input", "{}")
			out, err := cmd.CombinedOutput()
			if code := exitCodeOf(err); code != tc.code {
				t.Fatalf("exit %d, want %d\n%.2000s", code, tc.code, out)
			}
			if rss := peakRSS(cmd.ProcessState); rss > 256<<20 {
				t.Fatalf("peak RSS %d MB for 50 MB of output", rss>>20)
			}
			show, err := c.command("runs", "show", c.runsJSON()[0]["id"].(string), "--format", "json").Output()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(show), tc.want) {
				t.Fatalf("%q not in the run:\n%.3000s", tc.want, show)
			}
			if len(show) > 3<<20 {
				t.Fatalf("runs show printed %d bytes", len(show))
			}
		})
	}
}

// TestInputCap: --input and --data over the cap exit 2 with a clear message before anything
// is written; the cap is the same for a file, stdin and inline JSON, and can be set by a flag
// or in pipectl.yaml.
func TestInputCap(t *testing.T) {
	big := `{"pad": "` + strings.Repeat("x", DefaultMaxInputBytes) + `"}`
	for _, tc := range []struct {
		name   string
		input  string // written to a file, unless stdin
		stdin  bool
		flag   string
		config string
		code   int
	}{
		{name: "file over the default", input: big, code: 2},
		{name: "stdin over the default", input: big, stdin: true, code: 2},
		{name: "file over the flag", input: `{"pad": "` + strings.Repeat("x", 200) + `"}`, flag: "100", code: 2},
		{name: "file over the config", input: `{"pad": "` + strings.Repeat("x", 200) + `"}`, config: "limits: {max_input_bytes: 100}\n", code: 2},
		{name: "the flag wins over the config", input: `{"pad": "` + strings.Repeat("x", 200) + `"}`, flag: "1000", config: "limits: {max_input_bytes: 100}\n", code: 0},
		{name: "under the cap", input: `{"pad": "x"}`, code: 0},
		{name: "negative flag", input: `{"pad": "x"}`, flag: "-1", code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, `apiVersion: pipectl/v1
kind: Pipeline
name: capped
inputs: {type: object}
steps:
  - {id: echo, type: transform, output: "${{ size(inputs.pad) }}"}
`)
			args := []string{"run", c.spec, "--input", "-"}
			if !tc.stdin {
				args[3] = writeFile(t, c.dir, "input.json", tc.input)
			}
			if tc.flag != "" {
				args = append(args, "--max-input-bytes", tc.flag)
			}
			if tc.config != "" {
				writeFile(t, c.dir, "pipectl.yaml", tc.config)
			}
			cmd := c.command(args...)
			if tc.stdin {
				cmd.Stdin = strings.NewReader(tc.input)
			}
			out, err := cmd.CombinedOutput()
			if code := exitCodeOf(err); code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, out)
			}
			if tc.code != 2 {
				return
			}
			if !strings.Contains(string(out), "must not be negative") && !strings.Contains(string(out), "is larger than") {
				t.Fatalf("no clear message:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(c.dir, "ledger.db")); err == nil {
				t.Fatal("a refused input created the ledger")
			}
		})
	}
}

// TestSignalDataCap: a wait payload goes through the same cap.
func TestSignalDataCap(t *testing.T) {
	c := newCLI(t, "")
	big := writeFile(t, c.dir, "data.json", `{"pad": "`+strings.Repeat("x", 200)+`"}`)
	out, err := c.command("signal", "run-x", "wait", "--data", big, "--max-input-bytes", "100").CombinedOutput()
	if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), "is larger than 100 bytes") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// TestModelAnswerFlood: a provider that streams a 50 MB answer is cut off as the body is read:
// the step fails permanently without a re-ask, and pipectl's memory stays bounded.
func TestModelAnswerFlood(t *testing.T) {
	t.Parallel()
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Reply{Flood: 50 << 20}, llmtest.Answer(good))
	target := newApplyTarget(t)
	c := newCLI(t, triageSpec)
	c.useTarget(target.URL)
	cmd := c.command("run", c.spec, "--input", fmt.Sprintf(`{"id": "T-1", "url": %q}`, target.URL))
	cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY="+providerKey)
	out, err := cmd.CombinedOutput()
	if code := exitCodeOf(err); code != 1 {
		t.Fatalf("exit %d, want 1\n%.2000s", code, out)
	}
	if rss := peakRSS(cmd.ProcessState); rss > 256<<20 {
		t.Fatalf("peak RSS %d MB for a 50 MB answer", rss>>20)
	}
	doc := showRun(t, c)
	if doc.Run.State != "failed_permanent" || !strings.Contains(doc.Run.Error, "over the size limit") {
		t.Fatalf("state %s, error %q", doc.Run.State, doc.Run.Error)
	}
	if n := len(model.Requests()); n != 1 {
		t.Fatalf("%d model calls; a flood must not be asked again", n)
	}
	assertNoSecrets(t, c.dir, string(out))
}

// TestHTTPBodyFlood: an http step whose target streams 50 MB fails permanently with bounded
// memory.
func TestHTTPBodyFlood(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("b"), 64<<10)
		for i := 0; i < 800; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c := newCLI(t, `apiVersion: pipectl/v1
kind: Pipeline
name: fetch
inputs: {type: object}
steps:
  - {id: get, type: http, method: GET, url: "`+srv.URL+`/big"}
`)
	cmd := c.command("run", c.spec, "--input", "{}")
	out, err := cmd.CombinedOutput()
	if code := exitCodeOf(err); code != 1 {
		t.Fatalf("exit %d, want 1\n%.2000s", code, out)
	}
	if rss := peakRSS(cmd.ProcessState); rss > 256<<20 {
		t.Fatalf("peak RSS %d MB for a 50 MB body", rss>>20)
	}
	if !strings.Contains(string(out), "response body larger than") {
		t.Fatalf("no clear error:\n%.2000s", out)
	}
}

// TestExpressionBlowUp: expressions that would build gigabytes from a 1 MB input are stopped
// before they allocate, fail the step permanently, and leave pipectl's memory bounded.
func TestExpressionBlowUp(t *testing.T) {
	for _, expr := range []string{
		`lists.range(100000).map(x, inputs.s).join('')`,
		`[inputs.s].map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a)`,
		`inputs.s.replace('a', inputs.s)`,
		`lists.range(100000).map(x, inputs.s)`,
	} {
		t.Run(expr[:20], func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, `apiVersion: pipectl/v1
kind: Pipeline
name: blowup
inputs: {type: object, properties: {s: {type: string}}}
steps:
  - {id: grow, type: transform, output: "${{ `+expr+` }}"}
`)
			input := writeFile(t, c.dir, "input.json", `{"s": "`+strings.Repeat("a", 1<<20)+`"}`)
			cmd := c.command("run", c.spec, "--input", input)
			out, err := cmd.CombinedOutput()
			if code := exitCodeOf(err); code != 1 {
				t.Fatalf("exit %d, want 1\n%.2000s", code, out)
			}
			if rss := peakRSS(cmd.ProcessState); rss > 256<<20 {
				t.Fatalf("peak RSS %d MB", rss>>20)
			}
			doc := showRun(t, c)
			if doc.Run.State != "failed_permanent" || !strings.Contains(doc.Run.Error, "an expression may build at most") {
				t.Fatalf("state %s, error %q", doc.Run.State, doc.Run.Error)
			}
		})
	}
}

// sparseFile makes a file of n zero bytes without writing them.
func sparseFile(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(n); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestFileCaps: a schema file behind $ref and pipectl.yaml over their caps are refused with
// the file named, before anything is run or written.
func TestFileCaps(t *testing.T) {
	t.Run("schema file", func(t *testing.T) {
		t.Parallel()
		c := newCLI(t, `apiVersion: pipectl/v1
kind: Pipeline
name: big-schema
inputs: {$ref: big.json}
steps:
  - {id: t, type: transform, output: 1}
`)
		sparseFile(t, filepath.Join(c.dir, "big.json"), 4<<20+1)
		out, err := c.command("validate", c.spec).CombinedOutput()
		if code := exitCodeOf(err); code != 1 || !strings.Contains(string(out), "larger than") || !strings.Contains(string(out), "pipeline.yaml") {
			t.Fatalf("exit %d\n%s", code, out)
		}
	})
	t.Run("pipectl.yaml", func(t *testing.T) {
		t.Parallel()
		c := newCLI(t, `apiVersion: pipectl/v1
kind: Pipeline
name: small
inputs: {type: object}
steps:
  - {id: t, type: transform, output: 1}
`)
		sparseFile(t, filepath.Join(c.dir, "pipectl.yaml"), 1<<20+1)
		out, err := c.command("run", c.spec, "--input", "{}").CombinedOutput()
		if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), "pipectl.yaml is larger than") {
			t.Fatalf("exit %d\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(c.dir, "ledger.db")); err == nil {
			t.Fatal("the ledger was created")
		}
	})
}
