package ledger

import (
	"fmt"
	"sync"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// statementJournalSpill is how large a statement's journal grows in memory before SQLite moves
// it to a temporary file: 124 KiB, 30 pages of 4 KiB (each page is kept with its number).
//
// SQLite keeps a statement journal (a copy of each page a statement changes) for any statement
// of several rows that a constraint could abort half-way: every multi-row insert of attempts and
// events, every claim's update. Its own bound is 64 KiB, 15 pages, and a group commit's
// statement passes it whenever index leaves split under it. From then until the end of the
// transaction every statement's journal goes to that file, page by page, with two system calls
// a page: a worker draining 8,000 ten-step runs at synchronous=NORMAL opened 483 such files and
// wrote to them 246,000 times, 31 writes a run (11% of its CPU, 17% of the time its one
// connection was busy). At 30 pages it opened none.
//
// It is not larger because SQLite allocates the in-memory journal in chunks of this size, and
// writes each chunk in one system call when it moves the journal to a file, a size its file
// layer cuts to 17 bits: with a bound of 33 * 4096 bytes or more (past 128 KiB once the pages'
// numbers are added), a statement that outgrows it fails with "database or disk is full". Nor
// unbounded: a statement that changes a whole table (migration 0004 on an old ledger) would
// hold a copy of it in memory.
const statementJournalSpill = 31 * 4096

// configureSQLite sets statementJournalSpill for the process, once, before its first SQLite
// connection: SQLite takes the setting only before it is initialised. When something else in
// the process opened SQLite first, the setting is refused, and the ledger works the same with
// SQLite's own bound, only slower. In pipectl only the ledger opens SQLite, so only a test
// that opens it directly first can meet that; the error tells such a caller.
var configureSQLite = sync.OnceValue(func() error {
	tls := libc.NewTLS()
	defer tls.Close()
	va := libc.NewVaList(int32(statementJournalSpill))
	if va == 0 {
		return fmt.Errorf("sqlite statement journal: out of memory")
	}
	defer libc.Xfree(tls, va)
	if rc := sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_STMTJRNL_SPILL, va); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("sqlite statement journal: SQLite refused the setting (code %d): it was initialised before the first ledger opened", rc)
	}
	return nil
})
