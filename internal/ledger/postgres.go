package ledger

import (
	"context"
	"fmt"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the pgx driver under database/sql as "pgx"
	"github.com/jmoiron/sqlx"
)

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
	s := &Store{db: db, dialect: "postgres", now: time.Now, desc: redactDSN(dsn), dsn: dsn}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger %s: %w", redactDSN(dsn), err)
	}
	return s, nil
}

// DSN returns the connection string for components that need their own connection (LISTEN).
func (s *Store) DSN() string { return s.dsn }

