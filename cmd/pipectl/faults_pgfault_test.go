package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/ledger"
)

// pgDrain is a drain of queued runs by three worker processes on a PostgreSQL ledger that the
// test breaks meanwhile.
type pgDrain struct {
	runs    int
	target  *countTarget
	store   *ledger.Store
	workers []*faultWorker
	start   time.Time
}

// startPGDrain queues runs of workerSpec (two POSTs and a transform each) on the ledger at
// observe and starts three workers on workerDSN (the same database, perhaps through a proxy).
func startPGDrain(t *testing.T, observeDSN, workerDSN string, runs int) *pgDrain {
	t.Helper()
	d := &pgDrain{runs: runs, target: newCountTarget(t)}
	d.target.delay = 40 * time.Millisecond
	c := newCLI(t, workerSpec)
	c.useTarget(d.target.URL)
	inputs := make([]string, runs)
	for i := range inputs {
		inputs[i] = fmt.Sprintf(`{"id": "order-%04d", "url": %q}`, i, d.target.URL)
	}
	if err := submitMany(observeDSN, c.spec, inputs); err != nil {
		t.Fatal(err)
	}
	store, err := ledger.Open(context.Background(), observeDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	d.store = store
	d.start = time.Now()
	for range 3 {
		d.workers = append(d.workers, startFaultWorker(t, c.dir, workerDSN))
	}
	return d
}

// finish waits for the drain to end and checks the assertions every database fault shares:
// every run succeeded, every step key applied once, no lease left, the workers still the
// same processes (they reconnected by themselves) and each claiming after lastFault.
func (d *pgDrain) finish(t *testing.T, lastFault time.Time) string {
	t.Helper()
	counts := waitDone(t, d.store, d.runs, 5*time.Minute, nil)
	took := time.Since(d.start)
	if counts["succeeded"] != d.runs {
		t.Errorf("states after the faults: %v (want %d succeeded)%s", counts, d.runs, deadLetters(d.store))
	}
	var leased int
	if err := d.store.DB().Get(&leased, `SELECT COUNT(*) FROM runs WHERE lease_owner <> '' OR state = 'processing'`); err != nil {
		t.Fatal(err)
	}
	if leased != 0 {
		t.Errorf("%d runs still hold a lease after the drain", leased)
	}
	for i, w := range d.workers {
		if !w.alive() {
			t.Errorf("worker %d exited during the faults: %v\n%s", i, w.err, tail(w.log.String(), 3000))
			continue
		}
		if n := claimsSince(t, d.store, w, lastFault); n == 0 {
			t.Errorf("worker %d (%s) claimed nothing after the last fault", i, w.prefix)
		}
	}
	taken := takeovers(t, d.store)
	if dir := os.Getenv("PIPECTL_FAULTS_LOGS"); dir != "" {
		// The workers' logs, kept for a look at what happened.
		for i, w := range d.workers {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-worker%d.log", t.Name(), i)), []byte(w.log.String()), 0o644)
		}
	}
	for i, w := range d.workers {
		if err := w.stop(); err != nil {
			t.Errorf("worker %d did not drain cleanly: %v", i, err)
		}
	}
	dlv := d.target.check(t, 2*d.runs)
	return fmt.Sprintf("%d runs in %s; %s; %d leases taken over; the workers said: %s", d.runs, took.Round(100*time.Millisecond), dlv, taken, d.said())
}

// said sums up the warnings and the runs the workers let go, by message, without run ids.
func (d *pgDrain) said() string {
	counts := map[string]int{}
	for _, w := range d.workers {
		for _, line := range strings.Split(w.log.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			if rec["level"] != "WARN" && rec["level"] != "ERROR" && rec["msg"] != "run left the worker" {
				continue
			}
			why := fmt.Sprint(rec["msg"])
			for _, k := range []string{"reason", "error"} {
				if v, ok := rec[k].(string); ok {
					why += ": " + runIDs.ReplaceAllString(v, "RUN")
				}
			}
			counts[tail(why, 160)]++
		}
	}
	var out []string
	for why, n := range counts {
		out = append(out, fmt.Sprintf("%dx %s", n, why))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "nothing"
	}
	return "\n    " + strings.Join(out, "\n    ")
}

var runIDs = regexp.MustCompile(`[0-9a-z]{26}`)

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// TestFaultPostgresRestart restarts PostgreSQL (alternately a fast shutdown and a crash) while
// three workers drain the runs: every run must succeed, every step key be applied exactly once,
// no lease stay behind, and the workers carry on without being restarted. It reports how long
// the ledger took to complete a run again after each restart.
func TestFaultPostgresRestart(t *testing.T) {
	sz := faultForm(t)
	pg := newFaultPG(t)
	d := startPGDrain(t, pg.dsn, pg.dsn, sz.restartRuns)
	rnd := rand.New(rand.NewPCG(17, uint64(time.Now().UnixNano())))
	var recoveries []string
	var lastFault time.Time
	for i := range sz.restarts {
		// Let the drain make progress between restarts.
		before := ledgerCounts(d.store)["succeeded"]
		waitDone(t, d.store, before+10+rnd.IntN(20), 30*time.Second, nil)
		if c := ledgerCounts(d.store); c["succeeded"]+c["failed_permanent"] >= d.runs-30 {
			t.Fatalf("the drain was nearly over after %d of %d restarts (%v): more runs are needed", i, sz.restarts, c)
		}
		start := time.Now()
		what, err := pg.fault(t, i%2 == 1)
		if err != nil {
			t.Fatal(err)
		}
		up := time.Since(start)
		lastFault = time.Now()
		// Recovered: a run completed after the server was back.
		var base map[string]int
		for base == nil {
			base = ledgerCounts(d.store)
		}
		waitDone(t, d.store, base["succeeded"]+base["failed_permanent"]+1, time.Minute, nil)
		recoveries = append(recoveries, fmt.Sprintf("%s: down %s, next run completed %s after the restart began",
			what, up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)))
	}
	summary := d.finish(t, lastFault)
	t.Logf("mode %s, form %s: %s\n  %s", pg.mode, sz.form, summary, strings.Join(recoveries, "\n  "))
}
