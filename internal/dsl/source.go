package dsl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits that keep hostile files from exhausting memory or time.
const (
	// MaxFileSize is far above any real pipeline; a larger file is refused before parsing.
	MaxFileSize = 4 << 20
	maxDepth    = 64
	// maxNodes bounds alias expansion ("billion laughs").
	maxNodes = 200_000
)

// document is a parsed YAML file: its JSON-shaped value plus the node behind every JSON pointer,
// so that any later finding can be pinned to a line and column.
type document struct {
	path   string
	src    []byte
	root   any
	values map[string]*yaml.Node
	keys   map[string]*yaml.Node
	diags  []Diagnostic
	nodes  int
	// fatal is set when the value tree is incomplete (too deep, too large): checking the rest
	// would only add noise about the parts that were cut off.
	fatal bool
	// unreadable holds pointers whose scalar could not be read; it was reported already.
	unreadable map[string]bool
}

func (d *document) errorAt(line, col int, field, format string, args ...any) {
	d.diags = append(d.diags, Diagnostic{File: d.path, Line: line, Column: col, Severity: SeverityError, Field: field, Message: fmt.Sprintf(format, args...)})
}

// errorf reports an error on the value at a JSON pointer.
func (d *document) errorf(ptr, format string, args ...any) {
	line, col := d.position(ptr)
	d.errorAt(line, col, fieldPath(ptr), format, args...)
}

// warnf reports a warning on the value at a JSON pointer.
func (d *document) warnf(ptr, format string, args ...any) {
	line, col := d.position(ptr)
	d.diags = append(d.diags, Diagnostic{File: d.path, Line: line, Column: col, Severity: SeverityWarning, Field: fieldPath(ptr), Message: fmt.Sprintf(format, args...)})
}

// keyErrorf reports an error on the key of a mapping entry (for unknown keys).
func (d *document) keyErrorf(ptr, format string, args ...any) {
	if k := d.keys[ptr]; k != nil {
		d.errorAt(k.Line, k.Column, fieldPath(ptr), format, args...)
		return
	}
	d.errorf(ptr, format, args...)
}

// position returns the line and column of the value at ptr, or of its nearest ancestor.
func (d *document) position(ptr string) (int, int) {
	for {
		if n := d.values[ptr]; n != nil {
			return n.Line, n.Column
		}
		if ptr == "" {
			return 1, 1
		}
		i := len(ptr) - 1
		for i > 0 && ptr[i] != '/' {
			i--
		}
		ptr = ptr[:i]
	}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// parseDocument reads YAML into a document. It never panics and bounds work on hostile input.
func parseDocument(path string, src []byte) *document {
	d := &document{path: path, src: src, values: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}, unreadable: map[string]bool{}}
	switch {
	case len(src) > MaxFileSize:
		d.errorAt(1, 1, "", "file is %d bytes; pipeline files are limited to %d", len(src), MaxFileSize)
		return d
	case bytes.IndexByte(src, 0) >= 0 || !utf8.Valid(src):
		d.errorAt(1, 1, "", "file is not UTF-8 text")
		return d
	case len(bytes.TrimSpace(src)) == 0:
		d.errorAt(1, 1, "", "file is empty")
		return d
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var root yaml.Node
	if err := decodeSafely(dec, &root); err != nil {
		d.yamlError(err)
		return d
	}
	var extra yaml.Node
	if err := decodeSafely(dec, &extra); err == nil {
		d.errorAt(extra.Line, extra.Column, "", "file holds more than one YAML document; put each pipeline in its own file")
		return d
	} else if !errors.Is(err, io.EOF) {
		d.yamlError(err)
		return d
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		d.errorAt(1, 1, "", "file holds no YAML document")
		return d
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		d.errorAt(top.Line, top.Column, "", "a pipeline file must be a mapping of keys (apiVersion, kind, name, steps, ...)")
		return d
	}
	d.root = d.convert(top, "", 0)
	if d.fatal {
		d.root = nil
	}
	return d
}

// decodeSafely turns a panic inside the YAML library into an error: user input must never crash us.
func decodeSafely(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse: %v", r)
		}
	}()
	return dec.Decode(n)
}

