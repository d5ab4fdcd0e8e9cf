// Package ledger stores runs, their transitions, step attempts and notes in SQL (SQLite or PostgreSQL) through sqlx.
package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, so `go install` needs no C toolchain

	"github.com/pipectl/pipectl/internal/domain"
)

// DefaultDSN is where the ledger lives when nothing else is configured.
const DefaultDSN = "sqlite:.pipectl/ledger.db"

// Store is the run ledger. It is safe for concurrent use.
type Store struct {
	db      *sqlx.DB
	dialect string
	// Synchronous is the SQLite synchronous mode in force ("FULL" or "NORMAL"); empty otherwise.
	Synchronous string
	desc        string
	identity    string
	dsn         string
	now         func() time.Time

	readDSN  string
	readOnce sync.Once
	reads    *sqlx.DB
	readErr  error

	// stmts holds the prepared statements of the hot path, read-only once the store is open:
	// re-parsing SQL costs more than the commit itself at synchronous=NORMAL.
	stmts map[string]*sqlx.Stmt

	// group commits the writes of concurrent callers together; nil: each alone.
	group *committer

	// claims runs the one-statement claim on PostgreSQL (see openClaimPool); nil elsewhere.
	claims *sqlx.DB

	// batches holds the multi-row attempt inserts by row count, prepared on first use.
	batches sync.Map // int -> *sqlx.Stmt

	// claimStmts holds a SQLite claim's statements by text, prepared before a claim's
	// transaction needs them (prepareClaim); claimSizes is how many runs a claim of the
	// statements prepared so far can take.
	claimStmts sync.Map // string -> *sqlx.Stmt
	claimSizes atomic.Int32

	// switches caches whether any pipeline is switched off, for the choice of a PostgreSQL
	// claim's path (switchedOff).
	switches struct {
		sync.Mutex
		read time.Time
		off  bool
	}
}

// prepareOnce returns the statement kept in m under key, preparing query() on first use. It must
// run outside any transaction: with one SQLite connection, preparing inside one would wait for
// itself.
func (s *Store) prepareOnce(ctx context.Context, m *sync.Map, key any, query func() string) (*sqlx.Stmt, error) {
	if st, ok := m.Load(key); ok {
		return st.(*sqlx.Stmt), nil
	}
	st, err := s.db.PreparexContext(ctx, query())
	if err != nil {
		return nil, err
	}
	if prev, loaded := m.LoadOrStore(key, st); loaded {
		st.Close()
		return prev.(*sqlx.Stmt), nil
	}
	return st, nil
}

// prepared is the store's prepared form of query, or nil.
func (s *Store) prepared(query string) *sqlx.Stmt {
	if st := s.stmts[query]; st != nil {
		return st
	}
	if st, ok := s.claimStmts.Load(query); ok {
		return st.(*sqlx.Stmt)
	}
	return nil
}

// txExec runs a statement inside tx, through its prepared form when the store has one.
func (s *Store) txExec(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (sql.Result, error) {
	if st := s.prepared(query); st != nil {
		return tx.StmtxContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, s.db.Rebind(query), args...)
}

// txGet runs a single-row query inside tx, through its prepared form when the store has one.
func (s *Store) txGet(ctx context.Context, tx *sqlx.Tx, dest any, query string, args ...any) error {
	if st := s.prepared(query); st != nil {
		return tx.StmtxContext(ctx, st).GetContext(ctx, dest, args...)
	}
	return tx.GetContext(ctx, dest, s.db.Rebind(query), args...)
}

// txSelect runs a query (bound for the dialect already) inside tx, through its prepared form
// when the store has one.
func (s *Store) txSelect(ctx context.Context, tx *sqlx.Tx, dest any, query string, args ...any) error {
	if st := s.prepared(query); st != nil {
		return tx.StmtxContext(ctx, st).SelectContext(ctx, dest, args...)
	}
	return tx.SelectContext(ctx, dest, query, args...)
}

// prepareHotPath prepares the statements every step commit runs. It must run before any
// transaction: with one connection, preparing inside a transaction would wait for itself.
func (s *Store) prepareHotPath(ctx context.Context) error {
	queries := []string{selectStateSQL + s.forUpdate(), insertRunSQL, insertAttemptSQL, insertOwnedAttemptSQL, updateAttemptSQL, insertEventSQL, insertCreatedClaimedSQL, insertCallSQL, pipelineSwitchSQL}
	for _, to := range domain.RunStates {
		queries = append(queries, transitionSQL(to))
	}
	s.stmts = map[string]*sqlx.Stmt{}
	for _, q := range queries {
		st, err := s.db.PreparexContext(ctx, s.db.Rebind(q))
		if err != nil {
			return fmt.Errorf("preparing %q: %w", q, err)
		}
		s.stmts[q] = st
	}
	return nil
}

// Description names the ledger for logs, without credentials.
func (s *Store) Description() string { return s.desc }

// Identity names the database this store is, the same however its DSN was written (the
// order of its parameters, a password, a host given by PGHOST): on PostgreSQL the server's
// host and port, the database, the user and the search_path; on SQLite the file's absolute
// path. It holds no password.
func (s *Store) Identity() string { return s.identity }

// Open connects to the ledger named by dsn (sqlite:PATH[?synchronous=normal] or
// postgres://...) and applies pending migrations.
func Open(ctx context.Context, dsn string) (*Store, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	}
	return nil, fmt.Errorf("ledger %q: expected sqlite:PATH or postgres://...", redactDSN(dsn))
}

