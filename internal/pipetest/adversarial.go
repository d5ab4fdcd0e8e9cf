package pipetest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// HostileStrings are values an attacker puts in a ticket, an email or a web page for a model
// to repeat, or sends as an input: options, traversal, other hosts, header and query
// injection, shell syntax, control characters, confusables and sheer length.
var HostileStrings = []string{
	"-rf", "--output=/tmp/pwned", "../../etc/passwd", "..", ".", "a/b", "x?admin=1", "x#frag",
	"x%2F..%2F", `x\y`, "x\r\nX-Injected: 1", "x\ny", "; touch /tmp/pwned #", "$(touch /tmp/pwned)",
	"`id`", "x&admin=true", "http://evil.example/", "//evil.example/x", "@evil.example", "a b",
	"x\x00y", "ｅｖｉｌ", "аdmin", "x\u2028y", strings.Repeat("A", 65536),
}

// hostileNumbers are numbers that turn into options or odd text.
var hostileNumbers = []any{int64(-1), -0.5, 1e21}

// Mutant is a case with one untrusted value replaced by a hostile one.
type Mutant struct {
	Case Case
	// Source names the value: input /path, llm STEP[i] /path, http fixture i /path.
	Source string
	// Value is the hostile value, quoted for people.
	Value string
	// Input, Step and Answer say which document changed, for the caller's schema filter:
	// Step is empty for the input.
	Step   string
	Answer int
	// Doc is the changed document (the input, or the answer's JSON).
	Doc any
}

// Mutants lists, for every string and number in a case's input, scripted model answers and
// http fixture bodies, the case with that value replaced by each hostile value (and, for
// strings, with the hostile value appended to the original). The caller keeps the mutants
// whose changed document still passes its schema: those are what an attacker can send.
func Mutants(c Case) []Mutant {
	var out []Mutant
	for _, m := range mutateDoc(c.Input) {
		mc := cloneCase(c)
		mc.Input = m.doc
		out = append(out, Mutant{Case: mc, Source: "input " + orRoot(m.path), Value: m.value, Doc: m.doc})
	}
	for _, step := range sortedKeys(c.LLM) {
		for i, ans := range c.LLM[step] {
			if ans.JSON == nil {
				continue
			}
			for _, m := range mutateDoc(normalize(ans.JSON)) {
				mc := cloneCase(c)
				answers := append([]Answer{}, mc.LLM[step]...)
				answers[i] = Answer{JSON: m.doc, FinishReason: ans.FinishReason}
				mc.LLM[step] = answers
				out = append(out, Mutant{Case: mc, Source: fmt.Sprintf("model answer llm.%s[%d] %s", step, i, orRoot(m.path)), Value: m.value, Step: step, Answer: i, Doc: m.doc})
			}
		}
	}
	for i, f := range c.HTTP {
		for _, m := range mutateDoc(normalize(f.Body)) {
			mc := cloneCase(c)
			mc.HTTP = append([]Fixture{}, c.HTTP...)
			mc.HTTP[i].Body = m.doc
			out = append(out, Mutant{Case: mc, Source: fmt.Sprintf("http response %s %s %s", f.Method, f.URL, orRoot(m.path)), Value: m.value, Doc: m.doc})
		}
	}
	return out
}

func orRoot(path string) string {
	if path == "" {
		return "/"
	}
	return path
}

type docMutation struct {
	path  string
	value string
	doc   any
}

// mutateDoc returns copies of doc, each with one leaf replaced.
func mutateDoc(doc any) []docMutation {
	var out []docMutation
	var walk func(path string, v any, set func(any) any)
	walk = func(path string, v any, set func(any) any) {
		switch x := v.(type) {
		case map[string]any:
			for _, k := range sortedKeys(x) {
				k := k
				walk(path+"/"+k, x[k], func(nv any) any {
					c := shallowMap(x)
					c[k] = nv
					return set(c)
				})
			}
		case []any:
			for i := range x {
				i := i
				walk(fmt.Sprintf("%s/%d", path, i), x[i], func(nv any) any {
					c := append([]any{}, x...)
					c[i] = nv
					return set(c)
				})
			}
		case string:
			for _, h := range HostileStrings {
				out = append(out, docMutation{path, quoteShort(h), set(h)})
				out = append(out, docMutation{path, quoteShort(x + h), set(x + h)})
			}
		case int64, float64, int:
			for _, n := range hostileNumbers {
				out = append(out, docMutation{path, fmt.Sprint(n), set(n)})
			}
		}
	}
	walk("", doc, func(nv any) any { return nv })
	return out
}

