package dsl

import (
	"fmt"
	"io"
)

// ValidateReader validates one pipeline read from r (standard input, for editors and pre-commit
// hooks that pipe a buffer). name stands for the file in diagnostics and anchors relative $ref
// paths, as a file's own path would. More than MaxFileSize bytes is refused without reading on.
func (v *Validator) ValidateReader(name string, r io.Reader) FileResult {
	src, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return FileResult{Path: name, Err: &UnreadableError{Path: name, Err: err}}
	}
	if len(src) > MaxFileSize {
		return FileResult{Path: name, Diagnostics: []Diagnostic{{File: name, Line: 1, Column: 1, EndLine: 1, EndColumn: 2, Severity: SeverityError,
			Message: fmt.Sprintf("input is larger than %d bytes", MaxFileSize)}}}
	}
	_, diags := v.Parse(name, src)
	return FileResult{Path: name, Diagnostics: diags}
}
