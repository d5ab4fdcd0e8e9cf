package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/internal/llm"
)

// maxAnswer bounds what a model answer may bring in; a larger one is rejected unparsed.
const maxAnswer = 1 << 20

// maxEcho bounds how much of a rejected proposal is sent back in a re-ask.
const maxEcho = 4000

// LLM asks a model for a proposal and gates it: only a value that passed the schema and every
// rule becomes the step's output. A failing proposal is sent back with its errors, at most
// max_reasks times.
type LLM struct {
	// Provider resolves a provider by name ("" is the default one).
	Provider func(name string) (llm.Provider, error)
	Gates    *Gates
}

var _ domain.StepExecutor = LLM{}

// Execute runs the propose, gate, re-ask loop.
func (l LLM) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	spec := call.Step.LLM
	vars := ruleVars(call)
	provider, err := l.Provider(spec.Provider)
	if err != nil {
		return domain.StepResult{}, domain.Permanent(err)
	}
	compiled, err := l.Gates.For(call.Step, spec.OutputSchema, spec.Rules)
	if err != nil {
		return domain.StepResult{}, domain.Permanent(err)
	}
	prompt, err := renderText(call, spec.Prompt, "prompt")
	if err != nil {
		return domain.StepResult{}, err
	}
	system, err := renderText(call, spec.System, "system")
	if err != nil {
		return domain.StepResult{}, err
	}
	schemaJSON, err := json.Marshal(spec.OutputSchema.Doc)
	if err != nil {
		return domain.StepResult{}, domain.Permanent(err)
	}
	strict := len(llm.StrictIssues(spec.OutputSchema.Doc)) == 0
	req := llm.Request{Step: call.Step.ID, Model: spec.Model, Temperature: spec.Temperature, MaxTokens: spec.MaxTokens,
		ReasoningEffort: spec.ReasoningEffort, SchemaName: call.Step.ID, Schema: schemaJSON, Strict: strict}
	base := []llm.Message{{Role: "system", Content: systemText(system, schemaJSON, strict)}, {Role: "user", Content: prompt}}
	req.Messages = base

	var result domain.StepResult
	record := func(mc domain.ModelCall) {
		result.Calls = append(result.Calls, mc)
		if call.ModelCalled != nil {
			call.ModelCalled(mc)
		}
	}
	used := 0
	var last gate.Verdict
	for reask := 0; reask <= spec.MaxReasks; reask++ {
		if spec.MaxTokensTotal > 0 && used+spec.MaxTokens > spec.MaxTokensTotal || spec.MaxTokensTotal > 0 && used >= spec.MaxTokensTotal {
			return result, domain.Permanentf("token budget: %d of max_tokens_total %d used; another call could exceed it (last rejection: %s)", used, spec.MaxTokensTotal, last.Summary())
		}
		req.ClientRequestID = ClientRequestID(call.StepKey, call.RunID, call.Attempt, reask)
		mc := domain.ModelCall{Reask: reask, Provider: spec.Provider, Model: spec.Model, At: time.Now(), ClientRequestID: req.ClientRequestID}
		mc.Request, _ = json.Marshal(req)
		resp, err := provider.Complete(ctx, req)
		mc.LatencyMS = resp.Latency.Milliseconds()
		mc.PromptTokens, mc.CompletionTokens = resp.PromptTokens, resp.CompletionTokens
		mc.Family, mc.RequestID, mc.ResponseModel = resp.Family, resp.RequestID, resp.Model
		mc.ProcessingMS, mc.ReasoningTokens = resp.ProcessingMS, resp.ReasoningTokens
		mc.Response, mc.FinishReason = resp.Content, resp.FinishReason
		used += resp.PromptTokens + resp.CompletionTokens
		if err != nil {
			mc.Outcome, mc.Error = "error", err.Error()
			record(mc)
			return result, classifyProviderError(err)
		}
		// Refusal, truncation and filtering are outcomes of their own, not parse errors.
		switch {
		case resp.Refusal != "":
			mc.Outcome = "refused"
			last = gate.Verdict{Decision: gate.Reject, Reasons: []gate.Reason{{Keyword: "refusal", Message: "the model refused: " + resp.Refusal}}}
		case resp.FinishReason == llm.FinishLength:
			mc.Outcome = "truncated"
			record(mc)
			if resp.ReasoningTokens != nil && *resp.ReasoningTokens > 0 {
				// A reasoning model's limit covers its reasoning too, which can use it all.
				return result, domain.Permanentf("the answer was cut off at max_tokens (%d), %d of the %d completion tokens spent on reasoning; raise max_tokens",
					spec.MaxTokens, *resp.ReasoningTokens, resp.CompletionTokens)
			}
			return result, domain.Permanentf("the answer was cut off at max_tokens (%d); raise max_tokens", spec.MaxTokens)
		case resp.FinishReason == llm.FinishContentFilter:
			mc.Outcome = "filtered"
			record(mc)
			return result, domain.Permanentf("the provider's content filter withheld the answer")
		case len(resp.Content) > maxAnswer:
			mc.Outcome, mc.Response = "rejected", call.Redactor.Head(resp.Content, 1000)
			last = gate.Verdict{Decision: gate.Reject, Reasons: []gate.Reason{{Keyword: "size", Message: fmt.Sprintf("the answer is %d bytes; at most %d are read", len(resp.Content), maxAnswer)}}}
		default:
			value, perr := domain.DecodeJSON([]byte(strings.TrimSpace(resp.Content)))
			if perr != nil {
				mc.Outcome = "invalid_json"
				last = gate.Verdict{Decision: gate.Reject, Reasons: []gate.Reason{{Keyword: "json", Message: "the answer is not one JSON value: " + perr.Error()}}}
				break
			}
			value = gate.Coerce(spec.OutputSchema.Doc, value)
			mc.Parsed, _ = json.Marshal(value)
			last = compiled.Check(value, vars)
			mc.Verdict = last.Decision
			switch last.Decision {
			case gate.Pass:
				mc.Outcome = "accepted"
				mc.Reasons = reasonsJSON(last)
				record(mc)
				result.Output, result.Outcome = value, domain.OutcomeSucceeded
				return result, nil
			case gate.Review:
				mc.Outcome = "review"
				mc.Reasons = reasonsJSON(last)
				record(mc)
				out, err := reviewOutput(value, last)
				if err != nil {
					return result, domain.Permanent(err)
				}
				result.Output, result.Outcome, result.Review = out, domain.OutcomeNeedsReview, last.Summary()
				return result, nil
			}
			mc.Outcome = "rejected"
		}
		if mc.Verdict == "" {
			mc.Verdict = gate.Reject
		}
		mc.Reasons = reasonsJSON(last)
		record(mc)
		req.Messages = reaskMessages(base, call.Redactor.String(resp.Content), last)
	}
	return result, domain.Permanentf("proposal rejected after %d re-ask(s): %s", spec.MaxReasks, last.Summary())
}

