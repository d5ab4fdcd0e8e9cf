package operate

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
)

// PipelineView is one line of pipectl pipelines list and of the API's pipeline listing.
type PipelineView struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	// By, Why and Since are the kill switch's last toggle (empty when never toggled).
	By    string     `json:"by,omitempty"`
	Why   string     `json:"why,omitempty"`
	Since *time.Time `json:"since,omitempty"`
	// LastRun is the newest run's creation time, LastRunID its id.
	LastRun   *time.Time `json:"last_run,omitempty"`
	LastRunID string     `json:"last_run_id,omitempty"`
	// Triggers are read from the folder's file when given, else from the newest run's spec.
	Triggers []string `json:"triggers"`
	// Source says who knows the pipeline: "ledger", "folder" or "ledger+folder".
	Source string `json:"source"`
}

// SwitchView is one toggle of a kill switch.
type SwitchView struct {
	Pipeline string    `json:"pipeline"`
	Disabled bool      `json:"disabled"`
	Reason   string    `json:"reason"`
	Actor    string    `json:"actor"`
	At       time.Time `json:"at"`
}

// Pipelines lists every pipeline the ledger knows, and those of folder (the pipelines of a
// --pipelines folder, may be nil), by name.
func (o *Ops) Pipelines(ctx context.Context, folder []*domain.Pipeline) ([]PipelineView, error) {
	rows, err := o.Store.Pipelines(ctx)
	if err != nil {
		return nil, err
	}
	inFolder := map[string]*domain.Pipeline{}
	for _, p := range folder {
		inFolder[p.Name] = p
	}
	out := make([]PipelineView, 0, len(rows)+len(folder))
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Name] = true
		v := PipelineView{Name: r.Name, Enabled: !r.Disabled, LastRun: optTime(r.LastRun), LastRunID: r.LastRunID, Source: "ledger"}
		if r.Switched {
			v.By, v.Why, v.Since = r.Actor, r.Reason, optTime(r.At)
		}
		if p := inFolder[r.Name]; p != nil {
			v.Source, v.Triggers = "ledger+folder", TriggerList(p.Triggers)
		} else if r.SpecText != "" {
			v.Triggers = o.storedTriggers(r.SpecPath, r.SpecText)
		}
		if v.Triggers == nil {
			v.Triggers = []string{}
		}
		out = append(out, v)
	}
	for _, p := range folder {
		if !seen[p.Name] {
			out = append(out, PipelineView{Name: p.Name, Enabled: true, Triggers: TriggerList(p.Triggers), Source: "folder"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (o *Ops) storedTriggers(path, text string) []string {
	v, err := o.validator()
	if err != nil {
		return []string{"(unknown: " + err.Error() + ")"}
	}
	p, _ := v.Parse(path, []byte(text))
	if p == nil {
		return []string{"(unknown: the newest stored spec no longer validates)"}
	}
	return TriggerList(p.Triggers)
}

// TriggerList names what starts a pipeline's runs besides a caller: "webhook", "cron EXPR
// (ZONE)" or "every DURATION".
func TriggerList(t domain.Triggers) []string {
	out := []string{}
	if t.Webhook != nil {
		out = append(out, "webhook")
	}
	if s := t.Schedule; s != nil {
		if s.Cron != "" {
			zone := s.Timezone
			if zone == "" {
				zone = "UTC"
			}
			out = append(out, fmt.Sprintf("cron %s (%s)", s.Cron, zone))
		} else {
			out = append(out, "every "+s.Every.String())
		}
	}
	return out
}

// SwitchHistory returns the toggles of every kill switch (or of one pipeline), newest first,
// at most limit of them (0: all).
func (o *Ops) SwitchHistory(ctx context.Context, pipeline string, limit int) ([]SwitchView, error) {
	rows, err := o.Store.SwitchHistory(ctx, pipeline, limit)
	if err != nil {
		return nil, err
	}
	out := make([]SwitchView, len(rows))
	for i, r := range rows {
		out[i] = SwitchView{Pipeline: r.Pipeline, Disabled: r.Disabled, Reason: r.Reason, Actor: r.Actor, At: r.At.UTC()}
	}
	return out, nil
}

// ToggleRequest throws (Disabled) or resets a pipeline's kill switch.
type ToggleRequest struct {
	Pipeline string
	Disabled bool
	Reason   string
	// Known are the pipelines known besides the ledger's (a --pipelines folder's names).
	Known []string
}

// ToggleResult says what a toggle changed.
type ToggleResult struct {
	Pipeline string `json:"pipeline"`
	Disabled bool   `json:"disabled"`
	Actor    string `json:"actor"`
	Reason   string `json:"reason"`
	// Previous is the switch's position before this toggle; nil when it was never toggled.
	Previous *SwitchView `json:"previous,omitempty"`
	// Unchanged says the switch was already in this position: the toggle is recorded in the
	// history all the same, with its own actor and reason.
	Unchanged bool `json:"unchanged"`
}

// Toggle throws or resets a kill switch of a pipeline the ledger or req.Known knows. A name
// nobody knows is refused with the nearest known name and nothing recorded: a typo must not
// answer "disabled" while the real pipeline keeps running.
func (o *Ops) Toggle(ctx context.Context, actor string, req ToggleRequest) (*ToggleResult, error) {
	if req.Disabled && strings.TrimSpace(req.Reason) == "" {
		return nil, errorf(KindInvalid, "a reason is required: whoever finds the pipeline off needs to know why")
	}
	prev, err := o.knownPipeline(ctx, req.Pipeline, req.Known)
	if err != nil {
		return nil, errorf(KindOf(err), "%v; nothing was recorded", err)
	}
	if err := o.SetDisabled(ctx, actor, req.Pipeline, req.Disabled, req.Reason); err != nil {
		return nil, err
	}
	res := &ToggleResult{Pipeline: req.Pipeline, Disabled: req.Disabled, Actor: actor, Reason: req.Reason}
	if prev != nil && prev.Switched {
		res.Previous = &SwitchView{Pipeline: prev.Name, Disabled: prev.Disabled, Reason: prev.Reason, Actor: prev.Actor, At: prev.At.UTC()}
		res.Unchanged = prev.Disabled == req.Disabled
	} else {
		res.Unchanged = !req.Disabled
	}
	return res, nil
}

// CheckPipeline returns a KindNotFound error, with the nearest known name, when neither the
// ledger nor known (a folder's names) knows a pipeline: a filter with a typo must say so rather
// than show an empty list that reads as "all is well".
func (o *Ops) CheckPipeline(ctx context.Context, name string, known []string) error {
	_, err := o.knownPipeline(ctx, name, known)
	return err
}

// knownPipeline returns the ledger's row of a pipeline (nil when only known lists it), or the
// error for a name nobody knows.
func (o *Ops) knownPipeline(ctx context.Context, name string, known []string) (*ledger.PipelineRow, error) {
	rows, err := o.Store.Pipelines(ctx)
	if err != nil {
		return nil, err
	}
	names := append([]string(nil), known...)
	for i, r := range rows {
		if r.Name == name {
			return &rows[i], nil
		}
		names = append(names, r.Name)
	}
	for _, n := range known {
		if n == name {
			return nil, nil
		}
	}
	return nil, unknownPipeline(name, names, known != nil)
}

// unknownPipeline is the error for a name neither the ledger nor the folder knows.
func unknownPipeline(name string, known []string, folder bool) error {
	msg := fmt.Sprintf("no pipeline %q in the ledger", name)
	if folder {
		msg += " or the --pipelines folder"
	}
	if len(known) == 0 {
		return errorf(KindNotFound, "%s (it has no runs or kill switch yet; one that has never run is known through --pipelines DIR)", msg)
	}
	if near := Nearest(name, known); near != "" {
		return errorf(KindNotFound, "%s (did you mean %s?)", msg, near)
	}
	return errorf(KindNotFound, "%s (pipectl pipelines list shows the known ones)", msg)
}

// Nearest returns the known name closest to name in edit distance when it is close enough to
// be a typo of it (at most a third of its length, and at least 2 edits for short names), else "".
func Nearest(name string, known []string) string {
	best, bestD := "", -1
	for _, k := range known {
		d := editDistance(strings.ToLower(name), strings.ToLower(k))
		if bestD < 0 || d < bestD || d == bestD && k < best {
			best, bestD = k, d
		}
	}
	if bestD < 0 || bestD > max(2, len([]rune(name))/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, over runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
