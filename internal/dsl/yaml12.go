package dsl

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The YAML library resolves plain scalars partly by YAML 1.1 rules: 1_0 and 0b11 are integers
// and 010 is octal 8. Editors and most other YAML parsers follow YAML 1.2's core schema, where
// 1_0 and 0b11 are strings and 010 is ten. A pipeline must mean the same to pipectl as to the
// editor its author reads it in, so numbers are read by the 1.2 rules; where a 1.1-only form
// then fails a field that wants a number or a boolean, the message says how to write it.
var (
	yaml12Decimal = regexp.MustCompile(`^[-+]?[0-9]+$`)
	yaml12Float   = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)
	yaml11Binary  = regexp.MustCompile(`^[-+]?0b[01_]+$`)
)

// yaml12Number reads a plain scalar the YAML library took for a number by YAML 1.2 rules. It
// returns ok=false with no value when YAML 1.2 reads the scalar as a string.
func yaml12Number(n *yaml.Node) (v any, ok bool, handled bool) {
	if n.Style != 0 || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		return nil, false, false
	}
	s := n.Value
	switch {
	case strings.Contains(s, "_"), yaml11Binary.MatchString(s):
		return s, false, true
	case yaml12Decimal.MatchString(s):
		// Leading zeros are decimal in 1.2 (010 is ten), not octal.
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(s, 64)
			return f, ferr == nil, ferr == nil
		}
		return i, true, true
	case n.ShortTag() == "!!float" && yaml12Float.MatchString(s):
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil, err == nil
	}
	return nil, false, false
}

// yaml11Hint explains a string that a YAML 1.1 reader would have taken for a number or a
// boolean, for a field that wanted one; "" when the string is no such form.
func yaml11Hint(s string) string {
	switch strings.ToLower(s) {
	case "yes", "y", "on":
		return fmt.Sprintf("; %q is a string in YAML 1.2 (a boolean only in YAML 1.1): write true", s)
	case "no", "n", "off":
		return fmt.Sprintf("; %q is a string in YAML 1.2 (a boolean only in YAML 1.1): write false", s)
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil || len(n.Content) != 1 {
		return ""
	}
	var v any
	if n.Content[0].Decode(&v) != nil {
		return ""
	}
	switch v.(type) {
	case int, int64, uint64, float64:
	default:
		return ""
	}
	what := "digit separators (_)"
	if yaml11Binary.MatchString(s) && !strings.Contains(s, "_") {
		what = "binary integers (0b)"
	}
	return fmt.Sprintf("; %q is a string in YAML 1.2 (%s are YAML 1.1 only): write %v", s, what, v)
}
