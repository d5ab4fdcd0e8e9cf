package ledger

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"
)

// Group commit: the writes of many runs share one transaction.
//
// Each write (a transition, an attempt's intent or result, a new run) is a closure over a
// transaction. Instead of committing it alone, the caller hands it to a committer goroutine,
// which runs every closure waiting at that moment in one transaction and commits once. Each
// caller is answered only after the commit that contains its write, so nothing a caller does
// next (the next side effect of its run) happens before its write is durable: the promise of
// a commit per write, at the price of one commit per batch.
//
// When any closure of a batch fails (a lease refused, a deadlock, a cancelled caller), the
// batch is rolled back and every closure of it runs again in a transaction of its own: errors
// stay with their caller and one run's refusal never costs another run its write. Closures must
// therefore be safe to run twice, starting from the state they were first given (they reset
// what they fill in).
//
// A batch forms naturally: while one commits, the next callers queue. Nobody waits for a batch
// to fill. The writes of one run always go to the same committer, so two batches of one
// process never lock the rows of the same run in opposite orders. There is one committer per
// process (pgCommitters on PostgreSQL; SQLite has one connection).
type committer struct {
	s     *Store
	parts []chan *txRequest
	quit  chan struct{}
	done  sync.WaitGroup
	max   int
	once  sync.Once
}

type txRequest struct {
	ctx    context.Context
	fn     func(*sqlx.Tx) error
	result chan error
	// one, when set, is the same write as fn in a single statement (PostgreSQL): a batch made
	// only of such writes is sent in one round trip (see pipeline).
	one *oneStmt
}

// oneStmt is a write that is one statement returning one row. scan reads that row and says
// what the caller is told once the batch commits (nil, or a refusal such as a lost lease). The
// statement must write nothing when it returns a refusal, and must fail (an SQL error) rather
// than write part of what it should: the writes of a pipelined batch commit together.
type oneStmt struct {
	query string // with $n placeholders
	args  []any
	scan  func(row interface{ Scan(...any) error }) error
	// merge, when set, is the same write as values that mergedSQL can write together with
	// other runs' (see merged.go); query, args and scan are then left to single, which makes
	// them for a write that goes alone.
	merge  *chainedWrite
	single func() *oneStmt
}

// statement is the write as a statement of its own.
func (o *oneStmt) statement() *oneStmt {
	if o.single != nil {
		return o.single()
	}
	return o
}

func newCommitter(s *Store, parts, maxBatch int) *committer {
	c := &committer{s: s, quit: make(chan struct{}), max: maxBatch}
	for range parts {
		ch := make(chan *txRequest)
		c.parts = append(c.parts, ch)
		c.done.Add(1)
		go c.loop(ch)
	}
	return c
}

// submit runs fn in the next batch of the committer that owns key and returns its outcome once
// that batch committed or failed. A caller whose ctx ends before its closure was taken gets
// ctx's error and nothing is written; once taken, it waits for the outcome, since the write
// may be committed. After close, writes commit alone.
func (c *committer) submit(ctx context.Context, key string, fn func(*sqlx.Tx) error, one *oneStmt) error {
	r := &txRequest{ctx: ctx, fn: fn, result: make(chan error, 1), one: one}
	select {
	case c.parts[c.part(key)] <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.quit:
		return c.s.directTx(ctx, fn)
	}
	return <-r.result
}

func (c *committer) part(key string) int {
	if len(c.parts) == 1 || key == "" {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(len(c.parts)))
}

// close stops taking writes and waits for the batches in progress: every write taken is
// committed (or has failed) when it returns.
func (c *committer) close() {
	c.once.Do(func() { close(c.quit) })
	c.done.Wait()
}

