package domain

import "testing"

func TestRedactorForms(t *testing.T) {
	r := NewRedactor([]string{`p@ss "w/rd"`, "", "tok"})
	tests := []struct{ in, want string }{
		{`Authorization: Bearer p@ss "w/rd"`, "Authorization: Bearer ***"},
		{`{"h":"p@ss \"w/rd\""}`, `{"h":"***"}`},
		{"https://x/?k=p%40ss+%22w%2Frd%22", "https://x/?k=***"},
		{"/a/p@ss%20%22w%2Frd%22/b", "/a/***/b"},
		{"tokens: tok", "***ens: ***"},
		{"nothing here", "nothing here"},
	}
	for _, tc := range tests {
		if got := r.String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	var none *Redactor
	if none.String("x") != "x" || string(NewRedactor(nil).Bytes([]byte("x"))) != "x" {
		t.Fatal("an empty redactor changed its input")
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
