package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestKillSwitchRefusesUnknownNames: the attack is a typo at 2 a.m. The switch of a pipeline
// nobody knows is refused with the nearest name, and nothing at all is recorded.
func TestKillSwitchRefusesUnknownNames(t *testing.T) {
	c := newCLI(t, slowSpec)
	history := func() []map[string]any {
		t.Helper()
		raw, err := c.command("pipelines", "history", "--format", "json").Output()
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		var h []map[string]any
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatalf("history json: %v\n%s", err, raw)
		}
		return h
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"typo with the folder", []string{"disable", "slwo", "--reason", "x", "--pipelines", c.dir}, "did you mean slow?"},
		{"typo of enable", []string{"enable", "sloww", "--pipelines", c.dir}, "did you mean slow?"},
		{"unknown to an empty ledger", []string{"disable", "slow", "--reason", "x"}, "one that has never run is known through --pipelines DIR"},
		{"far from every name", []string{"disable", "billing-export", "--reason", "x", "--pipelines", c.dir}, "pipectl pipelines list shows the known ones"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := c.exec(t, nil, tc.args...)
			if code != 2 || !strings.Contains(out, tc.want) || !strings.Contains(out, "nothing was recorded") {
				t.Fatalf("exit %d, want 2 and %q:\n%s", code, tc.want, out)
			}
			if h := history(); len(h) != 0 {
				t.Fatalf("a refused toggle was recorded: %v", h)
			}
		})
	}

	// The folder's pipeline is accepted; repeating the toggle says so and keeps both.
	if code, out := c.exec(t, nil, "disable", "slow", "--reason", "vendor outage", "--as", "dave", "--pipelines", c.dir); code != 0 || !strings.Contains(out, "pipeline slow disabled by dave") {
		t.Fatalf("disable: %d %s", code, out)
	}
	// Now the ledger knows it: no folder needed, and a typo is matched against the ledger.
	code, out := c.exec(t, nil, "disable", "slow", "--reason", "still down", "--as", "erin")
	if code != 0 || !strings.Contains(out, `it was already disabled by dave`) || !strings.Contains(out, `"vendor outage"`) {
		t.Fatalf("repeated disable: %d %s", code, out)
	}
	if code, out := c.exec(t, nil, "enable", "SLOW"); code != 2 || !strings.Contains(out, "did you mean slow?") {
		t.Fatalf("case typo: %d %s", code, out)
	}
	h := history()
	if len(h) != 2 || h[0]["actor"] != "erin" || h[0]["reason"] != "still down" || h[1]["actor"] != "dave" {
		t.Fatalf("history, newest first: %v", h)
	}

	raw, err := c.command("pipelines", "list", "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["name"] != "slow" || list[0]["enabled"] != false || list[0]["by"] != "erin" || list[0]["why"] != "still down" || list[0]["source"] != "ledger" {
		t.Fatalf("pipelines list: %s", raw)
	}
	code, out = c.exec(t, nil, "pipelines", "list")
	if code != 0 || !strings.Contains(out, "PIPELINE") || !regexpLine(out, `slow\s+NO\s+erin\s+still down`) {
		t.Fatalf("pipelines list text: %d\n%s", code, out)
	}
	code, out = c.exec(t, nil, "pipelines", "history", "slow")
	if code != 0 || !regexpLine(out, `slow\s+disabled\s+erin\s+still down`) || !regexpLine(out, `slow\s+disabled\s+dave\s+vendor outage`) {
		t.Fatalf("history text: %d\n%s", code, out)
	}
}

// regexpLine reports whether a line of out matches the expression.
func regexpLine(out, expr string) bool {
	re := regexp.MustCompile(expr)
	for _, l := range strings.Split(out, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
