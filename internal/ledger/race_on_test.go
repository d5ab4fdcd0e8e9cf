//go:build race

package ledger

// raceEnabled says the tests run under the race detector, which makes the SQLite driver (C
// translated to Go) some fifty times slower: the SQL-only tests then check fewer ledgers.
const raceEnabled = true
