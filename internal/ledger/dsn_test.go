package ledger

import (
	"context"
	"net/url"
	"sort"
	"strings"
	"testing"
)

func TestDSNPasswordsNeverShown(t *testing.T) {
	tests := []struct {
		dsn     string
		secrets []string
	}{
		{"postgres://u:hunter2-pw@h/db", []string{"hunter2-pw"}},
		{"postgres://u@h/db?password=q-secret-pw&sslmode=disable", []string{"q-secret-pw"}},
		{"postgresql://u:a%40b-pw@h/db?PASSWORD=other-pw", []string{"a@b-pw", "other-pw"}},
		{"postgres://u@h/db?sslpassword=key-pw", []string{"key-pw"}},
		{"sqlite:/tmp/x.db", nil},
		{"postgres://u:pa#ss-word@h/db", nil},
		{"postgres://u@h/db?password=a%zzb-word&x=1", []string{"a%zzb-word"}},
		{"postgres://u@h/db?pass%77ord=esc-word", []string{"esc-word"}},
	}
	for _, tc := range tests {
		shown := redactDSN(tc.dsn)
		got := DSNSecrets(tc.dsn)
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(tc.secrets, ",") {
			t.Errorf("DSNSecrets(%q) = %q, want %q", tc.dsn, got, tc.secrets)
		}
		for _, s := range tc.secrets {
			if strings.Contains(shown, s) || strings.Contains(shown, strings.ReplaceAll(s, "@", "%40")) || strings.Contains(shown, "ss-word") {
				t.Errorf("redactDSN(%q) = %q shows %q", tc.dsn, shown, s)
			}
		}
	}
	// A ledger that cannot be reached: the error names the ledger, never its password.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, "postgres://u@127.0.0.1:1/db?password=unreachable-pw&connect_timeout=1")
	if err == nil || strings.Contains(err.Error(), "unreachable-pw") {
		t.Fatalf("error %v", err)
	}
}

// FuzzRedactDSN: whatever a password looks like, in user:password@ or ?password=, the DSN as
// shown holds neither it nor its escaped form, and DSNSecrets names it.
func FuzzRedactDSN(f *testing.F) {
	f.Add("hunter2-pw", "q-secret-pw")
	f.Add("a@b#c/d?e", "%zz&x=1")
	f.Add("ü-pässword", "with space")
	f.Fuzz(func(t *testing.T, userPW, queryPW string) {
		dsn := "postgres://u:" + url.PathEscape(userPW) + "@db.internal:5432/pipectl?sslmode=disable&password=" + url.QueryEscape(queryPW)
		shown := redactDSN(dsn)
		secrets := DSNSecrets(dsn)
		for _, pw := range []string{userPW, queryPW} {
			if len(pw) < 6 || strings.Contains(dsn, pw+pw) || strings.Contains("postgres://u:@db.internal:5432/pipectl?sslmode=disable&password=***", pw) {
				continue // too short or too common to tell apart from the rest of the DSN
			}
			for _, form := range []string{pw, url.PathEscape(pw), url.QueryEscape(pw)} {
				if strings.Contains(shown, form) {
					t.Fatalf("redactDSN(%q) = %q shows %q", dsn, shown, form)
				}
			}
			found := false
			for _, s := range secrets {
				found = found || s == pw
			}
			if !found {
				t.Fatalf("DSNSecrets(%q) = %q lacks %q", dsn, secrets, pw)
			}
		}
	})
}
