package dsl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Report formats accepted by WriteReport.
const (
	FormatText   = "text"
	FormatJSON   = "json"
	FormatGitHub = "github"
	FormatSARIF  = "sarif"
)

// Summary counts what a validation found.
type Summary struct {
	Files      int `json:"files"`
	Invalid    int `json:"invalid"`
	Errors     int `json:"errors"`
	Warnings   int `json:"warnings"`
	Unreadable int `json:"unreadable"`
}

// Summarize counts results.
func Summarize(results []FileResult, discoverErrs []error) Summary {
	s := Summary{Files: len(results), Unreadable: len(discoverErrs)}
	for _, r := range results {
		if r.Err != nil {
			s.Unreadable++
			continue
		}
		if HasErrors(r.Diagnostics) {
			s.Invalid++
		}
		for _, d := range r.Diagnostics {
			if d.Severity == SeverityError {
				s.Errors++
			} else {
				s.Warnings++
			}
		}
	}
	return s
}

type jsonReport struct {
	Valid       bool         `json:"valid"`
	Summary     Summary      `json:"summary"`
	Diagnostics []Diagnostic `json:"diagnostics"`
	Unreadable  []jsonError  `json:"unreadable"`
}

type jsonError struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// unreadablePath is a path that could not be read, with the reason.
type unreadablePath struct {
	path string
	err  error
}

// unreadablePaths lists what discovery and validation could not read, each with its path.
func unreadablePaths(results []FileResult, discoverErrs []error) []unreadablePath {
	var out []unreadablePath
	add := func(fallback string, e error) {
		path := fallback
		var ue *UnreadableError
		if errors.As(e, &ue) {
			path = ue.Path
		}
		out = append(out, unreadablePath{path: path, err: e})
	}
	for _, e := range discoverErrs {
		add("", e)
	}
	for _, r := range results {
		if r.Err != nil {
			add(r.Path, r.Err)
		}
	}
	return out
}

// WriteReport writes diagnostics in one of the formats. Text and GitHub formats go to out;
// unreadable paths go to errOut, since they are not findings about a pipeline.
func WriteReport(out, errOut io.Writer, format string, results []FileResult, discoverErrs []error) error {
	sum := Summarize(results, discoverErrs)
	unreadable := unreadablePaths(results, discoverErrs)
	switch format {
	case FormatJSON:
		rep := jsonReport{Valid: sum.Invalid == 0 && sum.Unreadable == 0, Summary: sum, Diagnostics: []Diagnostic{}, Unreadable: []jsonError{}}
		for _, r := range results {
			for _, d := range r.Diagnostics {
				rep.Diagnostics = append(rep.Diagnostics, withEnd(d))
			}
		}
		for _, u := range unreadable {
			rep.Unreadable = append(rep.Unreadable, jsonError{Path: u.path, Error: u.err.Error()})
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case FormatGitHub:
		for _, r := range results {
			for _, d := range r.Diagnostics {
				d = withEnd(d)
				level := "error"
				if d.Severity == SeverityWarning {
					level = "warning"
				}
				title := "pipectl"
				if d.Field != "" {
					title += ": " + d.Field
				}
				fmt.Fprintf(out, "::%s file=%s,line=%d,endLine=%d,col=%d,endColumn=%d,title=%s::%s\n", level,
					ghEscapeProperty(d.File), d.Line, d.EndLine, d.Column, d.EndColumn, ghEscapeProperty(title), ghEscapeData(d.Text()))
			}
		}
		// An unreadable path still names its file, so that the annotation lands on it (or, for
		// a path that does not exist, at least says which).
		for _, u := range unreadable {
			fmt.Fprintf(out, "::error file=%s,title=%s::%s\n", ghEscapeProperty(u.path), ghEscapeProperty("pipectl: cannot read"), ghEscapeData(u.err.Error()))
		}
		return nil
	default:
		for _, r := range results {
			for _, d := range r.Diagnostics {
				fmt.Fprintln(out, d.String())
			}
		}
		for _, u := range unreadable {
			fmt.Fprintf(errOut, "pipectl: cannot read %s\n", u.err)
		}
		fmt.Fprintf(errOut, "%d file(s) checked: %d invalid, %d error(s), %d warning(s)\n", sum.Files, sum.Invalid, sum.Errors, sum.Warnings)
		return nil
	}
}

// GitHub workflow commands need %, CR and LF escaped in data, plus : and , in properties.
func ghEscapeData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func ghEscapeProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}
