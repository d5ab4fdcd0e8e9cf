package gate

import (
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestSafeFormatsOneDefinition: the gate admits a value of a format the gate invariant trusts
// exactly when the engine's run-time check does, so that a value the gate let through is never
// refused right before the side effect, and never starts an argument with "-". The library's
// own definitions admitted "-0.0.0.0" as an ipv4 address and "+1:+2:+3" as a time.
func TestSafeFormatsOneDefinition(t *testing.T) {
	cases := []struct {
		format, value string
		ok            bool
	}{
		{"ipv4", "192.168.0.1", true},
		{"ipv4", "-0.0.0.0", false},
		{"ipv4", "+1.+2.+3.+4", false},
		{"ipv4", "00.0.0.0", false},
		{"ipv4", "01.2.3.4", false},
		{"ipv6", "::1", true},
		{"ipv6", "::ffff:1.2.3.4", true},
		{"ipv6", "fe80::1%eth0", false},
		{"date", "2026-02-28", true},
		{"date", "2026-02-30", false},
		{"date-time", "2026-11-30T10:00:00Z", true},
		{"date-time", "2026-11-30t10:00:00.5+01:00", true},
		{"date-time", "1998-12-31T23:59:60Z", true},
		{"date-time", "1998-12-31T18:59:60-05:00", true},
		{"date-time", "1998-12-31T10:00:60Z", false},
		{"date-time", "2026-11-30T+1:+2:+3Z", false},
		{"uuid", "123e4567-e89b-12d3-a456-426614174000", true},
		{"uuid", "123e4567e89b12d3a456426614174000", false},
	}
	for _, c := range cases {
		sch, err := CompileSchema("file:///s.json", map[string]any{"type": "string", "format": c.format})
		if err != nil {
			t.Fatal(err)
		}
		gate := sch.Validate(c.value) == nil
		engine := domain.SafeFormatValid(c.format, c.value)
		if gate != c.ok || engine != c.ok {
			t.Errorf("%s %q: gate admits %v, run-time check %v, want %v", c.format, c.value, gate, engine, c.ok)
		}
	}
	for _, f := range domain.SafeFormats {
		if jsonschema.Formats[f] == nil {
			t.Errorf("format %q is not one the library knows: the static check would call it unknown", f)
		}
	}
}

// FuzzSafeFormats: for any text, the gate and the run-time check agree, and an admitted value
// holds nothing dangerous in an argv, url path, header or env position.
func FuzzSafeFormats(f *testing.F) {
	for _, s := range []string{"-0.0.0.0", "1998-12-31T23:59:60Z", "::1", "2026-01-01", "123e4567-e89b-12d3-a456-426614174000"} {
		f.Add(s)
	}
	schemas := map[string]*jsonschema.Schema{}
	for _, name := range domain.SafeFormats {
		sch, err := CompileSchema("file:///"+name+".json", map[string]any{"format": name})
		if err != nil {
			f.Fatal(err)
		}
		schemas[name] = sch
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, sch := range schemas {
			gate := sch.Validate(s) == nil
			if gate != domain.SafeFormatValid(name, s) {
				t.Fatalf("%s %q: gate %v, run-time check disagrees", name, s, gate)
			}
			if !gate {
				continue
			}
			for _, r := range s {
				if !strings.ContainsRune(domain.FormatRunes(name), r) {
					t.Fatalf("%s %q admitted, but holds %q, which FormatRunes does not list", name, s, r)
				}
			}
			for _, class := range []domain.SinkClass{domain.SinkArg, domain.SinkArgTail, domain.SinkURLPath, domain.SinkURLQuery, domain.SinkQueryValue, domain.SinkPath, domain.SinkHeader, domain.SinkEnv} {
				if _, unsafe := domain.FormatUnsafeRune(name, class); unsafe {
					continue
				}
				if err := class.CheckText(s); err != nil {
					t.Fatalf("%s %q admitted and called safe in %s, but there it %v", name, s, class, err)
				}
			}
		}
	})
}
