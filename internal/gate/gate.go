// Package gate decides whether untrusted data may pass: JSON Schema validation plus CEL policy rules, with a verdict and its reasons.
package gate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/internal/domain"
)

// Verdicts.
const (
	Pass   = "pass"
	Reject = "reject"
	Review = "review"
)

// maxSchemaFile bounds a schema file read through a $ref.
const maxSchemaFile = 4 << 20

// Reason is one thing wrong with a value: a schema violation at an instance path, or a rule
// that did not hold.
type Reason struct {
	// Path is the JSON pointer of the offending value ("" for the whole value).
	Path string `json:"path"`
	// Keyword is the schema keyword that failed, or "rule".
	Keyword string `json:"keyword"`
	Message string `json:"message"`
	// OnFail is set for rules: reject or review.
	OnFail string `json:"on_fail,omitempty"`
}

func (r Reason) String() string {
	loc := r.Path
	if loc == "" {
		loc = "/"
	}
	return fmt.Sprintf("%s: %s (%s)", loc, r.Message, r.Keyword)
}

// Verdict is the outcome of a gate.
type Verdict struct {
	Decision string   `json:"decision"`
	Reasons  []Reason `json:"reasons,omitempty"`
}

// Passed reports whether the value may be used.
func (v Verdict) Passed() bool { return v.Decision == Pass }

// Summary joins the reasons into one line for errors and logs.
func (v Verdict) Summary() string {
	parts := make([]string, len(v.Reasons))
	for i, r := range v.Reasons {
		parts[i] = r.String()
	}
	return strings.Join(parts, "; ")
}

// CompileSchema compiles a JSON Schema document under a URL: draft 2020-12 unless the document
// says otherwise, formats asserted, and only file:// references followed, so that neither
// validation nor a run ever reaches the network for a schema.
func CompileSchema(location string, doc any) (*jsonschema.Schema, error) {
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft2020
	c.AssertFormat = true
	c.LoadURL = loadLocalOnly
	// The formats the gate invariant trusts in a side effect are checked by the one definition
	// the engine checks again before the step runs: the library's own admit more ("-0.0.0.0"
	// and "+1.+2.+3.+4" as ipv4, "+1:+2:+3" in a date-time), text that would start an argument
	// with "-" or that the run-time check refuses.
	for _, f := range domain.SafeFormats {
		c.Formats[f] = func(v any) bool {
			s, ok := v.(string)
			return !ok || domain.SafeFormatValid(f, s)
		}
	}
	if err := c.AddResource(location, bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("invalid JSON Schema: %w", err)
	}
	sch, err := c.Compile(location)
	if err != nil {
		se := &SchemaError{text: compileErrorText(err), err: err}
		var cse *jsonschema.SchemaError
		var ve *jsonschema.ValidationError
		if errors.As(err, &cse) && errors.As(cse.Err, &ve) {
			se.Reasons = Violations(ve)
		}
		return nil, se
	}
	return sch, nil
}

// SchemaError is a schema that does not compile. Reasons, when the schema broke its draft's
// meta-schema, locate each problem inside the schema document (Path is a JSON pointer into
// it), so that a caller holding the document's source can point at the offending keyword.
type SchemaError struct {
	Reasons []Reason
	text    string
	err     error
}

func (e *SchemaError) Error() string { return "invalid JSON Schema: " + e.text }
func (e *SchemaError) Unwrap() error { return e.err }

func loadLocalOnly(s string) (io.ReadCloser, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "file" {
		return nil, fmt.Errorf("remote $ref %s is not loaded: only files beside the pipeline are", s)
	}
	f, err := os.Open(u.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxSchemaFile+1))
	if err != nil {
		return nil, err
	}
	if len(src) > maxSchemaFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", u.Path, maxSchemaFile)
	}
	return io.NopCloser(bytes.NewReader(src)), nil
}

// compileErrorText flattens a schema compile error into one readable line.
func compileErrorText(err error) string {
	var se *jsonschema.SchemaError
	if errors.As(err, &se) {
		var ve *jsonschema.ValidationError
		if errors.As(se.Err, &ve) {
			reasons := Violations(ve)
			parts := make([]string, len(reasons))
			for i, r := range reasons {
				loc := r.Path
				if loc == "" {
					loc = "/"
				}
				parts[i] = loc + ": " + r.Message
			}
			if len(parts) > 0 {
				return strings.Join(parts, "; ")
			}
		}
		if se.Err != nil {
			return se.Err.Error()
		}
	}
	return err.Error()
}

// Violations lists every leaf failure of a validation error, sorted by instance path, then
// keyword and message: the library's own order is not stable, and reasons are compared,
// recorded and sent back to models.
func Violations(err error) []Reason {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		if err == nil {
			return nil
		}
		return []Reason{{Keyword: "schema", Message: err.Error()}}
	}
	var out []Reason
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			kw := e.KeywordLocation[strings.LastIndex(e.KeywordLocation, "/")+1:]
			out = append(out, Reason{Path: e.InstanceLocation, Keyword: kw, Message: e.Message})
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Keyword != b.Keyword {
			return a.Keyword < b.Keyword
		}
		return a.Message < b.Message
	})
	return out
}

// Hash identifies a value by the SHA-256 of its canonical JSON: a review decision is bound to
// the exact proposal a person saw.
func Hash(canonicalJSON []byte) string {
	sum := sha256.Sum256(canonicalJSON)
	return hex.EncodeToString(sum[:])
}
