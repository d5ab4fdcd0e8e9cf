package llm

import (
	"fmt"
	"sort"
	"strings"
)

// Model families. A family says how a request for its models must be shaped: OpenAI's reasoning
// models (o1, o3, o4, gpt-5) refuse max_tokens and any temperature but the default, while most
// compatible servers (Ollama, vLLM, llama.cpp) know only max_tokens.
const (
	FamilyChat      = "chat"
	FamilyReasoning = "reasoning"
)

// Family is how requests for a group of models are shaped.
type Family struct {
	Name string
	// TokenField is the body field that carries a step's max_tokens.
	TokenField string
	// FixedSampling: the provider fixes temperature and top_p at 1 and refuses other values, so
	// they are left out of the request.
	FixedSampling bool
	// ReasoningEffort: the family takes reasoning_effort; for the others it is left out.
	ReasoningEffort bool
}

var families = map[string]Family{
	FamilyChat:      {Name: FamilyChat, TokenField: "max_tokens"},
	FamilyReasoning: {Name: FamilyReasoning, TokenField: "max_completion_tokens", FixedSampling: true, ReasoningEffort: true},
}

// FamilyNames lists the families a configuration may name.
func FamilyNames() []string {
	out := make([]string, 0, len(families))
	for n := range families {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// builtinFamilies is the table pipectl ships: OpenAI's reasoning models by name prefix, the
// same prefixes go-openai checks. Anything else is chat. Provider configuration overrides it.
var builtinFamilies = map[string]string{
	"o1*":    FamilyReasoning,
	"o3*":    FamilyReasoning,
	"o4*":    FamilyReasoning,
	"gpt-5*": FamilyReasoning,
}

// BuiltinFamilies returns a copy of the built-in table, pattern to family name.
func BuiltinFamilies() map[string]string {
	out := make(map[string]string, len(builtinFamilies))
	for k, v := range builtinFamilies {
		out[k] = v
	}
	return out
}

// Families maps model names to families: the patterns a provider's configuration gives, then
// the built-in table, then chat. A pattern is an exact name or a prefix ending in *; an exact
// name beats a prefix and a longer prefix beats a shorter one. A name with a gateway prefix
// such as openai/o3-mini is looked up whole first, then by what follows the last slash.
// A Families is read-only after construction and safe for concurrent use.
type Families struct {
	overrides, builtin patternTable
}

type patternTable struct {
	exact    map[string]string
	prefixes []prefixRule // longest first
}

type prefixRule struct{ prefix, family string }

// DefaultFamilies is the built-in table without overrides. It is shared and read-only.
func DefaultFamilies() *Families { return defaultFamilies }

var defaultFamilies = func() *Families {
	f, err := NewFamilies(nil)
	if err != nil {
		panic(err) // the built-in table is a constant of this package
	}
	return f
}()

// NewFamilies builds a lookup from overrides (pattern to family name) over the built-in table.
// It refuses empty patterns, a * anywhere but at the end, and unknown family names.
func NewFamilies(overrides map[string]string) (*Families, error) {
	o, err := compilePatterns(overrides)
	if err != nil {
		return nil, err
	}
	b, err := compilePatterns(builtinFamilies)
	if err != nil {
		return nil, err
	}
	return &Families{overrides: o, builtin: b}, nil
}

func compilePatterns(m map[string]string) (patternTable, error) {
	t := patternTable{exact: map[string]string{}}
	for _, pattern := range sortedKeys(m) {
		family := m[pattern]
		if _, ok := families[family]; !ok {
			return t, fmt.Errorf("model family %q for %q: unknown family (known: %s)", family, pattern, strings.Join(FamilyNames(), ", "))
		}
		body, prefix := strings.CutSuffix(pattern, "*")
		switch {
		case body == "" && !prefix:
			return t, fmt.Errorf("model family %q: the model name pattern is empty", family)
		case strings.Contains(body, "*"):
			return t, fmt.Errorf("model name pattern %q: * may only end a pattern", pattern)
		case prefix:
			t.prefixes = append(t.prefixes, prefixRule{body, family})
		default:
			t.exact[body] = family
		}
	}
	sort.SliceStable(t.prefixes, func(i, j int) bool { return len(t.prefixes[i].prefix) > len(t.prefixes[j].prefix) })
	return t, nil
}

func (t patternTable) lookup(name string) (string, bool) {
	if f, ok := t.exact[name]; ok {
		return f, true
	}
	for _, r := range t.prefixes {
		if strings.HasPrefix(name, r.prefix) {
			return r.family, true
		}
	}
	return "", false
}

// Lookup returns the family of a model name.
func (f *Families) Lookup(model string) Family {
	if f == nil {
		f = defaultFamilies
	}
	names := []string{model}
	if i := strings.LastIndexByte(model, '/'); i >= 0 && i < len(model)-1 {
		names = append(names, model[i+1:])
	}
	for _, t := range []patternTable{f.overrides, f.builtin} {
		for _, n := range names {
			if fam, ok := t.lookup(n); ok {
				return families[fam]
			}
		}
	}
	return families[FamilyChat]
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
