package dsl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/schemas"
)

// pipelineSchema is the compiled schema of the pipeline file plus its raw form, which the error
// renderer reads to suggest the key a typo meant.
type pipelineSchema struct {
	compiled *jsonschema.Schema
	raw      map[string]any
}

// loadPipelineSchema compiles the embedded schema of pipeline files. The file declares draft
// 2020-12 for editors; the binary compiles it under draft-07 rules, which mean the same for
// every keyword it uses (TestPipelineSchemaIsDraft7Compatible keeps it so), because checking a
// schema against the 2020-12 meta-schema costs more than validating a pipeline does, at
// every start of every `pipectl validate`.
func loadPipelineSchema() (*pipelineSchema, error) {
	var raw map[string]any
	if err := json.Unmarshal(schemas.Pipeline, &raw); err != nil {
		return nil, fmt.Errorf("embedded pipeline schema: %w", err)
	}
	delete(raw, "$schema")
	doc, err := json.Marshal(forValidation(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft7
	if err := c.AddResource(schemas.PipelineURL, bytes.NewReader(doc)); err != nil {
		return nil, fmt.Errorf("embedded pipeline schema: %w", err)
	}
	compiled, err := c.Compile(schemas.PipelineURL)
	if err != nil {
		return nil, fmt.Errorf("embedded pipeline schema: %w", err)
	}
	return &pipelineSchema{compiled: compiled, raw: raw}, nil
}

// annotations are keywords only editors read; they change no verdict.
var annotations = []string{"description", "markdownDescription", "patternErrorMessage", "examples", "default", "title"}

// forValidation returns the part of the pipeline schema that decides anything, which is what
// the binary compiles at every start: the schema's annotations are left out (the library would
// check each against its meta-schema), and so is $defs/schema, which describes inline JSON
// Schemas for editors while pipectl compiles every inline schema for real against its draft's
// meta-schema (decoder.schema). The raw schema keeps them for the error renderer.
func forValidation(raw map[string]any) map[string]any {
	out := stripAnnotations(raw).(map[string]any)
	if defs, ok := out["$defs"].(map[string]any); ok {
		if _, ok := defs["schema"]; ok {
			defs["schema"] = map[string]any{}
		}
	}
	return out
}

// stripAnnotations copies a schema without its annotations. Maps of names to schemas
// (properties, $defs, ...) keep every name, "description" included.
func stripAnnotations(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		if l, ok := v.([]any); ok {
			out := make([]any, len(l))
			for i, e := range l {
				out[i] = stripAnnotations(e)
			}
			return out
		}
		return v
	}
	out := make(map[string]any, len(m))
	for k, e := range m {
		switch {
		case slices.Contains(annotations, k):
		case k == "properties" || k == "patternProperties" || k == "$defs" || k == "definitions":
			names, _ := e.(map[string]any)
			sub := make(map[string]any, len(names))
			for name, s := range names {
				sub[name] = stripAnnotations(s)
			}
			out[k] = sub
		case k == "enum" || k == "const":
			out[k] = e
		default:
			out[k] = stripAnnotations(e)
		}
	}
	return out
}

// check validates the document against the pipeline schema and reports every leaf error.
func (ps *pipelineSchema) check(d *document) {
	err := ps.compiled.Validate(d.root)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return
	}
	var found []schemaFinding
	ps.collect(d, ve, &found)
	// A step whose type is wrong would drown its real problem in unknown-key noise.
	badType := map[string]bool{}
	for _, f := range found {
		if strings.HasSuffix(f.ptr, "/type") && strings.HasPrefix(f.ptr, "/steps/") && strings.Count(f.ptr, "/") == 3 {
			badType[strings.TrimSuffix(f.ptr, "/type")] = true
		}
	}
	// pipectl's own checks ran first and say more than the schema's generic words: a field
	// they found fault with gets no second finding from the schema, which states the same
	// rules for editors (zero durations, for_each on approval, a body on GET, ...).
	checked := map[string]bool{}
	for _, diag := range d.diags {
		if diag.Severity == SeverityError {
			checked[diag.Field] = true
		}
	}
	for _, f := range found {
		if d.unreadable[f.ptr] || checked[fieldPath(f.ptr)] || strings.Contains(f.abs, inlineSchemaDef) {
			continue
		}
		if stepPtr := stepPointer(f.ptr); badType[stepPtr] && f.ptr != stepPtr+"/type" && f.ptr != stepPtr+"/id" {
			continue
		}
		if f.onKey {
			d.keyErrorf(f.ptr, "%s", f.msg)
		} else {
			d.errorf(f.ptr, "%s", f.msg)
		}
	}
}

type schemaFinding struct {
	ptr   string
	msg   string
	onKey bool
	// abs is the absolute location of the schema keyword that failed.
	abs string
}

