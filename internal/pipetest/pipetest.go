// Package pipetest reads pipeline test cases (NAME.test.yaml) and compares what a run did with what a case expects.
package pipetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Kind is the kind of a test file.
const Kind = "PipelineTest"

// Suite is one test file: cases for one pipeline.
type Suite struct {
	Path     string
	Pipeline string // absolute path of the pipeline file
	Cases    []Case
}

type suiteFile struct {
	Kind     string `yaml:"kind"`
	Pipeline string `yaml:"pipeline"`
	Cases    []Case `yaml:"cases"`
}

// Case is one scenario: an input, the model's answers, fixtures for reads, and expectations.
type Case struct {
	Name    string              `yaml:"name"`
	Input   any                 `yaml:"input"`
	Secrets map[string]string   `yaml:"secrets"`
	LLM     map[string][]Answer `yaml:"llm"`
	HTTP    []Fixture           `yaml:"http"`
	Expect  Expect              `yaml:"expect"`
}

// Answer is one scripted model answer: a JSON value, raw content, or a refusal.
type Answer struct {
	JSON         any    `yaml:"json"`
	Content      string `yaml:"content"`
	Refusal      string `yaml:"refusal"`
	FinishReason string `yaml:"finish_reason"`
}

// Text is the answer's content as the model would send it.
func (a Answer) Text() (string, error) {
	if a.Content != "" || a.JSON == nil {
		return a.Content, nil
	}
	b, err := json.Marshal(normalize(a.JSON))
	return string(b), err
}

// Fixture answers a read (GET or HEAD, guards included) in a test run; nothing leaves the machine.
type Fixture struct {
	Method string `yaml:"method"`
	URL    string `yaml:"url"`
	Status int    `yaml:"status"`
	Body   any    `yaml:"body"`
}

// Expect is what a case checks. Maps and lists are compared as subsets: keys a case leaves out
// are not checked.
type Expect struct {
	State      string              `yaml:"state"`
	FailedStep string              `yaml:"failed_step"`
	Error      string              `yaml:"error"`
	Verdicts   map[string][]string `yaml:"verdicts"`
	Requests   map[string][]any    `yaml:"requests"`
	Outputs    map[string]any      `yaml:"outputs"`
}

// Observed is what a test run did.
type Observed struct {
	State      string
	FailedStep string
	Error      string
	Verdicts   map[string][]string
	Requests   map[string][]any
	Outputs    map[string]any
}

// Discover finds test files (*.test.yaml, *.test.yml) in files and folders.
func Discover(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != p {
				return filepath.SkipDir
			}
			if !d.IsDir() && (strings.HasSuffix(d.Name(), ".test.yaml") || strings.HasSuffix(d.Name(), ".test.yml")) {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}

// MaxFileBytes caps a test file: its cases carry recorded model answers, so it may be larger
// than a pipeline, but it is read whole.
const MaxFileBytes = 16 << 20

// Load reads a test file. Unknown keys are errors, as in pipelines.
func Load(path string) (*Suite, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxFileBytes)
	}
	var f suiteFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Kind != Kind {
		return nil, fmt.Errorf("%s: kind must be %s", path, Kind)
	}
	if len(f.Cases) == 0 {
		return nil, fmt.Errorf("%s: no cases", path)
	}
	pipeline := f.Pipeline
	if pipeline == "" {
		base := filepath.Base(path)
		pipeline = strings.TrimSuffix(strings.TrimSuffix(base, ".test.yaml"), ".test.yml") + ".yaml"
	}
	if !filepath.IsAbs(pipeline) {
		pipeline = filepath.Join(filepath.Dir(path), pipeline)
	}
	seen := map[string]bool{}
	for i := range f.Cases {
		c := &f.Cases[i]
		if c.Name == "" {
			return nil, fmt.Errorf("%s: case %d has no name", path, i+1)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("%s: two cases are named %q", path, c.Name)
		}
		seen[c.Name] = true
		if c.Expect.State == "" {
			return nil, fmt.Errorf("%s: case %q: expect.state is required", path, c.Name)
		}
		c.Input = normalize(c.Input)
		for k, v := range c.Expect.Outputs {
			c.Expect.Outputs[k] = normalize(v)
		}
		for k, list := range c.Expect.Requests {
			for j := range list {
				list[j] = normalize(list[j])
			}
			c.Expect.Requests[k] = list
		}
		for j := range c.HTTP {
			c.HTTP[j].Body = normalize(c.HTTP[j].Body)
		}
	}
	return &Suite{Path: path, Pipeline: pipeline, Cases: f.Cases}, nil
}

// normalize turns YAML-decoded values into JSON-shaped ones: string keys, int64 integers.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case int:
		return int64(x)
	}
	return v
}

// Compare lists every difference between what a case expects and what the run did.
func Compare(want Expect, got Observed) []string {
	var diffs []string
	if want.State != got.State {
		d := fmt.Sprintf("state: want %s, got %s", want.State, got.State)
		if got.Error != "" {
			d += " (" + got.Error + ")"
		}
		diffs = append(diffs, d)
	}
	if want.FailedStep != "" && want.FailedStep != got.FailedStep {
		diffs = append(diffs, fmt.Sprintf("failed_step: want %s, got %q", want.FailedStep, got.FailedStep))
	}
	if want.Error != "" && !strings.Contains(got.Error, want.Error) {
		diffs = append(diffs, fmt.Sprintf("error: want it to contain %q, got %q", want.Error, got.Error))
	}
	for _, step := range sortedKeys(want.Verdicts) {
		if w, g := want.Verdicts[step], got.Verdicts[step]; strings.Join(w, ",") != strings.Join(g, ",") {
			diffs = append(diffs, fmt.Sprintf("verdicts.%s: want %v, got %v", step, w, g))
		}
	}
	for _, step := range sortedKeys(want.Requests) {
		w, g := want.Requests[step], got.Requests[step]
		if len(w) != len(g) {
			diffs = append(diffs, fmt.Sprintf("requests.%s: want %d request(s), got %d%s", step, len(w), len(g), preview(g)))
			continue
		}
		for i := range w {
			diffs = append(diffs, subset(fmt.Sprintf("requests.%s[%d]", step, i), w[i], g[i])...)
		}
	}
	for _, step := range sortedKeys(want.Outputs) {
		g, ok := got.Outputs[step]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("outputs.%s: the step has no output", step))
			continue
		}
		diffs = append(diffs, subset("outputs."+step, want.Outputs[step], g)...)
	}
	return diffs
}

func preview(g []any) string {
	if len(g) == 0 {
		return ""
	}
	b, _ := json.Marshal(g)
	s := string(b)
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return ": " + s
}

// subset reports where got lacks or differs from what want says.
func subset(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an object, got %s", path, show(got))}
		}
		var diffs []string
		for _, k := range sortedKeys(w) {
			gv, present := g[k]
			if !present {
				diffs = append(diffs, fmt.Sprintf("%s.%s: missing", path, k))
				continue
			}
			diffs = append(diffs, subset(path+"."+k, w[k], gv)...)
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: want %s, got %s", path, show(want), show(got))}
		}
		var diffs []string
		for i := range w {
			diffs = append(diffs, subset(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return diffs
	}
	if !scalarEqual(want, got) {
		return []string{fmt.Sprintf("%s: want %s, got %s", path, show(want), show(got))}
	}
	return nil
}

func scalarEqual(a, b any) bool {
	if fa, ok := number(a); ok {
		fb, ok := number(b)
		return ok && fa == fb
	}
	return a == b
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case int:
		return float64(x), true
	}
	return 0, false
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
