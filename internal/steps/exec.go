package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// DefaultMaxOutput bounds the stdout and the stderr kept from a child process, each.
const DefaultMaxOutput = 1 << 20

// inheritedEnv is the part of pipectl's own environment a child sees, besides the locale
// variables (LC_*). The rest, including every variable that holds a secret or a provider key,
// is not passed on: a step names what it needs in env.
var inheritedEnv = []string{"PATH", "HOME", "LANG", "LANGUAGE"}

// Exec runs one child process per attempt, directly from an argv list, in its own process
// group so that a timeout, a cancellation or the death of pipectl kills everything it started.
type Exec struct {
	// KillGrace is how long a child may take to exit after its group was killed.
	KillGrace time.Duration
	// MaxOutput caps stdout and stderr, each; 0 means DefaultMaxOutput. The child's output is
	// streamed into a buffer of that size and the rest is counted, never held.
	MaxOutput int
	// ChildDir holds one record per running child (its process group and start time), so that
	// the next owner of a run on this host can make sure a child of a dead owner is gone before
	// the step runs again. Empty: no records (other hosts, tests of one process).
	ChildDir string
}

var _ domain.StepExecutor = Exec{}

type execRequest struct {
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir"`
	Stdin   string            `json:"stdin,omitempty"`
	// env is what the child gets; Env, what the ledger records, shows values computed from
	// secrets as ***.
	env map[string]string
}

// Execute runs the guard, then the command.
func (e Exec) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	spec := call.Step.Exec
	workdir := call.Workdir
	if spec.Workdir != "" {
		w, err := renderText(call, spec.Workdir, "workdir")
		if err != nil {
			return domain.StepResult{}, err
		}
		if !filepath.IsAbs(w) {
			w = filepath.Join(call.Workdir, w)
		}
		workdir = w
	}
	if g := spec.Guard; g != nil && !call.Offline {
		probe, err := e.render(call, g.Command, g.Env, nil, workdir)
		if err != nil {
			return domain.StepResult{}, err
		}
		var dropped int
		res, err := e.run(ctx, call, probe, &dropped)
		if err != nil && res == nil {
			return domain.StepResult{Request: probe}, fmt.Errorf("guard: %w", err)
		}
		if res["exit_code"] == int64(0) {
			return domain.StepResult{Output: res, Outcome: domain.OutcomeGuarded, Request: probe, Response: res}, nil
		}
	}
	req, err := e.render(call, spec.Command, spec.Env, spec.Stdin, workdir)
	if err != nil {
		return domain.StepResult{}, err
	}
	if call.DryRun {
		out := map[string]any{"exit_code": int64(0), "stdout": "", "stderr": ""}
		return domain.StepResult{Output: out, Outcome: domain.OutcomeDryRun, Request: req}, nil
	}
	if call.Fence != nil {
		if err := call.Fence(ctx); err != nil {
			return domain.StepResult{Request: req}, err
		}
	}
	var dropped int
	res, err := e.run(ctx, call, req, &dropped)
	result := domain.StepResult{Output: res, Outcome: domain.OutcomeSucceeded, Request: req, Response: res}
	if err != nil {
		return result, err
	}
	code := int(res["exit_code"].(int64))
	if code != 0 {
		err := fmt.Errorf("exit status %d: %s", code, call.Redactor.Tail(strings.TrimSpace(res["stderr"].(string)), 500))
		for _, t := range spec.TransientExitCodes {
			if t == code {
				return result, domain.Transient(err)
			}
		}
		return result, domain.Permanent(err)
	}
	if spec.Output == domain.ExecOutputJSON {
		if dropped > 0 {
			return result, domain.Permanentf("output is json, but stdout is %d bytes over the %d-byte cap; it cannot be parsed in part", dropped, e.maxOutput())
		}
		v, err := domain.DecodeJSON([]byte(res["stdout"].(string)))
		if err != nil {
			return result, domain.Permanent(fmt.Errorf("output is json, but stdout is not: %w", err))
		}
		res["stdout"] = v
	}
	return result, nil
}

func (e Exec) render(call *domain.StepCall, command []string, env map[string]string, stdin any, workdir string) (*execRequest, error) {
	req := &execRequest{Workdir: workdir}
	for i, a := range command {
		v, err := renderText(call, a, fmt.Sprintf("command[%d]", i))
		if err != nil {
			return nil, err
		}
		req.Command = append(req.Command, v)
	}
	values, secret, err := renderSinkMap(call, env, "env")
	if err != nil {
		return nil, err
	}
	req.env, req.Env = values, shown(values, secret)
	if stdin != nil {
		v, err := call.Render(stdin)
		if err != nil {
			return nil, domain.Permanent(fmt.Errorf("stdin: %w", err))
		}
		if s, ok := v.(string); ok {
			req.Stdin = s
		} else {
			b, err := jsonMarshal(v)
			if err != nil {
				return nil, domain.Permanent(fmt.Errorf("stdin: %w", err))
			}
			req.Stdin = string(b) + "\n"
		}
	}
	return req, nil
}

func (e Exec) maxOutput() int {
	if e.MaxOutput > 0 {
		return e.MaxOutput
	}
	return DefaultMaxOutput
}

