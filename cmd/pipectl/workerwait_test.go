package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/ledger"
)

// TestWorkerWaitsForItsDatabase starts a worker while its PostgreSQL cannot be reached (nothing
// listens on the DSN's port): it must keep trying and say so, not exit, and drain the queue once
// the database is there (found by TestFaultDroppedConnections: a worker whose connection was
// cut while it applied migrations at start exited 2).
func TestWorkerWaitsForItsDatabase(t *testing.T) {
	dsn := postgresDSN(t)
	target := newCountTarget(t)
	c := newCLI(t, workerSpec)
	c.useTarget(target.URL)
	if err := submitMany(dsn, c.spec, []string{fmt.Sprintf(`{"id": "wait-1", "url": %q}`, target.URL)}); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	backend := u.Host
	u.Host = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w := startFaultWorker(t, c.dir, u.String())
	for !strings.Contains(w.log.String(), "ledger unreachable; trying again") {
		if !w.alive() {
			t.Fatalf("the worker exited while its database was unreachable: %v\n%s", w.err, w.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	newCutProxyAt(t, u.Host, backend) // the database appears at the DSN's address
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if counts := waitDone(t, store, 1, time.Minute, nil); counts["succeeded"] != 1 {
		t.Fatalf("the run was not drained once the database was there: %v\n%s", counts, w.log.String())
	}
	if err := w.stop(); err != nil {
		t.Fatalf("worker: %v", err)
	}
	target.check(t, 2)
}
