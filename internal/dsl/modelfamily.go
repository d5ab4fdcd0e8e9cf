package dsl

import (
	"strconv"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/llm"
)

// ModelFamilies tells which family a step's model belongs to, given the step's provider name
// ("" for the default provider), so that validate sees the families pipectl.yaml gives. The
// table itself lives in llm, a leaf that imports nothing of pipectl, so dsl may read it.
type ModelFamilies func(provider, model string) llm.Family

// SetModelFamilies makes the validator use f instead of the built-in table. Call it before the
// validator is used.
func (v *Validator) SetModelFamilies(f ModelFamilies) { v.families = f }

// familyWarnings warns about llm step settings the model's family ignores or refuses. They are
// warnings, not errors: the request leaves such settings out and the step runs, but the spec
// says something that does not happen.
func familyWarnings(doc *document, p *domain.Pipeline, families ModelFamilies) {
	if families == nil {
		builtin := llm.DefaultFamilies()
		families = func(_, model string) llm.Family { return builtin.Lookup(model) }
	}
	for i, s := range p.Steps {
		if s.LLM == nil || s.LLM.Model == "" {
			continue
		}
		l := s.LLM
		fam := families(l.Provider, l.Model)
		ptr := pointerJoin("/steps", i)
		if l.Temperature != nil && fam.FixedSampling {
			if *l.Temperature == 1 {
				doc.warnf(ptr+"/temperature", "model %q is in the %s family, which fixes temperature at 1: it is left out of the request and has no effect",
					l.Model, fam.Name)
			} else {
				doc.warnf(ptr+"/temperature", "model %q is in the %s family, which refuses any temperature but the default 1: %s is left out of the request; remove it%s",
					l.Model, fam.Name, strconv.FormatFloat(*l.Temperature, 'g', -1, 64), overrideHint(l.Provider))
			}
		}
		if l.ReasoningEffort != "" && !fam.ReasoningEffort {
			doc.warnf(ptr+"/reasoning_effort", "model %q is in the %s family, which takes no reasoning_effort: it is left out of the request%s",
				l.Model, fam.Name, overrideHint(l.Provider))
		}
	}
}

// overrideHint points at the configuration, for models a gateway serves under another name.
func overrideHint(provider string) string {
	if provider == "" {
		provider = "default"
	}
	return " (if the provider serves another kind of model under this name, set its family in pipectl.yaml under providers." + provider + ".model_families)"
}
