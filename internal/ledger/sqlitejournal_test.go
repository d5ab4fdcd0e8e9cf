package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestStatementJournalStaysInMemory checks where SQLite keeps the journal of a statement that
// may abort half-way (a multi-row update under a CHECK) inside a transaction, as every
// statement of a group commit is: in memory up to statementJournalSpill, in a temporary file
// beyond. SQLite's own bound, 64 KiB, sent the group commits of a worker to that file at every
// statement (sqlitejournal.go). A temporary file has no name (O_TMPFILE, or unlinked as soon
// as it is open), so it is found among the process's open files as one deleted.
func TestStatementJournalStaysInMemory(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skipf("no /proc/self/fd to see temporary files by: %v", err)
	}
	ctx := context.Background()
	s, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "l.db")+"?synchronous=normal")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := configureSQLite(); err != nil {
		t.Fatal(err)
	}
	// Rows of a kilobyte, four to a page: the update of n rows changes about n/4 pages.
	if _, err := s.DB().ExecContext(ctx, `CREATE TABLE journal_probe (id INTEGER PRIMARY KEY, v TEXT NOT NULL CHECK (v <> ''))`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().ExecContext(ctx, `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 8000)
		INSERT INTO journal_probe SELECT i, substr(hex(randomblob(500)), 1, 1000) FROM c`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		rows     int
		wantFile bool
	}{
		// 20 pages: past SQLite's own bound of 15, within ours of 30.
		{name: "twenty pages", rows: 80, wantFile: false},
		// Past ours too: a statement of a whole table does not take its size in memory, and
		// its journal moves to a file whole (a bound of 33 * 4096 bytes or more fails here).
		{name: "two thousand pages", rows: 8000, wantFile: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			before := deletedFiles(t)
			if _, err := tx.ExecContext(ctx, `UPDATE journal_probe SET v = v || 'y' WHERE id <= ?`, tc.rows); err != nil {
				t.Fatal(err)
			}
			// The statement is done; its journal file, once made, stays open to the end of
			// the transaction.
			var got []string
			for _, f := range deletedFiles(t) {
				if !slices.Contains(before, f) {
					got = append(got, f)
				}
			}
			if (len(got) > 0) != tc.wantFile {
				t.Errorf("updating %d rows in a transaction: SQLite temporary files open %v, want a file: %v", tc.rows, got, tc.wantFile)
			}
		})
	}
}

// deletedFiles lists the files the process holds open that have no name left.
func deletedFiles(t *testing.T) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasSuffix(target, " (deleted)") {
			out = append(out, target)
		}
	}
	return out
}

// TestMain sets the process's SQLite configuration before any test runs: a test that opens
// SQLite directly, before any ledger (TestMigrateKeepsOlderLedgers), initialises it, after
// which SQLite refuses the setting, and the tests would depend on their order.
func TestMain(m *testing.M) {
	if err := configureSQLite(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
