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
