package dsl

import (
	"encoding/json"
	"io"
	"net/url"
	"path/filepath"
	"strings"
)

// SARIF 2.1.0 (OASIS), the format code-scanning services and editors read. Only the parts
// pipectl fills are modelled; cmd/pipectl's test checks the output against the standard's
// JSON Schema.

const sarifSchemaURI = "https://json.schemastore.org/sarif-2.1.0.json"

// Rule ids: diagnostics carry no finer classification, and a rule per severity lets code
// scanning filter and group them.
const (
	sarifRuleError   = "pipectl/invalid"
	sarifRuleWarning = "pipectl/warning"
)

type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool        sarifTool         `json:"tool"`
	Invocations []sarifInvocation `json:"invocations"`
	Results     []sarifResult     `json:"results"`
	ColumnKind  string            `json:"columnKind"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	Version        string      `json:"version,omitempty"`
	InformationURI string      `json:"informationUri"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID                   string       `json:"id"`
	Name                 string       `json:"name"`
	ShortDescription     sarifMessage `json:"shortDescription"`
	HelpURI              string       `json:"helpUri"`
	DefaultConfiguration struct {
		Level string `json:"level"`
	} `json:"defaultConfiguration"`
}

type sarifInvocation struct {
	ExecutionSuccessful        bool                `json:"executionSuccessful"`
	ToolExecutionNotifications []sarifNotification `json:"toolExecutionNotifications"`
}

type sarifNotification struct {
	Level     string          `json:"level"`
	Message   sarifMessage    `json:"message"`
	Locations []sarifLocation `json:"locations,omitempty"`
}

type sarifResult struct {
	RuleID     string          `json:"ruleId"`
	RuleIndex  int             `json:"ruleIndex"`
	Level      string          `json:"level"`
	Message    sarifMessage    `json:"message"`
	Locations  []sarifLocation `json:"locations"`
	Properties *sarifProps     `json:"properties,omitempty"`
}

type sarifProps struct {
	Field string `json:"field"`
}

type sarifMessage struct {
	Text string `json:"text"`
}

type sarifLocation struct {
	PhysicalLocation sarifPhysical `json:"physicalLocation"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifact `json:"artifactLocation"`
	Region           *sarifRegion  `json:"region,omitempty"`
}

type sarifArtifact struct {
	URI string `json:"uri"`
}

type sarifRegion struct {
	StartLine   int `json:"startLine"`
	StartColumn int `json:"startColumn"`
	EndLine     int `json:"endLine"`
	EndColumn   int `json:"endColumn"`
}

// WriteSARIF writes the results as one SARIF 2.1.0 log with one run. toolVersion is pipectl's
// version. Unreadable paths are tool execution notifications, not results: they say nothing
// about a pipeline.
func WriteSARIF(out io.Writer, toolVersion string, results []FileResult, discoverErrs []error) error {
	rules := []sarifRule{
		newSARIFRule(sarifRuleError, "InvalidPipeline", "The pipeline file breaks a rule of the pipeline format.", "error"),
		newSARIFRule(sarifRuleWarning, "PipelineWarning", "The pipeline file is valid but holds something likely unintended.", "warning"),
	}
	run := sarifRun{
		Tool: sarifTool{Driver: sarifDriver{
			Name: "pipectl", Version: toolVersion, InformationURI: "https://github.com/pipectl/pipectl", Rules: rules,
		}},
		Results:    []sarifResult{},
		ColumnKind: "unicodeCodePoints",
	}
	for _, r := range results {
		for _, d := range r.Diagnostics {
			d = withEnd(d)
			res := sarifResult{RuleID: sarifRuleError, RuleIndex: 0, Level: "error", Message: sarifMessage{Text: d.Text()}}
			if d.Severity == SeverityWarning {
				res.RuleID, res.RuleIndex, res.Level = sarifRuleWarning, 1, "warning"
			}
			if d.Field != "" {
				res.Properties = &sarifProps{Field: d.Field}
			}
			res.Locations = []sarifLocation{{PhysicalLocation: sarifPhysical{
				ArtifactLocation: sarifArtifact{URI: sarifURI(d.File)},
				Region:           &sarifRegion{StartLine: d.Line, StartColumn: d.Column, EndLine: d.EndLine, EndColumn: d.EndColumn},
			}}}
			run.Results = append(run.Results, res)
		}
	}
	inv := sarifInvocation{ExecutionSuccessful: true, ToolExecutionNotifications: []sarifNotification{}}
	for _, u := range unreadablePaths(results, discoverErrs) {
		inv.ExecutionSuccessful = false
		n := sarifNotification{Level: "error", Message: sarifMessage{Text: "cannot read " + u.err.Error()}}
		if u.path != "" {
			n.Locations = []sarifLocation{{PhysicalLocation: sarifPhysical{ArtifactLocation: sarifArtifact{URI: sarifURI(u.path)}}}}
		}
		inv.ToolExecutionNotifications = append(inv.ToolExecutionNotifications, n)
	}
	run.Invocations = []sarifInvocation{inv}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{Schema: sarifSchemaURI, Version: "2.1.0", Runs: []sarifRun{run}})
}

func newSARIFRule(id, name, text, level string) sarifRule {
	r := sarifRule{ID: id, Name: name, ShortDescription: sarifMessage{Text: text},
		HelpURI: "https://github.com/pipectl/pipectl/blob/main/docs/spec.md"}
	r.DefaultConfiguration.Level = level
	return r
}

// sarifURI turns a path as the user gave it into a URI reference: relative paths stay relative
// (code scanning resolves them against the repository root, where CI runs pipectl), absolute
// ones become file URIs. Characters that are not allowed in a URI are percent-encoded.
func sarifURI(path string) string {
	slash := filepath.ToSlash(path)
	if filepath.IsAbs(path) {
		if !strings.HasPrefix(slash, "/") {
			slash = "/" + slash // a Windows drive letter
		}
		return (&url.URL{Scheme: "file", Path: slash}).String()
	}
	slash = strings.TrimPrefix(slash, "./")
	// A relative path whose first segment holds a colon would read as a scheme.
	return (&url.URL{Path: slash}).String()
}
