package dsl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Report formats accepted by WriteReport.
const (
	FormatText   = "text"
	FormatJSON   = "json"
	FormatGitHub = "github"
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

// WriteReport writes diagnostics in one of the formats. Text and GitHub formats go to out;
// unreadable paths go to errOut, since they are not findings about a pipeline.
func WriteReport(out, errOut io.Writer, format string, results []FileResult, discoverErrs []error) error {
	sum := Summarize(results, discoverErrs)
	var unreadable []error
	unreadable = append(unreadable, discoverErrs...)
	for _, r := range results {
		if r.Err != nil {
			unreadable = append(unreadable, r.Err)
		}
	}
	switch format {
	case FormatJSON:
		rep := jsonReport{Valid: sum.Invalid == 0 && sum.Unreadable == 0, Summary: sum, Diagnostics: []Diagnostic{}, Unreadable: []jsonError{}}
		for _, r := range results {
			rep.Diagnostics = append(rep.Diagnostics, r.Diagnostics...)
		}
		for _, e := range unreadable {
			path := ""
			if ue, ok := e.(*UnreadableError); ok {
				path = ue.Path
			}
			rep.Unreadable = append(rep.Unreadable, jsonError{Path: path, Error: e.Error()})
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case FormatGitHub:
		for _, r := range results {
			for _, d := range r.Diagnostics {
				level := "error"
				if d.Severity == SeverityWarning {
					level = "warning"
				}
				fmt.Fprintf(out, "::%s file=%s,line=%d,col=%d::%s\n", level, ghEscapeProperty(d.File), d.Line, d.Column, ghEscapeData(d.Text()))
			}
		}
		for _, e := range unreadable {
			fmt.Fprintf(out, "::error::%s\n", ghEscapeData(e.Error()))
		}
		return nil
	default:
		for _, r := range results {
			for _, d := range r.Diagnostics {
				fmt.Fprintln(out, d.String())
			}
		}
		for _, e := range unreadable {
			fmt.Fprintf(errOut, "pipectl: cannot read %s\n", e)
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
