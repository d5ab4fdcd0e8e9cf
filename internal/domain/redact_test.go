package domain

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strings"
	"testing"
)

func TestRedactorForms(t *testing.T) {
	r := NewRedactor([]string{`p@ss "w/rd"`, "", "tok"})
	tests := []struct{ in, want string }{
		{`Authorization: Bearer p@ss "w/rd"`, "Authorization: Bearer ***"},
		{`{"h":"p@ss \"w/rd\""}`, `{"h":"***"}`},
		{`"{\"h\":\"p@ss \\\"w/rd\\\"\"}"`, `"{\"h\":\"***\"}"`},
		{"https://x/?k=p%40ss+%22w%2Frd%22", "https://x/?k=***"},
		{"/a/p@ss%20%22w%2Frd%22/b", "/a/***/b"},
		{"tokens: tok", "***ens: ***"},
		{"nothing here", "nothing here"},
		{"b64 " + base64.StdEncoding.EncodeToString([]byte(`p@ss "w/rd"`)), "b64 ***"},
		{"hex " + strings.ToUpper(hex.EncodeToString([]byte(`p@ss "w/rd"`))), "hex ***"},
	}
	for _, tc := range tests {
		if got := r.String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	var none *Redactor
	none.Add("x")
	if none.String("x") != "x" || string(NewRedactor(nil).Bytes([]byte("x"))) != "x" {
		t.Fatal("an empty redactor changed its input")
	}
}

// The attack: a header built as base64("user:" + secret) is echoed by a server. The redactor
// only knows the secret, yet no 8 bytes of it may be decodable from what is left, whatever the
// secret's alignment inside the encoded text.
func TestRedactorEmbeddedEncodings(t *testing.T) {
	secret := "s3cr3t-V4lue_with+slash/and=eq"
	r := NewRedactor([]string{secret})
	for pre := 0; pre < 6; pre++ {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			plain := strings.Repeat("u", pre) + ":" + secret + ":tail"
			text := "Authorization: Basic " + enc.EncodeToString([]byte(plain))
			assertNoSecretLeft(t, secret, r.String(text))
			assertNoSecretLeft(t, secret, r.String(url.QueryEscape(text)))
		}
		text := "id=" + hex.EncodeToString([]byte(strings.Repeat("x", pre)+secret))
		assertNoSecretLeft(t, secret, r.String(text))
	}
}

// assertNoSecretLeft decodes every fragment between redactions at every alignment, as base64
// and hex, and fails when 8 consecutive bytes of the secret come out.
func assertNoSecretLeft(t *testing.T, secret, text string) {
	t.Helper()
	if leaks(secret, text) {
		t.Errorf("secret recoverable from %q", text)
	}
}

func leaks(secret, text string) bool {
	var decoded []string
	var runs []string
	for _, frag := range strings.Split(text, Redacted) {
		for _, f := range []string{frag, unescape(frag)} {
			// Runs of the base64 alphabets (hex is a subset) are what could decode.
			runs = append(runs, strings.FieldsFunc(f, func(c rune) bool {
				return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+/-_", c))
			})...)
		}
	}
	for _, frag := range runs {
		for _, f := range []string{frag} {
			decoded = append(decoded, f)
			for off := 0; off < 4 && off < len(f); off++ {
				s := f[off:]
				for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
					for n := len(s) - len(s)%4; n >= 4; n -= 4 {
						if b, err := enc.DecodeString(s[:n]); err == nil {
							decoded = append(decoded, string(b))
							break
						}
					}
				}
			}
			for off := 0; off < 2 && off < len(f); off++ {
				s := strings.ToLower(f[off:])
				if b, err := hex.DecodeString(s[:len(s)-len(s)%2]); err == nil {
					decoded = append(decoded, string(b))
				}
			}
		}
	}
	for i := 0; i+8 <= len(secret); i++ {
		for _, d := range decoded {
			if strings.Contains(d, secret[i:i+8]) {
				return true
			}
		}
	}
	return false
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

func TestRedactorJSONStaysValid(t *testing.T) {
	r := NewRedactor([]string{"12345678", `","x":"`})
	for _, doc := range []string{`{"n":123456789,"s":"a12345678b"}`, `{"a":"","x":"b"}`, `[12345678.5]`} {
		got := r.JSON([]byte(doc))
		if !json.Valid(got) {
			t.Errorf("JSON(%s) = %s: not JSON", doc, got)
		}
		if strings.Contains(string(got), "12345678") {
			t.Errorf("JSON(%s) = %s: secret left", doc, got)
		}
	}
}

