package operate

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
)

// ProviderInfo is what a preflight needs to know of a configured model provider.
type ProviderInfo struct {
	// BaseURL is empty for the OpenAI API.
	BaseURL string
	// KeyEnv names the environment variable of its key ("" when it is configured without one).
	KeyEnv string
	HasKey bool
}

// PreflightEnv is what a run would meet: the configured providers (by step provider name,
// "" for the default), the steps a --llm-replay recording answers, and whether side effects
// are only rendered.
type PreflightEnv struct {
	Providers map[string]ProviderInfo
	// Recorded, when not nil, is the number of recorded exchanges per step: the run's model
	// calls are answered from it and no provider is reached.
	Recorded map[string]int
	DryRun   bool
}

// Preflight checks, before a run is created, what would otherwise fail only when a step
// reaches it, after the run was created, retried and dead-lettered with its idempotency key
// used up: every llm step's provider is configured and holds its key (or the recording has
// answers for the step), and every exec command (and guard) names an executable, relative to
// the pipeline's folder or on PATH. A command or folder computed by an expression is left to
// run time. The error (KindInvalid) lists every problem.
func Preflight(p *domain.Pipeline, env PreflightEnv) error {
	var problems []string
	dir := "."
	if p.Path != "" {
		dir = filepath.Dir(p.Path)
	}
	for _, s := range p.Steps {
		switch {
		case s.Type == domain.StepLLM && s.LLM != nil:
			if env.Recorded != nil {
				if env.Recorded[s.ID] == 0 {
					problems = append(problems, fmt.Sprintf("step %s: the --llm-replay recording has no answer for it (record one with --llm-record)", s.ID))
				}
				continue
			}
			if err := providerReady(s.LLM.Provider, env.Providers); err != nil {
				problems = append(problems, fmt.Sprintf("step %s: %v", s.ID, err))
			}
		case s.Type == domain.StepExec && s.Exec != nil && !env.DryRun:
			workdir := dir
			if w := s.Exec.Workdir; w != "" {
				if strings.Contains(w, "${{") {
					continue
				}
				if !filepath.IsAbs(w) {
					w = filepath.Join(dir, w)
				}
				workdir = w
			}
			if err := executable(s.Exec.Command, workdir); err != nil {
				problems = append(problems, fmt.Sprintf("step %s: %v", s.ID, err))
			}
			if g := s.Exec.Guard; g != nil {
				if err := executable(g.Command, workdir); err != nil {
					problems = append(problems, fmt.Sprintf("step %s guard: %v", s.ID, err))
				}
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errorf(KindInvalid, "preflight of %s failed, no run was created:\n  %s", p.Name, strings.Join(problems, "\n  "))
}

// providerReady says why a provider cannot serve a call. A provider on a loopback address
// (Ollama, vLLM, llama.cpp on this machine) may go without a key; any other needs the key
// its configuration names.
func providerReady(name string, all map[string]ProviderInfo) error {
	label := "the default model provider"
	if name != "" {
		label = "model provider " + name
	}
	info, ok := all[name]
	if !ok {
		return fmt.Errorf("%s is not configured (add it under providers: in pipectl.yaml)", label)
	}
	if info.KeyEnv == "" || info.HasKey || loopback(info.BaseURL) {
		return nil
	}
	where := info.BaseURL
	if where == "" {
		where = "the OpenAI API"
	}
	return fmt.Errorf("%s (%s) needs its key: $%s is not set", label, where, info.KeyEnv)
}

func loopback(base string) bool {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// executable resolves a command's program the way the exec step starts it: a bare name on
// PATH, a path with a slash relative to the step's working folder.
func executable(argv []string, workdir string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("the command is empty")
	}
	name := argv[0]
	if strings.Contains(name, "${{") {
		return nil
	}
	if !strings.Contains(name, "/") {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("command %q is not an executable on PATH", name)
		}
		return nil
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(workdir, path)
	}
	info, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("command %s: %s does not exist", name, path)
	case info.IsDir() || info.Mode()&0o111 == 0:
		return fmt.Errorf("command %s: %s is not executable", name, path)
	}
	return nil
}