func shallowMap(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func cloneCase(c Case) Case {
	mc := c
	mc.LLM = make(map[string][]Answer, len(c.LLM))
	for k, v := range c.LLM {
		mc.LLM[k] = v
	}
	return mc
}

func quoteShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", s[:40], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// StructureDiff compares the side effects of a run on hostile data with those of the same case
// on its own data and lists every way the hostile value changed their structure: another
// scheme, host or port; more, fewer or dot path segments; other query parameters or headers;
// a CR or LF in a header; another number of arguments, an argument that became an option, a
// NUL. Values may differ; the shape of the request may not.
func StructureDiff(base, hostile map[string][]any) []string {
	var out []string
	for _, step := range sortedKeys(hostile) {
		b, h := base[step], hostile[step]
		if len(b) == 0 {
			// The case's own data made the step act not at all (a guard found the effect in
			// place, an if was false): whether to act is a decision data may take, and there
			// is no shape to compare with.
			continue
		}
		if len(b) != len(h) {
			// for_each over a list the data chose: compare each with the first of the case.
			for i := range h {
				out = append(out, requestDiff(fmt.Sprintf("step %s", step), b[0], h[i])...)
			}
			continue
		}
		for i := range h {
			out = append(out, requestDiff(fmt.Sprintf("step %s", step), b[i], h[i])...)
		}
	}
	return out
}

func requestDiff(where string, base, hostile any) []string {
	bm, _ := base.(map[string]any)
	hm, _ := hostile.(map[string]any)
	var out []string
	if bu, ok := bm["url"].(string); ok {
		hu, _ := hm["url"].(string)
		out = append(out, urlDiff(where, bu, hu)...)
	}
	out = append(out, mapDiff(where+" header", bm["headers"], hm["headers"], "\r\n")...)
	out = append(out, mapDiff(where+" env", bm["env"], hm["env"], "\x00")...)
	if bc, ok := bm["command"].([]any); ok {
		hc, _ := hm["command"].([]any)
		if len(bc) != len(hc) {
			out = append(out, fmt.Sprintf("%s: %d arguments instead of %d", where, len(hc), len(bc)))
		} else {
			for i := range hc {
				bs, _ := bc[i].(string)
				hs, _ := hc[i].(string)
				switch {
				case strings.HasPrefix(hs, "-") && !strings.HasPrefix(bs, "-"):
					out = append(out, fmt.Sprintf("%s: argument %d became an option: %s", where, i, quoteShort(hs)))
				case strings.ContainsRune(hs, 0):
					out = append(out, fmt.Sprintf("%s: argument %d holds NUL", where, i))
				case i == 0 && hs != bs:
					out = append(out, fmt.Sprintf("%s: another program runs: %s", where, quoteShort(hs)))
				}
			}
		}
	}
	return out
}

func urlDiff(where, base, hostile string) []string {
	bu, err := url.Parse(base)
	if err != nil {
		return nil
	}
	hu, err := url.Parse(hostile)
	if err != nil {
		return []string{fmt.Sprintf("%s: the url no longer parses: %s", where, quoteShort(hostile))}
	}
	var out []string
	if bu.Scheme != hu.Scheme || bu.Host != hu.Host || bu.User.String() != hu.User.String() {
		out = append(out, fmt.Sprintf("%s: the request goes to %s://%s instead of %s://%s", where, hu.Scheme, hu.Host, bu.Scheme, bu.Host))
	}
	bs, hs := strings.Split(bu.EscapedPath(), "/"), strings.Split(hu.EscapedPath(), "/")
	if len(bs) != len(hs) {
		out = append(out, fmt.Sprintf("%s: the path has %d segments instead of %d: %s", where, len(hs), len(bs), quoteShort(hu.EscapedPath())))
	} else {
		for i := range hs {
			if hs[i] != bs[i] && (hs[i] == "." || hs[i] == ".." || strings.Contains(strings.ToLower(hs[i]), "%2f") || strings.Contains(strings.ToLower(hs[i]), "%2e")) {
				out = append(out, fmt.Sprintf("%s: path segment %d became %s", where, i, quoteShort(hs[i])))
			}
		}
	}
	if bq, hq := queryKeys(bu), queryKeys(hu); bq != hq {
		out = append(out, fmt.Sprintf("%s: query parameters [%s] instead of [%s]", where, hq, bq))
	}
	if bu.Fragment != hu.Fragment && hu.Fragment != "" && bu.Fragment == "" {
		out = append(out, fmt.Sprintf("%s: a fragment appeared", where))
	}
	return out
}

func queryKeys(u *url.URL) string {
	var keys []string
	for k, vs := range u.Query() {
		for range vs {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return strings.Join(keys, " ")
}

func mapDiff(where string, base, hostile any, forbidden string) []string {
	bm, _ := base.(map[string]any)
	hm, _ := hostile.(map[string]any)
	var out []string
	bk, hk := sortedKeys(bm), sortedKeys(hm)
	if strings.Join(bk, "\x00") != strings.Join(hk, "\x00") {
		out = append(out, fmt.Sprintf("%s names [%s] instead of [%s]", where, strings.Join(hk, " "), strings.Join(bk, " ")))
	}
	for _, k := range hk {
		v, _ := hm[k].(string)
		if strings.ContainsAny(v, forbidden) {
			raw, _ := json.Marshal(v)
			out = append(out, fmt.Sprintf("%s %s holds %s", where, k, quoteShort(string(raw))))
		}
	}
	return out
}