func TestRedactorCutsAfterRedacting(t *testing.T) {
	secret := "abcdefghijklmnopqrstuvwxyz0123456789"
	r := NewRedactor([]string{secret})
	text := strings.Repeat("x", 290) + secret + strings.Repeat("y", 200)
	for _, got := range []string{r.Head(text, 300), r.Tail(text, 220)} {
		for i := 0; i+8 <= len(secret); i++ {
			if strings.Contains(got, secret[i:i+8]) {
				t.Fatalf("cut text %q keeps part of the secret", got)
			}
		}
	}
	if got := r.Head("héllo", 2); got != "h..." {
		t.Fatalf("Head cut inside a character: %q", got)
	}
}

func TestRedactorAddWhileInUse(t *testing.T) {
	r := NewRedactor(nil)
	done := make(chan bool)
	go func() {
		for i := 0; i < 100; i++ {
			r.String("Basic dXNlcjpwYXNz")
		}
		done <- true
	}()
	r.Add("Basic dXNlcjpwYXNz")
	<-done
	if got := r.String("h: Basic dXNlcjpwYXNz"); got != "h: ***" {
		t.Fatalf("added value not redacted: %q", got)
	}
}

func TestCanonicalJSON(t *testing.T) {
	v, err := DecodeJSON([]byte(`{"b": [1, 2.5, {"z": null, "a": true}], "a": "x<y"}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := CanonicalJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"x\u003cy","b":[1,2.5,{"a":true,"z":null}]}`; string(got) != want {
		t.Fatalf("got %s want %s", got, want)
	}
	if _, ok := v.(map[string]any)["b"].([]any)[0].(int64); !ok {
		t.Fatal("integers must decode as int64 for CEL arithmetic")
	}
	if _, err := DecodeJSON([]byte(`{} {}`)); err == nil {
		t.Fatal("trailing data accepted")
	}
}

func TestMarshalJSONKeepsFloats(t *testing.T) {
	v := map[string]any{"f": float64(635), "i": int64(635), "l": []any{1e21, 0.5}}
	b, err := MarshalJSON(v)
	if err != nil || string(b) != `{"f":635.0,"i":635,"l":[1e+21,0.5]}` {
		t.Fatalf("%s %v", b, err)
	}
	back, _ := DecodeJSON(b)
	if _, ok := back.(map[string]any)["f"].(float64); !ok {
		t.Fatal("a whole float came back as another type")
	}
	if _, err := MarshalJSON([]any{math.Inf(1)}); err == nil {
		t.Fatal("an infinity was encoded")
	}
	if _, err := DecodeJSON([]byte(`{"a": [1e400]}`)); err == nil || !strings.Contains(err.Error(), `"/a/0"`) {
		t.Fatalf("1e400: %v", err)
	}
}

func TestNegativeZeroDecodesAsZero(t *testing.T) {
	for _, text := range []string{"-0.0", "-0", "-0e5", "[-0.0]"} {
		v, err := DecodeJSON([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		if got := SinkText(v); strings.Contains(got, "-") {
			t.Fatalf("%s decodes to %#v, whose text %q starts an argv option", text, v, got)
		}
	}
}

func TestRedactorDerivedValues(t *testing.T) {
	r := NewRedactor([]string{"s3cr3t-token-value"})
	if !r.AddDerived("Bearer s3cr3t-token-value") || r.derived != 0 {
		t.Fatal("a value the secret already covers was learnt again")
	}
	if !r.AddDerived("S3CR3T-TOKEN-VALUE") || r.String("x S3CR3T-TOKEN-VALUE") != "x ***" || r.derived != 1 {
		t.Fatal("an upper-cased secret was not learnt")
	}
	for i := 0; i < maxDerived+10; i++ {
		r.AddDerived(fmt.Sprintf("derived-%06d", i))
	}
	if r.derived != maxDerived {
		t.Fatalf("learnt %d computed values, at most %d", r.derived, maxDerived)
	}
}

func TestMentionsSecrets(t *testing.T) {
	for tpl, want := range map[string]bool{
		"Bearer ${{ secrets.TOKEN }}":                       true,
		"${{secrets['TOKEN']}}":                             true,
		"${{ base64.encode(bytes('u:' + secrets.TOKEN)) }}": true,
		"${{ inputs.secrets }}":                             false,
		"${{ inputs.mysecrets }}":                           false,
		"secrets ${{ inputs.id }}":                          false,
		"plain text":                                        false,
		"${{ steps.x.output.secrets_count }}":               false,
	} {
		if got := MentionsSecrets(tpl); got != want {
			t.Errorf("MentionsSecrets(%q) = %v, want %v", tpl, got, want)
		}
	}
}
