package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/internal/operate"
)

// config is pipectl.yaml.
type config struct {
	Providers map[string]providerConfig `yaml:"providers"`
	Limits    limitsConfig              `yaml:"limits"`
	Server    serverConfig              `yaml:"server"`
}

// serverConfig is the server section: who may call the API, and how.
type serverConfig struct {
	// Tokens are the bearer tokens, kept only as SHA-256 hashes.
	Tokens []tokenConfig `yaml:"tokens"`
	// AllowSelfApproval lets a token approve a run it submitted itself.
	AllowSelfApproval bool `yaml:"allow_self_approval"`
}

type tokenConfig struct {
	Name   string `yaml:"name"`
	Role   string `yaml:"role"`
	SHA256 string `yaml:"sha256"`
}

// limitsConfig caps what pipectl reads in; a flag given on the command line wins.
type limitsConfig struct {
	// MaxInputBytes caps --input and --data (a file, stdin or inline JSON).
	MaxInputBytes int64 `yaml:"max_input_bytes"`
}

// maxConfigFile bounds pipectl.yaml; a real one is a few hundred bytes.
const maxConfigFile = 1 << 20

type providerConfig struct {
	BaseURL           string  `yaml:"base_url"`
	APIKeyEnv         string  `yaml:"api_key_env"`
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	Timeout           string  `yaml:"timeout"`
	// ModelFamilies says which family a model name belongs to (an exact name, or a prefix
	// ending in *), over the built-in table: for gateways that rename models.
	ModelFamilies map[string]string `yaml:"model_families"`

	families *llm.Families
}

// loadConfig reads --config, or pipectl.yaml in the current directory when it exists.
// Unknown keys are errors, as in pipelines.
func (a *app) loadConfig() (*config, error) {
	path, explicit := a.g.config, a.g.config != ""
	if !explicit {
		path = "pipectl.yaml"
	}
	data, err := readCapped(path, maxConfigFile)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return &config{}, nil
	}
	if err != nil {
		return nil, usageErrorf("config: %v", err)
	}
	var c config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, usageErrorf("config %s: %v", path, err)
	}
	if c.Limits.MaxInputBytes < 0 {
		return nil, usageErrorf("config %s: limits.max_input_bytes must not be negative", path)
	}
	for name, p := range c.Providers {
		if p.Timeout != "" {
			if _, err := time.ParseDuration(p.Timeout); err != nil {
				return nil, usageErrorf("config %s: providers.%s.timeout: %v", path, name, err)
			}
		}
		fams, err := llm.NewFamilies(p.ModelFamilies)
		if err != nil {
			return nil, usageErrorf("config %s: providers.%s.model_families: %v", path, name, err)
		}
		p.families = fams
		c.Providers[name] = p
	}
	return &c, nil
}

// newValidator builds a validator that knows the model families pipectl.yaml gives, so that its
// warnings about settings a family ignores or refuses match what the providers will send.
func (a *app) newValidator() (*dsl.Validator, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	v, err := dsl.NewValidator()
	if err != nil {
		return nil, err
	}
	v.SetModelFamilies(cfg.modelFamilies)
	return v, nil
}

// modelFamilies answers, for validate, which family a step's model belongs to under the step's
// provider: the provider's model_families over the built-in table. A provider the file does not
// name gets the built-in table; running such a step fails with its own error.
func (c *config) modelFamilies(provider, model string) llm.Family {
	if provider == "" {
		provider = "default"
	}
	return c.Providers[provider].families.Lookup(model)
}

// providers builds the named model providers. The default provider honours OPENAI_API_KEY and
// OPENAI_BASE_URL, so OpenAI, gateways, Ollama, vLLM and llama.cpp servers work without a file.
func (c *config) providers() map[string]llm.Provider {
	out := map[string]llm.Provider{}
	def := providerConfig{BaseURL: os.Getenv("OPENAI_BASE_URL"), APIKeyEnv: "OPENAI_API_KEY"}
	if p, ok := c.Providers["default"]; ok {
		def = p
		if def.APIKeyEnv == "" {
			def.APIKeyEnv = "OPENAI_API_KEY"
		}
		// A default entry that only sets model_families or a rate must not send the calls
		// to api.openai.com when OPENAI_BASE_URL names another server.
		if def.BaseURL == "" {
			def.BaseURL = os.Getenv("OPENAI_BASE_URL")
		}
	}
	out[""] = newProvider("default", def)
	for name, p := range c.Providers {
		if name == "default" {
			// provider: default names the same provider as no provider at all.
			out[name] = out[""]
			continue
		}
		out[name] = newProvider(name, p)
	}
	return out
}

