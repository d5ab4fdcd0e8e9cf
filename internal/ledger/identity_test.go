package ledger_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/ledger"
)

// TestIdentityNamesTheDatabaseNotTheText: two DSNs written differently for the same schema
// (parameters in another order, a password) name the same ledger; another schema of the same
// database does not; no password shows.
func TestIdentityNamesTheDatabaseNotTheText(t *testing.T) {
	dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("PIPECTL_TEST_POSTGRES is not set")
	}
	open := func(dsn string) *ledger.Store {
		t.Helper()
		s, err := ledger.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	one := ledger.PostgresTestSchema(t, dsn)
	u, err := url.Parse(one)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", "another")
	u.RawQuery = q.Encode()
	u.User = url.UserPassword(u.User.Username(), "s3cret")
	a, b := open(one), open(u.String())
	if a.Identity() != b.Identity() {
		t.Fatalf("one ledger, two identities: %q and %q", a.Identity(), b.Identity())
	}
	if strings.Contains(b.Identity(), "s3cret") {
		t.Fatalf("the identity shows the password: %q", b.Identity())
	}
	other := open(ledger.PostgresTestSchema(t, dsn))
	if other.Identity() == a.Identity() {
		t.Fatalf("two schemas, one identity: %q", a.Identity())
	}
}

func TestIdentityOfASQLiteLedgerIsItsAbsolutePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	s, err := ledger.Open(context.Background(), "sqlite:pipectl.db?synchronous=normal")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if want := "sqlite:" + filepath.Join(dir, "pipectl.db"); s.Identity() != want {
		t.Fatalf("identity %q, want %q", s.Identity(), want)
	}
}
