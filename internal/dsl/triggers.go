package dsl

import (
	"encoding/json"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
)

// cronParser reads the standard 5-field form (minute hour day-of-month month day-of-week)
// and the @daily-style descriptors; seconds are for every:.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a schedule's cron expression.
func ParseCron(expr string) (cron.Schedule, error) { return cronParser.Parse(expr) }

// minEvery keeps an every: schedule from flooding the ledger.
const minEvery = time.Second

// triggers decodes the triggers block: a webhook and a schedule. The schema has checked the
// shapes; here the cron syntax, the time zone and the input are checked.
func (dc *decoder) triggers(root map[string]any, inputs *domain.Schema) domain.Triggers {
	var t domain.Triggers
	if wh, ok := valueAt(root, "/triggers/webhook").(map[string]any); ok {
		t.Webhook = &domain.WebhookTrigger{Secret: str(wh["secret"]), DeliveryHeader: str(wh["delivery_header"]), Input: wh["input"]}
	}
	sc, ok := valueAt(root, "/triggers/schedule").(map[string]any)
	if !ok {
		return t
	}
	s := &domain.ScheduleTrigger{Cron: str(sc["cron"]), Timezone: str(sc["timezone"]), CatchUp: str(sc["catch_up"])}
	if s.CatchUp == "" {
		s.CatchUp = domain.CatchUpSkip
	}
	_, hasCron := sc["cron"]
	_, hasEvery := sc["every"]
	switch {
	case hasCron == hasEvery:
		dc.doc.errorf("/triggers/schedule", "needs exactly one of cron and every")
	case hasCron:
		if _, err := ParseCron(s.Cron); err != nil {
			dc.doc.errorf("/triggers/schedule/cron", "is not a 5-field cron expression: %v", err)
		}
	case hasEvery:
		if d, ok := dc.duration("/triggers/schedule/every"); ok {
			if d < minEvery || d%time.Second != 0 {
				dc.doc.errorf("/triggers/schedule/every", "must be a whole number of seconds, at least 1s")
			}
			s.Every = d
		}
		if s.Timezone != "" {
			dc.doc.errorf("/triggers/schedule/timezone", "applies to cron only; every: slots are aligned on UTC")
		}
	}
	if s.Timezone != "" {
		if _, err := time.LoadLocation(s.Timezone); err != nil {
			dc.doc.errorf("/triggers/schedule/timezone", "is not a known time zone: %v", err)
		}
	}
	s.Input = map[string]any{}
	if in, ok := sc["input"]; ok {
		// The same representation as an input read from JSON, so that keys and hashes match.
		raw, err := json.Marshal(in)
		if err == nil {
			if v, err := domain.DecodeJSON(raw); err == nil {
				s.Input = v
			}
		}
	}
	// Every slot runs with this input: a mismatch would fail each slot at run time, so it is
	// refused here, where validate sees it.
	if inputs != nil {
		if sch, ok := inputs.Compiled.(interface{ Validate(any) error }); ok {
			if reasons := gate.Violations(sch.Validate(s.Input)); len(reasons) > 0 {
				dc.doc.errorf("/triggers/schedule/input", "does not match inputs: %s", reasons[0].String())
			}
		}
	}
	t.Schedule = s
	return t
}
