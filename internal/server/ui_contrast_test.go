package server

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var (
	cssRule  = regexp.MustCompile(`(?s)([^{}]+)\{([^}]*)\}`)
	cssVar   = regexp.MustCompile(`(--[a-z]+):\s*(#[0-9a-fA-F]{3,6})`)
	cssColor = regexp.MustCompile(`(?:^|;)\s*(color|background):\s*([^;]+)`)
)

// luminance is WCAG 2's relative luminance of #rgb or #rrggbb.
func luminance(t *testing.T, hex string) float64 {
	h := strings.TrimPrefix(hex, "#")
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	if len(h) != 6 {
		t.Fatalf("colour %q is not #rgb or #rrggbb", hex)
	}
	var l float64
	for i, w := range []float64{0.2126, 0.7152, 0.0722} {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			t.Fatalf("colour %q: %v", hex, err)
		}
		c := float64(v) / 255
		if c <= 0.04045 {
			c /= 12.92
		} else {
			c = math.Pow((c+0.055)/1.055, 2.4)
		}
		l += w * c
	}
	return l
}

func contrast(t *testing.T, fg, bg string) float64 {
	a, b := luminance(t, fg), luminance(t, bg)
	return (max(a, b) + 0.05) / (min(a, b) + 0.05)
}

// Every text colour the stylesheet sets meets WCAG AA (4.5:1) on its background: the rule's own
// background when it sets one (state badges, verdicts, buttons), else the page's.
func TestDashboardContrast(t *testing.T) {
	css, err := uiFiles.ReadFile("ui/static/app.css")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, m := range cssVar.FindAllStringSubmatch(string(css), -1) {
		vars[m[1]] = m[2]
	}
	resolve := func(v string) string {
		v = strings.TrimSpace(v)
		if name, ok := strings.CutPrefix(v, "var("); ok {
			return vars[strings.TrimSuffix(name, ")")]
		}
		return v
	}
	pageBG := vars["--bg"]
	checked := 0
	for _, m := range cssRule.FindAllStringSubmatch(string(css), -1) {
		sel, decls := strings.TrimSpace(m[1]), m[2]
		var fg, bg string
		for _, d := range cssColor.FindAllStringSubmatch(decls, -1) {
			if d[1] == "color" {
				fg = resolve(d[2])
			} else {
				bg = resolve(d[2])
			}
		}
		if fg == "" && sel != "button" {
			continue
		}
		if fg == "" {
			fg = vars["--fg"] // a plain button inherits the page's text colour
		}
		if bg == "" {
			bg = pageBG
		}
		if !strings.HasPrefix(fg, "#") || !strings.HasPrefix(bg, "#") {
			continue // currentColor and the like: covered by the rule that sets the colour
		}
		checked++
		if c := contrast(t, fg, bg); c < 4.5 {
			t.Errorf("%s: %s on %s has contrast %.2f:1, below 4.5:1", sel, fg, bg, c)
		}
	}
	// Text in pre blocks (answers, proposals) sits on their grey.
	for _, v := range []string{"--fg", "--muted", "--bad"} {
		if c := contrast(t, vars[v], "#f5f5f5"); c < 4.5 {
			t.Errorf("%s on a pre block: %.2f:1", v, c)
		}
	}
	if checked < 12 {
		t.Fatalf("only %d colour pairs found: is the stylesheet parsed?", checked)
	}
}