// inlineSchemaDef is where the pipeline schema describes an inline JSON Schema for editors.
// pipectl compiles inline schemas for real against their draft's meta-schema and reports
// that (decoder.schema), so findings from the description are dropped.
const inlineSchemaDef = "#/$defs/schema/"

func stepPointer(ptr string) string {
	if !strings.HasPrefix(ptr, "/steps/") {
		return ""
	}
	parts := strings.SplitN(ptr, "/", 4)
	return "/steps/" + parts[2]
}

// enumValue matches one allowed value in the library's enum message.
var enumValue = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)

// closestFold finds a candidate that differs from s only in letter case.
func closestFold(s string, candidates []string) string {
	for _, c := range candidates {
		if strings.EqualFold(s, c) && s != c {
			return c
		}
	}
	return ""
}

var quotedName = regexp.MustCompile(`'((?:[^'\\]|\\.)*)'`)

func (ps *pipelineSchema) collect(d *document, ve *jsonschema.ValidationError, out *[]schemaFinding) {
	keyword := ve.KeywordLocation[strings.LastIndex(ve.KeywordLocation, "/")+1:]
	ptr := ve.InstanceLocation
	if keyword == "oneOf" || keyword == "anyOf" {
		*out = append(*out, schemaFinding{ptr: ptr, msg: alternativesMessage(ptr), abs: ve.AbsoluteKeywordLocation})
		return
	}
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			ps.collect(d, c, out)
		}
		return
	}
	value := valueAt(d.root, ptr)
	switch keyword {
	case "additionalProperties":
		allowed := ps.allowedKeys(ve.AbsoluteKeywordLocation)
		// The unknown keys are read from the document, not from the library's message, which
		// quotes them: a key holding a tab or a newline must be found at its own position and
		// escaped once, by the message.
		obj, _ := value.(map[string]any)
		var unknown []string
		for k := range obj {
			if _, ok := slices.BinarySearch(allowed, k); !ok {
				unknown = append(unknown, k)
			}
		}
		sort.Strings(unknown)
		common, _ := valueAt(ps.raw, "/$defs/step/properties").(map[string]any)
		for _, k := range unknown {
			msg := unknownKeyMessage(k, allowed)
			if _, isCommon := common[k]; isCommon && stepPointer(ptr) == ptr {
				// A step key this type does not take (for_each on wait, say), not a typo.
				msg = fmt.Sprintf("%s is not supported on %s steps", k, str(obj["type"]))
			}
			*out = append(*out, schemaFinding{ptr: pointerJoin(ptr, k), msg: msg, onKey: true, abs: ve.AbsoluteKeywordLocation})
		}
	case "required":
		for _, m := range quotedName.FindAllStringSubmatch(ve.Message, -1) {
			*out = append(*out, schemaFinding{ptr: ptr, msg: fmt.Sprintf("missing required key %q", m[1]), abs: ve.AbsoluteKeywordLocation})
		}
	default:
		*out = append(*out, schemaFinding{ptr: ptr, msg: leafMessage(keyword, ptr, value, ve.Message), abs: ve.AbsoluteKeywordLocation})
	}
}

func alternativesMessage(ptr string) string {
	if strings.HasSuffix(ptr, "/expect_status") {
		return "must be an HTTP status code (100-599) or a list of them"
	}
	return "does not match any allowed form"
}