// run starts the process and waits for it. The result is nil only when it did not start.
// dropped receives how many bytes of stdout were over the cap.
func (e Exec) run(ctx context.Context, call *domain.StepCall, req *execRequest, dropped *int) (map[string]any, error) {
	if len(req.Command) == 0 || req.Command[0] == "" {
		return nil, domain.Permanentf("empty command")
	}
	// A child left behind by a dead owner of this run must be gone before the step runs again,
	// or two copies of the same side effect would run side by side.
	rec, err := e.childRecord(call)
	if err != nil {
		return nil, err
	}
	if err := rec.clear(ctx); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, req.Command[0], req.Command[1:]...)
	cmd.Dir = req.Workdir
	cmd.Env = childEnv(call, req.env)
	cmd.SysProcAttr = childSysProcAttr()
	cmd.Cancel = func() error {
		// The negative pid addresses the whole process group.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	grace := e.KillGrace
	if grace == 0 {
		grace = 2 * time.Second
	}
	cmd.WaitDelay = grace
	if req.Stdin != "" {
		cmd.Stdin = strings.NewReader(req.Stdin)
	}
	stdout, stderr := &capped{max: e.maxOutput(), red: call.Redactor}, &capped{max: e.maxOutput(), red: call.Redactor}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	err = startAndWait(cmd, rec)
	res := map[string]any{"exit_code": int64(0), "stdout": stdout.String(), "stderr": stderr.String()}
	*dropped = stdout.dropped
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		res["exit_code"] = int64(-1)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return res, domain.Transient(fmt.Errorf("timed out after %s; process group killed", time.Since(start).Round(time.Millisecond)))
		}
		return res, ctx.Err()
	case errors.As(err, &exitErr):
		res["exit_code"] = int64(exitErr.ExitCode())
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist), errors.Is(err, os.ErrPermission):
		return nil, domain.Permanent(fmt.Errorf("cannot start %s: %w", req.Command[0], err))
	default:
		return nil, err
	}
	return res, nil
}

// startAndWait runs the child on a goroutine locked to its OS thread until the child has been
// reaped. Linux sends the parent-death signal when the thread that forked the child exits
// (golang/go#27505), and the Go runtime ends a thread whenever some goroutine locked to it
// returns without unlocking. Holding the forking thread for the child's whole life means no
// other goroutine can run there and end it, so the signal fires only when pipectl itself dies.
// When the child exits, whatever it left running in its process group is killed too, before
// its output pipes are drained.
func startAndWait(cmd *exec.Cmd, rec childRecord) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			done <- err
			return
		}
		pid := cmd.Process.Pid
		if err := rec.write(pid); err != nil {
			// Unrecorded, a child could outlive a takeover unseen: do not let it work.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = cmd.Wait()
			done <- domain.Transient(fmt.Errorf("recording the child process: %w", err))
			return
		}
		waitExited(pid)
		// The negative pid addresses the group; the leader is a zombie until Wait reaps it,
		// so the group id cannot have been reused yet.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		err := cmd.Wait()
		rec.remove()
		done <- err
	}()
	return <-done
}

func childEnv(call *domain.StepCall, extra map[string]string) []string {
	env := map[string]string{}
	// A pipeline may name a secret like an inherited variable (LC_TOKEN, HOME): a value that
	// holds a secret is never inherited, only passed on where the step's env says so.
	inherit := func(k, v string) {
		if call.Redactor.String(v) == v {
			env[k] = v
		}
	}
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			inherit(k, v)
		}
	}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "LC_") {
			inherit(k, v)
		}
	}
	for k, v := range extra {
		env[k] = v
	}
	env["PIPECTL_RUN_ID"] = call.RunID
	env["PIPECTL_PIPELINE"] = call.Pipeline
	env["PIPECTL_STEP"] = call.Step.ID
	env["PIPECTL_ATTEMPT"] = strconv.Itoa(call.Attempt)
	env["PIPECTL_IDEMPOTENCY_KEY"] = call.StepKey
	if call.ItemIndex != domain.NoItem {
		env["PIPECTL_ITEM_INDEX"] = strconv.Itoa(call.ItemIndex)
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// captureSlack is how much a capped stream holds beyond its cap: enough for a secret written
// across the cut to be whole when the kept text is redacted, before it is cut.
const captureSlack = 4 << 10

// capped keeps the first max bytes written and counts the rest (dropped: bytes over max).
type capped struct {
	buf     bytes.Buffer
	max     int
	dropped int
	red     *domain.Redactor
}

func (c *capped) Write(p []byte) (int, error) {
	if over := c.buf.Len() + len(p) - c.max; over > 0 {
		c.dropped += min(over, len(p))
	}
	if room := c.max + captureSlack - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// String redacts what was kept, then cuts it at the cap: a secret across the cut is redacted
// whole instead of leaving its first bytes behind.
func (c *capped) String() string {
	s := c.red.String(c.buf.String())
	if c.dropped == 0 {
		return s
	}
	if len(s) > c.max {
		s = s[:c.max]
	}
	return s + fmt.Sprintf("\n[%d more bytes not kept]", c.dropped)
}
