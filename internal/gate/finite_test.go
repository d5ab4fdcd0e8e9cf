package gate

import (
	"math"
	"strings"
	"testing"
)

// A value computed by an expression (1.0 / 0.0) or read as 1e400 is infinite: JSON cannot
// carry it to the ledger or the next step, so no gate passes it, whatever its schema says.
func TestNonFiniteNumbersAreRefused(t *testing.T) {
	g := triageGate(t)
	value := map[string]any{"team": "billing", "priority": "high", "confidence": math.Inf(1), "summary": "s",
		"labels": []any{}, "extra": []any{math.NaN()}}
	v := g.Check(value, nil)
	if v.Decision != Reject || len(v.Reasons) != 2 {
		t.Fatalf("verdict %+v", v)
	}
	if v.Reasons[0].Path != "/confidence" || v.Reasons[1].Path != "/extra/0" || !strings.Contains(v.Reasons[0].Message, "+Inf is not a finite number") || v.Reasons[0].Keyword != "number" {
		t.Fatalf("reasons %+v", v.Reasons)
	}
}
