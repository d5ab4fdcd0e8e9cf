package operate

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
)

// HeldView is what a run in needs_review holds for a reviewer: the step, the proposal (for a
// gate review) with its hash, why it was held, each rule of the step with its verdict, and
// what approving would do.
type HeldView struct {
	Step         string          `json:"step"`
	Item         *int            `json:"item,omitempty"`
	Message      string          `json:"message,omitempty"`
	ProposalHash string          `json:"proposal_hash,omitempty"`
	Proposal     json.RawMessage `json:"proposal,omitempty"`
	// Reasons are the gate's reasons for holding it, by path.
	Reasons []gate.Reason `json:"reasons,omitempty"`
	// Rules are the step's rules in the run's spec, each with its verdict on the proposal:
	// "failed" when the gate named it, else "passed".
	Rules []RuleView `json:"rules,omitempty"`
	// Approve says what approving would do.
	Approve string `json:"approve"`
}

// RuleView is one rule and its verdict.
type RuleView struct {
	Expr    string `json:"expr"`
	Message string `json:"message"`
	OnFail  string `json:"on_fail"`
	Verdict string `json:"verdict"`
}

// Held returns what a run in needs_review waits on, or nil for a run in another state.
func (o *Ops) Held(ctx context.Context, r *domain.Run, attempts []domain.Attempt) *HeldView {
	if r.State != domain.StateNeedsReview {
		return nil
	}
	var held *domain.Attempt
	for i := len(attempts) - 1; i >= 0; i-- {
		if attempts[i].Outcome == domain.OutcomeNeedsReview {
			held = &attempts[i]
			break
		}
	}
	if held == nil {
		return nil
	}
	h := &HeldView{Step: held.StepID}
	if held.ItemIndex != domain.NoItem {
		item := held.ItemIndex
		h.Item = &item
	}
	var out struct {
		Proposal     json.RawMessage `json:"proposal"`
		ProposalHash string          `json:"proposal_hash"`
		Reasons      []gate.Reason   `json:"reasons"`
		Message      string          `json:"message"`
	}
	_ = json.Unmarshal(held.Output, &out)
	h.Proposal, h.ProposalHash, h.Reasons, h.Message = out.Proposal, out.ProposalHash, out.Reasons, out.Message
	sort.SliceStable(h.Reasons, func(i, j int) bool { return h.Reasons[i].Path < h.Reasons[j].Path })
	var rules []domain.Rule
	var step *domain.Step
	if p, err := o.Spec(r); err == nil {
		for i := range p.Steps {
			if p.Steps[i].ID == held.StepID {
				step = p.Steps[i]
			}
		}
	}
	if step != nil {
		switch {
		case step.LLM != nil:
			rules = step.LLM.Rules
		case step.Gate != nil:
			rules = step.Gate.Rules
		case step.Approval != nil && h.Message == "":
			h.Message = step.Approval.Message
		}
	}
	h.Rules = RuleVerdicts(rules, h.Reasons)
	if h.ProposalHash != "" {
		h.Approve = "step " + held.StepID + " succeeds with exactly this proposal (sha256 " + h.ProposalHash + "); the run continues with the steps after it"
	} else {
		h.Approve = "step " + held.StepID + " succeeds with {decision: approved, by: you}; the run continues with the steps after it"
	}
	return h
}

// RuleVerdicts gives each rule its verdict from a gate's reasons: "failed" when a rule reason
// names it, "not checked" when the schema failed (the gate evaluates rules only on a value
// that conforms), else "passed".
func RuleVerdicts(rules []domain.Rule, reasons []gate.Reason) []RuleView {
	schemaFailed := false
	for _, reason := range reasons {
		if reason.Keyword != "rule" {
			schemaFailed = true
		}
	}
	var out []RuleView
	for _, rule := range rules {
		v := RuleView{Expr: rule.Expr, Message: rule.Message, OnFail: string(rule.OnFail), Verdict: "passed"}
		if v.OnFail == "" {
			v.OnFail = string(domain.OnFailReject)
		}
		if schemaFailed {
			v.Verdict = "not checked"
		}
		for _, reason := range reasons {
			if reason.Keyword == "rule" && strings.HasPrefix(reason.Message, rule.Message) {
				v.Verdict = "failed"
			}
		}
		out = append(out, v)
	}
	return out
}