// keys returns the API keys of the configured providers (the default one's included).
func (c *config) keys() []string {
	envs := []string{"OPENAI_API_KEY"}
	for _, p := range c.Providers {
		if p.APIKeyEnv != "" {
			envs = append(envs, p.APIKeyEnv)
		}
	}
	var out []string
	for _, e := range envs {
		if v := os.Getenv(e); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// heldSecrets are the secrets in pipectl's environment before any flag is read: the default
// provider's key and a PostgreSQL password given the libpq way.
func heldSecrets() []string {
	var out []string
	for _, e := range []string{"OPENAI_API_KEY", "PGPASSWORD"} {
		if v := os.Getenv(e); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func newProvider(name string, p providerConfig) llm.Provider {
	timeout, _ := time.ParseDuration(p.Timeout)
	key := ""
	if p.APIKeyEnv != "" {
		key = os.Getenv(p.APIKeyEnv)
	}
	return llm.NewOpenAI(llm.Config{Name: name, BaseURL: p.BaseURL, APIKey: key, RequestsPerSecond: p.RequestsPerSecond, Timeout: timeout,
		UserAgent: "pipectl/" + version, Families: p.families})
}

// providerFunc resolves step providers, answering from a recording with --llm-replay and
// recording every exchange with --llm-record.
func providerFunc(all map[string]llm.Provider, replay llm.Provider, record *llm.Recorder) func(string) (llm.Provider, error) {
	return func(name string) (llm.Provider, error) {
		if replay != nil {
			return replay, nil
		}
		p, ok := all[name]
		if !ok {
			var names []string
			for n := range all {
				if n != "" {
					names = append(names, n)
				}
			}
			sort.Strings(names)
			return nil, fmt.Errorf("unknown model provider %q (configured: %v)", name, names)
		}
		if record != nil {
			return record.Wrap(p), nil
		}
		return p, nil
	}
}

// providerInfo describes the configured providers for a preflight, with the same defaults as
// providers: the default one reads OPENAI_API_KEY and OPENAI_BASE_URL unless pipectl.yaml
// says otherwise.
func (c *config) providerInfo() map[string]operate.ProviderInfo {
	out := map[string]operate.ProviderInfo{}
	info := func(p providerConfig) operate.ProviderInfo {
		return operate.ProviderInfo{BaseURL: p.BaseURL, KeyEnv: p.APIKeyEnv, HasKey: p.APIKeyEnv != "" && os.Getenv(p.APIKeyEnv) != ""}
	}
	def := providerConfig{BaseURL: os.Getenv("OPENAI_BASE_URL"), APIKeyEnv: "OPENAI_API_KEY"}
	if p, ok := c.Providers["default"]; ok {
		def = p
		if def.APIKeyEnv == "" {
			def.APIKeyEnv = "OPENAI_API_KEY"
		}
		if def.BaseURL == "" {
			def.BaseURL = os.Getenv("OPENAI_BASE_URL")
		}
	}
	out[""] = info(def)
	out["default"] = out[""]
	for name, p := range c.Providers {
		if name != "default" {
			out[name] = info(p)
		}
	}
	return out
}

// preflight checks what a run of p would need before it is created (operate.Preflight); a
// failure exits 2 with nothing written.
func (a *app) preflight(p *domain.Pipeline, replayPath string, dryRun bool) error {
	cfg, err := a.loadConfig()
	if err != nil {
		return err
	}
	env := operate.PreflightEnv{Providers: cfg.providerInfo(), DryRun: dryRun}
	if replayPath != "" {
		r, err := llm.LoadReplayer(replayPath)
		if err != nil {
			return &exitError{code: domain.ExitUsage, err: err}
		}
		env.Recorded = r.Steps()
	}
	return opError(operate.Preflight(p, env))
}
