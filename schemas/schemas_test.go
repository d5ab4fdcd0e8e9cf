package schemas_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/schemas"
)

// property is one entry of a properties map, with its JSON pointer in the schema.
type property struct {
	ptr    string
	name   string
	schema any
}

func properties(v any, ptr string, out *[]property) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			child := ptr + "/" + strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
			switch k {
			case "if":
				// A condition, not something a user writes: nothing to describe.
				continue
			case "properties":
				props, _ := c.(map[string]any)
				for name, s := range props {
					p := child + "/" + strings.ReplaceAll(strings.ReplaceAll(name, "~", "~0"), "/", "~1")
					*out = append(*out, property{ptr: p, name: name, schema: s})
					properties(s, p, out)
				}
				continue
			}
			properties(c, child, out)
		}
	case []any:
		for i, c := range x {
			properties(c, fmt.Sprintf("%s/%d", ptr, i), out)
		}
	}
}

func schemaDocs(t *testing.T) map[string][]byte {
	return map[string][]byte{"pipeline.schema.json": schemas.Pipeline, "pipeline-test.schema.json": schemas.PipelineTest}
}

// Editors show a property's description on hover and completion: every property has one (the
// `true` entries only re-list a step's common keys, described once in $defs/step).
func TestEveryPropertyIsDescribed(t *testing.T) {
	for file, src := range schemaDocs(t) {
		var raw any
		if err := json.Unmarshal(src, &raw); err != nil {
			t.Fatal(err)
		}
		var props []property
		properties(raw, "", &props)
		if len(props) < 50 && file == "pipeline.schema.json" {
			t.Fatalf("%s: only %d properties found", file, len(props))
		}
		for _, p := range props {
			if p.schema == true {
				continue
			}
			m, _ := p.schema.(map[string]any)
			if d, _ := m["description"].(string); strings.TrimSpace(d) == "" {
				t.Errorf("%s#%s has no description", file, p.ptr)
			}
			if md, ok := m["markdownDescription"]; ok {
				if s, _ := md.(string); strings.TrimSpace(s) == "" {
					t.Errorf("%s#%s has an empty markdownDescription", file, p.ptr)
				}
			}
		}
	}
}

// A declared default must itself be valid where it is declared, or an editor would complete a
// value that validation then refuses.
func TestDefaultsAreValid(t *testing.T) {
	for file, src := range schemaDocs(t) {
		var raw any
		if err := json.Unmarshal(src, &raw); err != nil {
			t.Fatal(err)
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat = true
		url := "https://pipectl.test/" + file
		if err := c.AddResource(url, bytes.NewReader(src)); err != nil {
			t.Fatal(err)
		}
		var props []property
		properties(raw, "", &props)
		defaults := 0
		for _, p := range props {
			m, _ := p.schema.(map[string]any)
			def, ok := m["default"]
			if !ok {
				continue
			}
			defaults++
			sch, err := c.Compile(url + "#" + p.ptr)
			if err != nil {
				t.Fatalf("%s#%s: %v", file, p.ptr, err)
			}
			if err := sch.Validate(def); err != nil {
				t.Errorf("%s#%s: default %v is not valid there: %v", file, p.ptr, def, err)
			}
		}
		if file == "pipeline.schema.json" && defaults < 10 {
			t.Errorf("%s declares %d defaults; the documented ones are missing", file, defaults)
		}
	}
}