// redactDSN hides the passwords of a DSN (user:password@ and ?password=) before it reaches a
// message. A DSN that does not parse is not shown at all: its password could be anywhere.
func redactDSN(dsn string) string {
	if !strings.Contains(dsn, "://") {
		return dsn // sqlite:PATH
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Fragment != "" || u.Opaque != "" {
		// A "#" or an unescaped "@" in a password makes the URL parse as something else:
		// what looks like the host may be the rest of the password.
		return "(a DSN that is not a plain URL)"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), domain.Redacted)
		}
	}
	u.RawQuery = redactQuery(u.RawQuery)
	return u.String()
}

// DSNSecrets returns the passwords a DSN carries, for the redactor of everything pipectl prints.
func DSNSecrets(dsn string) []string {
	u, err := url.Parse(dsn)
	if err != nil || !strings.Contains(dsn, "://") {
		return nil
	}
	var out []string
	if u.User != nil {
		if p, has := u.User.Password(); has && p != "" {
			out = append(out, p)
		}
	}
	for _, pair := range strings.Split(u.RawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if !isPasswordParam(unescapeOr(k)) || v == "" {
			continue
		}
		// Both forms: the one a message quotes and the one the server gets.
		out = append(out, v)
		if un := unescapeOr(v); un != v {
			out = append(out, un)
		}
	}
	return out
}

// redactQuery replaces the password parameters of a raw query, pair by pair: a value that is
// not valid percent-encoding must be hidden too, and url.Values would drop it unseen.
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	pairs := strings.Split(raw, "&")
	for i, pair := range pairs {
		k, _, _ := strings.Cut(pair, "=")
		if isPasswordParam(unescapeOr(k)) {
			pairs[i] = k + "=" + domain.Redacted
		}
	}
	return strings.Join(pairs, "&")
}