// ClientRequestID names one model call for the provider's logs:
// pipectl-STEPKEY-RUNID-ATTEMPT-REASK. The step key is the same for every attempt of a step, in
// its resumes and in replays of the run, so a search for its prefix finds all of them; the run
// id tells a replay's calls from the original's (a replay numbers its attempts from 1 again);
// each engine retry is a new attempt and each re-ask a new question, so both get their own id.
// Anything that sends the same call again within one attempt and re-ask (a process that takes
// over a run whose owner died mid-call) sends the same id: it is a function of these alone.
func ClientRequestID(stepKey, runID string, attempt, reask int) string {
	return fmt.Sprintf("pipectl-%s-%s-%d-%d", stepKey, runID, attempt, reask)
}

func systemText(system string, schema []byte, strict bool) string {
	var b strings.Builder
	if system != "" {
		b.WriteString(system)
		b.WriteString("\n\n")
	}
	b.WriteString("Answer with exactly one JSON object and nothing else.")
	if !strict {
		b.WriteString(" It must conform to this JSON Schema:\n")
		b.Write(schema)
	}
	return b.String()
}

// reaskMessages keeps the re-ask compact: the original messages, the last proposal and its
// errors sorted by instance path, not the whole growing conversation.
func reaskMessages(base []llm.Message, lastAnswer string, v gate.Verdict) []llm.Message {
	echo := lastAnswer
	if len(echo) > maxEcho {
		echo = echo[:maxEcho] + "...(truncated)"
	}
	var b strings.Builder
	b.WriteString("Your answer was rejected for these reasons:\n")
	for _, r := range v.Reasons {
		b.WriteString("- ")
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	b.WriteString("Answer again with the corrected JSON object only.")
	out := append([]llm.Message{}, base...)
	return append(out, llm.Message{Role: "assistant", Content: echo}, llm.Message{Role: "user", Content: b.String()})
}

func reasonsJSON(v gate.Verdict) []byte {
	if len(v.Reasons) == 0 {
		return nil
	}
	b, _ := json.Marshal(v.Reasons)
	return b
}

// classifyProviderError maps provider failures onto error classes.
func classifyProviderError(err error) error {
	var pe *llm.Error
	if errors.As(err, &pe) {
		if pe.Transient {
			return &domain.ClassifiedError{Class: domain.ClassTransient, RetryAfter: pe.RetryAfter, Err: err}
		}
		return domain.Permanent(err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return domain.Transient(err)
	}
	return err
}
