package dsl

import (
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/llm"
)

// strictWarnings warns about llm output schemas that cannot go to the provider as strict
// structured output. It is a warning, not an error: the step then asks for JSON mode, and the
// gate enforces the full schema on the answer either way.
func strictWarnings(doc *document, p *domain.Pipeline) {
	for i, s := range p.Steps {
		if s.LLM == nil || s.LLM.OutputSchema == nil {
			continue
		}
		issues := llm.StrictIssues(s.LLM.OutputSchema.Doc)
		if len(issues) == 0 {
			continue
		}
		if len(issues) > 3 {
			issues = append(issues[:3], "...")
		}
		doc.warnf(pointerJoin(pointerJoin("/steps", i), "output")+"/schema",
			"cannot be sent as strict structured output (%s); the step will ask for JSON mode and the gate still enforces the schema on every answer",
			strings.Join(issues, "; "))
	}
}