func leafMessage(keyword, ptr string, value any, libMsg string) string {
	last := ptr[strings.LastIndex(ptr, "/")+1:]
	switch keyword {
	case "const":
		switch ptr {
		case "/apiVersion":
			return fmt.Sprintf("unsupported apiVersion %s; this pipectl reads pipectl/v1", show(value))
		case "/kind":
			return fmt.Sprintf("kind must be Pipeline, got %s", show(value))
		}
	case "enum":
		hint := ""
		if s, isString := value.(string); isString {
			var allowed []string
			for _, m := range enumValue.FindAllStringSubmatch(libMsg, -1) {
				allowed = append(allowed, m[1])
			}
			if best := closest(strings.ToLower(s), allowed); best != "" && best != s {
				hint = fmt.Sprintf("; did you mean %q?", best)
			} else if best := closestFold(s, allowed); best != "" {
				hint = fmt.Sprintf("; did you mean %q?", best)
			}
		}
		if strings.HasPrefix(ptr, "/steps/") && last == "type" && strings.Count(ptr, "/") == 3 {
			if hint != "" {
				return fmt.Sprintf("unknown step type %s%s", show(value), hint)
			}
			return fmt.Sprintf("unknown step type %s; expected one of llm, gate, transform, http, exec, approval, wait", show(value))
		}
		return fmt.Sprintf("%s is not allowed; %s%s", show(value), strings.TrimPrefix(libMsg, "value "), hint)
	case "pattern":
		switch {
		case ptr == "/name":
			return fmt.Sprintf("pipeline name %s must be lowercase letters, digits and dashes, start with a letter, at most 63 characters", show(value))
		case strings.HasPrefix(ptr, "/steps/") && last == "id" && strings.Count(ptr, "/") == 3:
			return fmt.Sprintf("step id %s must be lowercase letters, digits and underscores, starting with a letter", show(value))
		case isDurationKey(last):
			return fmt.Sprintf("%s is not a duration; write it like 500ms, 30s, 5m or 1h30m", show(value))
		case last == "if" || last == "for_each" || last == "done_if":
			return fmt.Sprintf("must be a single ${{ expression }}, got %s", show(value))
		case strings.HasPrefix(ptr, "/secrets/"):
			return fmt.Sprintf("secret name %s must be an environment variable name", show(value))
		}
		return fmt.Sprintf("%s %s", show(value), libMsg)
	case "type":
		if (last == "command") && strings.HasPrefix(ptr, "/steps/") {
			if _, isString := value.(string); isString {
				return "command must be an argv list such as [\"git\", \"push\"], never a shell string"
			}
		}
		msg := strings.Replace(strings.Replace(libMsg, "expected ", "must be ", 1), ", but got", ", got", 1)
		if s, isString := value.(string); isString {
			msg += yaml11Hint(s)
		}
		return msg
	case "minItems":
		if ptr == "/steps" {
			return "a pipeline needs at least one step"
		}
		return "must not be empty"
	case "minLength":
		return "must not be empty"
	case "uniqueItems":
		return "holds the same entry twice: " + libMsg
	case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum":
		return strings.Replace(libMsg, " but found ", ", got ", 1)
	}
	return libMsg
}

func isDurationKey(k string) bool {
	switch k {
	case "timeout", "run_timeout", "initial_interval", "max_interval":
		return true
	}
	return false
}

// show quotes a user value for a message, shortening long ones.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := string(b)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func unknownKeyMessage(name string, allowed []string) string {
	msg := fmt.Sprintf("unknown key %q", name)
	if best := closest(name, allowed); best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	return msg
}

// allowedKeys reads the property names the schema allows at the keyword's schema location
// (for a step, its type's definition, which lists the common keys too).
func (ps *pipelineSchema) allowedKeys(absKeywordLoc string) []string {
	i := strings.Index(absKeywordLoc, "#")
	if i < 0 {
		return nil
	}
	schemaPtr := absKeywordLoc[i+1:]
	schemaPtr = schemaPtr[:strings.LastIndex(schemaPtr, "/")]
	var keys []string
	addProps := func(at string) {
		if m, ok := valueAt(ps.raw, at).(map[string]any); ok {
			if props, ok := m["properties"].(map[string]any); ok {
				for k := range props {
					keys = append(keys, k)
				}
			}
		}
	}
	addProps(schemaPtr)
	sort.Strings(keys)
	return keys
}

// closest returns the candidate a typo most likely meant: within edit distance 2, and close
// enough relative to the name's length that the suggestion is not noise.
func closest(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist && d <= len(name)/2 && d < len(c) {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// valueAt follows a JSON pointer through a decoded JSON value.
func valueAt(v any, ptr string) any {
	if ptr == "" {
		return v
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := v.(type) {
		case map[string]any:
			v = c[tok]
		case []any:
			var i int
			if _, err := fmt.Sscan(tok, &i); err != nil || i < 0 || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

// schemaStore compiles the JSON Schemas that pipelines use. A file referenced by many pipelines
// is read and compiled once per process.
type schemaStore struct {
	mu    sync.Mutex
	files map[string]*schemaFile
}

type schemaFile struct {
	once     sync.Once
	doc      any
	compiled *jsonschema.Schema
	err      error
}

func newSchemaStore() *schemaStore { return &schemaStore{files: map[string]*schemaFile{}} }

// loadFile reads and compiles the schema file at an absolute path, once.
func (s *schemaStore) loadFile(abs string) (any, *jsonschema.Schema, error) {
	s.mu.Lock()
	f := s.files[abs]
	if f == nil {
		f = &schemaFile{}
		s.files[abs] = f
	}
	s.mu.Unlock()
	f.once.Do(func() {
		f.doc, f.err = readSchemaFile(abs)
		if f.err == nil {
			f.compiled, f.err = gate.CompileSchema(fileURL(abs), f.doc)
		}
	})
	return f.doc, f.compiled, f.err
}

func readSchemaFile(abs string) (any, error) {
	src, err := readLimited(abs)
	if err != nil {
		return nil, err
	}
	ext := strings.ToLower(filepath.Ext(abs))
	if ext == ".yaml" || ext == ".yml" {
		d := parseDocument(abs, src)
		if len(d.diags) > 0 {
			return nil, errors.New(d.diags[0].String())
		}
		return d.root, nil
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	return doc, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(src) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return src, nil
}

func fileURL(abs string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}