func unescapeOr(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// isPasswordParam names the DSN parameters that carry a password or key (libpq and pgx spell
// them so).
func isPasswordParam(k string) bool {
	switch strings.ToLower(k) {
	case "password", "sslpassword", "sslkey_password":
		return true
	}
	return false
}

// openSQLite opens a SQLite ledger. Durability: WAL with synchronous=FULL unless the DSN asks
// for synchronous=normal; writes take the lock up front (BEGIN IMMEDIATE) so that concurrent
// processes queue on busy_timeout instead of failing on lock upgrades; one connection per
// process, since SQLite has one writer anyway.
func openSQLite(ctx context.Context, spec string) (*Store, error) {
	path, rawQuery, _ := strings.Cut(spec, "?")
	if path == "" {
		return nil, errors.New("ledger sqlite: empty path")
	}
	// Refused only when SQLite was initialised by other code of this process: the ledger is
	// then as correct, and slower (sqlitejournal.go).
	_ = configureSQLite()
	params, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("ledger sqlite:%s: %w", spec, err)
	}
	sync := "FULL"
	busy := "10000"
	for k, vs := range params {
		v := vs[len(vs)-1]
		switch k {
		case "synchronous":
			switch strings.ToUpper(v) {
			case "FULL", "NORMAL":
				sync = strings.ToUpper(v)
			default:
				return nil, fmt.Errorf("ledger sqlite: synchronous=%s: use full or normal", v)
			}
		case "busy_timeout":
			busy = v
		default:
			return nil, fmt.Errorf("ledger sqlite: unknown option %q (known: synchronous, busy_timeout)", k)
		}
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+busy+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "foreign_keys(1)")
	// A 64 MiB page cache and memory-mapped reads keep statistics over large ledgers off the
	// read syscalls; writes still go through the WAL.
	q.Add("_pragma", "cache_size(-65536)")
	q.Add("_pragma", "mmap_size(268435456)")
	q.Set("_txlock", "immediate")
	db, err := sqlx.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	identity := path
	if abs, err := filepath.Abs(path); err == nil {
		identity = abs
	}
	s := &Store{db: db, dialect: "sqlite", Synchronous: sync, now: time.Now, desc: "sqlite:" + path + " (synchronous=" + sync + ")", identity: "sqlite:" + identity}
	// Statistics read through their own connections: in WAL mode readers never wait for the
	// writer, and two of them rank in parallel. They open lazily; most commands never read.
	ro := url.Values{}
	for _, p := range q["_pragma"] {
		ro.Add("_pragma", p)
	}
	ro.Add("_pragma", "query_only(1)")
	s.readDSN = "file:" + path + "?" + ro.Encode()
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	if err := s.prepareHotPath(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	// One connection: one committer, batches as large as the callers queued.
	s.group = newCommitter(s, 1, 256)
	return s, nil
}

// Close waits for the writes already handed to the group committer, then releases the
// prepared statements and the connections.
func (s *Store) Close() error {
	if s.group != nil {
		s.group.close()
	}
	for _, st := range s.stmts {
		st.Close()
	}
	for _, m := range []*sync.Map{&s.batches, &s.claimStmts} {
		m.Range(func(_, st any) bool {
			st.(*sqlx.Stmt).Close()
			return true
		})
	}
	if s.reads != nil {
		s.reads.Close()
	}
	if s.claims != nil {
		s.claims.Close()
	}
	return s.db.Close()
}

// readers returns the connections for long reads: a read-only pool beside the writer where the
// database allows it, else the main connection.
func (s *Store) readers() (*sqlx.DB, error) {
	if s.readDSN == "" {
		return s.db, nil
	}
	s.readOnce.Do(func() {
		s.reads, s.readErr = sqlx.Open("sqlite", s.readDSN)
		if s.readErr == nil {
			s.reads.SetMaxOpenConns(2)
			s.reads.SetMaxIdleConns(2)
		}
	})
	return s.reads, s.readErr
}

// Dialect is "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.dialect }

// DB exposes the connection for benchmarks and tools.
func (s *Store) DB() *sqlx.DB { return s.db }

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// inTx runs fn in one transaction and commits it: one durable write. The transaction may be
// shared with other writes (group commit, see committer): fn must be safe to run twice.
func (s *Store) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.runTx(ctx, "", fn)
}

// runTx is inTx for a write about one run: the writes of one run always go to the same
// committer.
func (s *Store) runTx(ctx context.Context, runID string, fn func(tx *sqlx.Tx) error) error {
	if s.group == nil {
		return s.directTx(ctx, fn)
	}
	return s.group.submit(ctx, runID, fn, nil)
}

// runStmt is runTx for a write that one statement can also make (one, on PostgreSQL): fn is
// what runs when that statement cannot be pipelined with the others of its batch, or failed.
func (s *Store) runStmt(ctx context.Context, runID string, fn func(tx *sqlx.Tx) error, one *oneStmt) error {
	if s.group == nil {
		return s.directTx(ctx, fn)
	}
	return s.group.submit(ctx, runID, fn, one)
}

// directTx runs fn in a transaction of its own and commits it.
func (s *Store) directTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return retryable(s.txOnce(ctx, fn))
}

// txOnce is directTx, with an error of the commit itself marked as a *commitError.
func (s *Store) txOnce(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return &commitError{err}
	}
	return nil
}
