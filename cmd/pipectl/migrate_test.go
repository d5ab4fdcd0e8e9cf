package main

import (
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/ledger"
)

// TestMigrationRaceOnFreshPostgres starts 8 pipectl processes at once on a database, and on a
// schema, that have never seen pipectl: every one must migrate or wait for the one that does.
// Before the advisory lock came first, several failed on
// duplicate key value violates unique constraint "pg_type_typname_nsp_index".
func TestMigrationRaceOnFreshPostgres(t *testing.T) {
	base := os.Getenv("PIPECTL_TEST_POSTGRES")
	if base == "" {
		t.Skip("PIPECTL_TEST_POSTGRES is not set")
	}
	t.Run("new database", func(t *testing.T) {
		for round := 0; round < 3; round++ {
			startAtOnce(t, freshDatabase(t, base), 8)
		}
	})
	t.Run("new schema", func(t *testing.T) {
		for round := 0; round < 3; round++ {
			startAtOnce(t, ledger.PostgresTestSchema(t, base), 8)
		}
	})
}

func startAtOnce(t *testing.T, dsn string, n int) {
	t.Helper()
	c := newCLI(t, "")
	c.ledger = dsn
	var wg sync.WaitGroup
	start := make(chan struct{})
	outs := make([]string, n)
	codes := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := c.command("runs", "list", "--format", "json")
			<-start
			out, err := cmd.CombinedOutput()
			outs[i], codes[i] = string(out), exitCodeOf(err)
		}()
	}
	close(start)
	wg.Wait()
	for i := range outs {
		if codes[i] != 0 {
			t.Fatalf("process %d of %d exited %d:\n%s", i, n, codes[i], outs[i])
		}
	}
}

// freshDatabase creates an empty database on the test server and drops it when the test ends.
func freshDatabase(t *testing.T, base string) string {
	t.Helper()
	admin, err := sqlx.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "pipectl_mig_" + hex.EncodeToString(b)
	if _, err := admin.Exec(`CREATE DATABASE ` + name); err != nil {
		admin.Close()
		t.Fatalf("creating a database: %v", err)
	}
	t.Cleanup(func() {
		admin.Exec(`DROP DATABASE ` + name + ` WITH (FORCE)`)
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return strings.Replace(u.String(), "postgresql://", "postgres://", 1)
}

const transformSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: plain
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: echo, type: transform, output: {id: "${{ inputs.id }}"}}
`

// TestLedgerPasswordNeverPrinted: a ledger DSN's passwords (user:pass@ and ?password=) appear
// in no output: not in the configuration log line, not in an error about an unreachable
// ledger, not in any command's output.
func TestLedgerPasswordNeverPrinted(t *testing.T) {
	const userPW, queryPW = "upw-Rk29Xq71Lm", "qpw-Vt58Nb33Hz"
	check := func(t *testing.T, what, out string) {
		t.Helper()
		for _, pw := range []string{userPW, queryPW} {
			if form, ok := leakedForm(out, pw); ok {
				t.Errorf("%s shows the password as %q:\n%s", what, form, out)
			}
		}
	}
	t.Run("unreachable", func(t *testing.T) {
		c := newCLI(t, transformSpec)
		c.ledger = "postgres://u:" + userPW + "@127.0.0.1:1/db?connect_timeout=1&password=" + queryPW
		out, err := c.command("runs", "list").CombinedOutput()
		if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), "127.0.0.1:1") || !strings.Contains(string(out), "***") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		check(t, "the error", string(out))
	})
	t.Run("postgres", func(t *testing.T) {
		base := os.Getenv("PIPECTL_TEST_POSTGRES")
		if base == "" {
			t.Skip("PIPECTL_TEST_POSTGRES is not set")
		}
		// The test server trusts loopback: the password is sent nowhere but must be shown nowhere.
		u, _ := url.Parse(ledger.PostgresTestSchema(t, base))
		q := u.Query()
		q.Set("password", queryPW)
		u.RawQuery = q.Encode()
		c := newCLI(t, transformSpec)
		c.ledger = u.String()
		var all strings.Builder
		for _, args := range [][]string{{"run", c.spec, "--input", `{"id": "p1"}`}, {"runs", "list"}, {"runs", "list", "--format", "json"}, {"stats"}} {
			out, err := c.command(args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
			all.Write(out)
		}
		if !strings.Contains(all.String(), `"ledger":"postgres://`) || !strings.Contains(all.String(), "password=***") {
			t.Fatalf("no configuration line naming the ledger:\n%s", all.String())
		}
		check(t, "the output", all.String())
	})
}
