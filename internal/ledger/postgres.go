package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // also registers the pgx driver under database/sql as "pgx"
	"github.com/jmoiron/sqlx"
)

// pgCommitters is how many group-commit transactions one process runs at once on PostgreSQL:
// one. While it commits a batch the next one forms, and a batch's chained commits are one
// statement (merged.go), whose cost per run falls as the batch grows: with two committers a
// draining worker's batches were half as large, and the server spent 10-15% more CPU per run
// (1,920-1,970 ms for 8,000 one-step runs against 1,720 with one; docs/scaling.md).
const pgCommitters = 1

// openPostgres opens a PostgreSQL ledger through pgx's database/sql driver. Transitions lock the
// run row (SELECT ... FOR UPDATE), so any number of processes on any number of machines can
// share it.
func openPostgres(ctx context.Context, dsn string) (*Store, error) {
	db, err := sqlx.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", redactDSN(dsn), err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger %s: %w", redactDSN(dsn), err)
	}
	s := &Store{db: db, dialect: "postgres", now: time.Now, desc: redactDSN(dsn), dsn: dsn, identity: postgresIdentity(dsn)}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger %s: %w", redactDSN(dsn), err)
	}
	s.group = newCommitter(s, pgCommitters, 64)
	if s.claims, err = openClaimPool(dsn); err != nil {
		s.Close()
		return nil, fmt.Errorf("ledger %s: %w", redactDSN(dsn), err)
	}
	return s, nil
}

// postgresIdentity is Store.Identity for dsn: what pgx connects to, with PG* variables applied.
func postgresIdentity(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return redactDSN(dsn)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?search_path=%s", cfg.User, cfg.Host, cfg.Port, cfg.Database, cfg.RuntimeParams["search_path"])
}

// openClaimPool opens the connections the one-statement claim runs on. Their planner never
// reads the queue by bitmap (and then sorts it): a claim wants the first n due runs, and
// walking runs_ready in its order finds them in n index entries however long the queue
// is. The planner picks that walk by itself only while its statistics say the queue is long;
// a queue filled faster than autovacuum analyzes (a bulk submit of 8,000 runs drained at once,
// seen) looks tiny to it, and it then read and sorted every queued run at each claim: 9.3 ms
// for a claim of 16 on 8,000 queued, against 0.2 ms in index order.
func openClaimPool(dsn string) (*sqlx.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["enable_bitmapscan"] = "off"
	// Runs queued by one bulk submit share their created_at, a thousand at a time. With
	// incremental sort the server reads the queue in runs_created order and sorts each such
	// group by id to take the first few: 4 ms a claim on a queue from `submit --inputs`,
	// against 0.3 ms reading runs_ready, already in (created_at, id) order.
	cfg.RuntimeParams["enable_incremental_sort"] = "off"
	// Each claim's generic plan is made once per connection, with the statistics of that
	// moment, and kept until the server analyzes the tables again. A worker that started on a
	// fresh ledger, step_attempts empty, checked whether each run it locked had begun with a
	// sequential scan of step_attempts, which a backfill then grew by thousands of rows a second:
	// 60-90 ms a claim after 20,000 runs. A claim reads every table by an index.
	cfg.RuntimeParams["enable_seqscan"] = "off"
	// A claim is planned in a millisecond and runs in one: compiling it is never worth it.
	cfg.RuntimeParams["jit"] = "off"
	// Each claim size is a statement of its own (claimSQL), planned with its limit known: the
	// server's first five executions of a prepared statement are planned again each time
	// before it settles on its generic plan, a millisecond of its CPU each, for up to 32 sizes
	// on each connection. Those would be a draining worker's first 10,000 claims' worth of
	// planning; the generic plan is the walk of the queue every time anyway.
	cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	// A claim limited to some pipelines goes by the simple protocol (claimArgs), which the
	// driver refuses unless strings are standard: a database set otherwise would leave such a
	// worker unable to claim.
	cfg.RuntimeParams["standard_conforming_strings"] = "on"
	db := sqlx.NewDb(stdlib.OpenDB(*cfg), "pgx")
	// A worker has at most two claims in flight.
	db.SetMaxOpenConns(2)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// DSN returns the connection string for components that need their own connection (LISTEN).
func (s *Store) DSN() string { return s.dsn }

// Listen delivers a wake-up whenever a run is queued (PostgreSQL LISTEN/NOTIFY), on a
// connection of its own that is re-established after errors. The channel closes when ctx ends.
// SQLite has no notifications: the channel then never fires and workers poll.
func (s *Store) Listen(ctx context.Context, log func(msg string, args ...any)) <-chan struct{} {
	wake := make(chan struct{}, 1)
	if s.dialect != "postgres" {
		go func() { <-ctx.Done(); close(wake) }()
		return wake
	}
	go func() {
		defer close(wake)
		for ctx.Err() == nil {
			if err := s.listenOnce(ctx, wake); err != nil && ctx.Err() == nil {
				log("listen for queued runs failed; polling until it is back", "error", err)
				select {
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
				}
			}
		}
	}()
	return wake
}

func (s *Store) listenOnce(ctx context.Context, wake chan<- struct{}) error {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return err
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}