func (c *committer) loop(in chan *txRequest) {
	defer c.done.Done()
	batch := make([]*txRequest, 0, c.max)
	for {
		select {
		case <-c.quit:
			return
		case r := <-in:
			batch = append(batch[:0], r)
		}
		// Everyone who queued while the last batch committed goes into this one.
	gather:
		for len(batch) < c.max {
			select {
			case r := <-in:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		c.run(batch)
		clear(batch)
	}
}

// run commits a batch, or, when a closure of it fails, each closure alone.
func (c *committer) run(batch []*txRequest) {
	// A caller that gave up before its turn writes nothing.
	live := make([]*txRequest, 0, len(batch))
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.result <- err
			continue
		}
		live = append(live, r)
	}
	batch = live
	if len(batch) == 0 {
		return
	}
	if c.s.dialect == "postgres" && allOne(batch) {
		c.pipeline(batch)
		return
	}
	switch len(batch) {
	case 1:
		r := batch[0]
		r.result <- c.s.directTx(r.ctx, r.fn)
		return
	}
	err := c.s.txOnce(context.Background(), func(tx *sqlx.Tx) error {
		for _, r := range batch {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			if err := r.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || isCommitError(err) {
		// The commit's outcome is every write's outcome: on an error at commit nobody can
		// tell whether it was applied, exactly as with a transaction of its own.
		for _, r := range batch {
			r.result <- retryable(err)
		}
		return
	}
	for _, r := range batch {
		r.result <- c.s.directTx(r.ctx, r.fn)
	}
}

// commitError marks an error of the commit itself, as opposed to one of a closure.
type commitError struct{ err error }

func (e *commitError) Error() string { return e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

func isCommitError(err error) bool {
	_, ok := err.(*commitError)
	return ok
}

func unwrapCommit(err error) error {
	if ce, ok := err.(*commitError); ok {
		return ce.err
	}
	return err
}

func allOne(batch []*txRequest) bool {
	for _, r := range batch {
		if r.one == nil {
			return false
		}
	}
	return true
}

// pipeline sends the statements of a batch in one round trip and without BEGIN or COMMIT: the
// statements up to the protocol's Sync run in one implicit transaction, which commits at the
// Sync when all succeeded and is rolled back when one failed. A round trip instead of one per
// statement plus two is most of a busy worker's CPU per run on PostgreSQL. Each caller is
// answered after the commit, as in run; when a statement failed (nothing was written), every
// write goes again alone through its fn, so that an error stays with its caller.
func (c *committer) pipeline(batch []*txRequest) {
	ctx := context.Background()
	outcomes := make([]error, len(batch))
	err := c.s.pipelineOnce(ctx, batch, outcomes)
	switch {
	case err == nil:
		for i, r := range batch {
			r.result <- outcomes[i]
		}
	case rolledBack(err):
		for _, r := range batch {
			r.result <- c.s.directTx(r.ctx, r.fn)
		}
	default:
		// The connection failed with the batch sent, or maybe not: the sync point is the
		// commit, so this is an error at COMMIT (retryable when pgconn says nothing was sent).
		for _, r := range batch {
			r.result <- retryable(&commitError{err})
		}
	}
}

func (s *Store) pipelineOnce(ctx context.Context, batch []*txRequest, outcomes []error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return &batchNotSent{err}
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		pc, ok := dc.(interface{ Conn() *pgx.Conn })
		if !ok {
			return &batchNotSent{fmt.Errorf("group commit: driver connection %T is not pgx's", dc)}
		}
		merged, rest := splitMerged(batch)
		writes := make([]*chainedWrite, len(merged))
		for i, m := range merged {
			writes[i] = batch[m].one.merge
		}
		b := &pgx.Batch{}
		if len(merged) > 0 {
			b.Queue(mergedSQL, mergedArgs(writes)...)
		}
		alone := make([]*oneStmt, len(rest))
		for k, i := range rest {
			alone[k] = batch[i].one.statement()
			b.Queue(alone[k].query, alone[k].args...)
		}
		br := pc.Conn().SendBatch(ctx, b)
		if len(merged) > 0 {
			rows, err := br.Query()
			if err != nil {
				br.Close()
				return err
			}
			outs, err := mergedOutcomes(writes, rows)
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
			if err != nil {
				br.Close()
				return err
			}
			for i, m := range merged {
				outcomes[m] = outs[i]
			}
		}
		for k, i := range rest {
			outcomes[i] = alone[k].scan(br.QueryRow())
		}
		return br.Close()
	})
}

// mergedMaxBytes bounds what one merged statement carries. The server refuses a message of a
// gigabyte or more, and drops the connection then, which leaves every write of the batch with
// an unknown outcome; a write past the bound goes in a statement of its own.
const mergedMaxBytes = 32 << 20

// splitMerged divides a batch into the writes mergedSQL takes together (the indexes of
// merged, at least two, of distinct runs, mergedMaxBytes at most) and the rest, each its own
// statement.
func splitMerged(batch []*txRequest) (merged, rest []int) {
	runs := make(map[string]bool, len(batch))
	size := 0
	for i, r := range batch {
		if m := r.one.merge; m != nil && !runs[m.runID] {
			if n := m.size(); size+n <= mergedMaxBytes {
				runs[m.runID] = true
				size += n
				merged = append(merged, i)
				continue
			}
		}
		rest = append(rest, i)
	}
	if len(merged) < 2 {
		// One write gains nothing from arrays; its own statement is the one it was tested as.
		merged, rest = nil, make([]int, len(batch))
		for i := range rest {
			rest[i] = i
		}
	}
	return merged, rest
}

// batchNotSent is an error before anything was sent to the server.
type batchNotSent struct{ err error }

func (e *batchNotSent) Error() string { return e.err.Error() }
func (e *batchNotSent) Unwrap() error { return e.err }

// rolledBack says whether a pipelined batch that failed with err certainly wrote nothing: it
// was never sent, or the server refused a statement of it (and so rolled the implicit
// transaction back) on a connection that is still up.
func rolledBack(err error) bool {
	var ns *batchNotSent
	if errors.As(err, &ns) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && !unreachable(err)
}