func (d *document) yamlError(err error) {
	msg := err.Error()
	line := 1
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else if len(msg) > 6 && msg[:6] == "yaml: " {
		msg = msg[6:]
	}
	d.errorAt(line, 1, "", "invalid YAML: %s", msg)
}

// convert builds the JSON-shaped value of n and records the node of every pointer.
func (d *document) convert(n *yaml.Node, ptr string, depth int) any {
	d.nodes++
	if d.nodes > maxNodes {
		if !d.fatal {
			d.errorAt(n.Line, n.Column, "", "document expands to more than %d values; are aliases (*name) repeating a large anchor?", maxNodes)
		}
		d.fatal = true
		return nil
	}
	if depth > maxDepth {
		if !d.fatal {
			d.errorAt(n.Line, n.Column, "", "values are nested more than %d levels deep", maxDepth)
		}
		d.fatal = true
		return nil
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return nil
		}
		return d.convert(n.Alias, ptr, depth+1)
	}
	if _, seen := d.values[ptr]; !seen {
		d.values[ptr] = n
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			for k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				d.errorAt(k.Line, k.Column, fieldPath(ptr), "mapping keys must be plain scalars")
				continue
			}
			if k.Value == "<<" && k.Tag == "!!merge" {
				d.errorAt(k.Line, k.Column, fieldPath(ptr), "YAML merge keys (<<) are not supported; write the keys out")
				continue
			}
			child := pointerJoin(ptr, k.Value)
			if _, dup := m[k.Value]; dup {
				first := d.keys[child]
				d.errorAt(k.Line, k.Column, fieldPath(child), "duplicate key %q (first at line %d)", k.Value, first.Line)
				continue
			}
			d.keys[child] = k
			m[k.Value] = d.convert(v, child, depth+1)
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			l = append(l, d.convert(c, pointerJoin(ptr, i), depth+1))
		}
		return l
	case yaml.ScalarNode:
		return d.scalar(n, ptr)
	}
	return nil
}

func (d *document) scalar(n *yaml.Node, ptr string) any {
	if v, ok, handled := yaml12Number(n); handled {
		if !ok {
			return n.Value // a string in YAML 1.2
		}
		return v
	}
	switch n.ShortTag() {
	case "!!str", "!!timestamp":
		return n.Value
	case "!!null":
		return nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err == nil {
			return b
		}
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			return i
		}
		var f float64
		if err := n.Decode(&f); err == nil {
			return f
		}
	case "!!float":
		var f float64
		if err := n.Decode(&f); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f
		}
		d.errorAt(n.Line, n.Column, fieldPath(ptr), "%q is not a finite number", n.Value)
		d.unreadable[ptr] = true
		return nil
	default:
		d.errorAt(n.Line, n.Column, fieldPath(ptr), "unsupported YAML tag %s", n.Tag)
		d.unreadable[ptr] = true
		return n.Value
	}
	d.errorAt(n.Line, n.Column, fieldPath(ptr), "cannot read %q as %s", n.Value, n.ShortTag())
	d.unreadable[ptr] = true
	return nil
}

// offsetOf converts a 1-based line and column into a byte offset of src.
func offsetOf(src []byte, line, col int) int {
	off := 0
	for l := 1; l < line && off < len(src); l++ {
		i := bytes.IndexByte(src[off:], '\n')
		if i < 0 {
			return len(src)
		}
		off += i + 1
	}
	// Columns count runes, not bytes.
	for c := 1; c < col && off < len(src) && src[off] != '\n'; c++ {
		_, size := utf8.DecodeRune(src[off:])
		off += size
	}
	return off
}

// lineColOf converts a byte offset back into a 1-based line and column.
func lineColOf(src []byte, off int) (int, int) {
	if off > len(src) {
		off = len(src)
	}
	line := 1 + bytes.Count(src[:off], []byte{'\n'})
	start := bytes.LastIndexByte(src[:off], '\n') + 1
	return line, 1 + utf8.RuneCount(src[start:off])
}
