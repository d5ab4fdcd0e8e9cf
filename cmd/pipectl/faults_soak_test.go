package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/ledger"
)

// TestFaultKillSoak SIGKILLs `pipectl run` and `pipectl worker` processes at random points,
// on a SQLite file and on PostgreSQL: as they start, while they commit, between a side effect
// and the commit of its result, and just after the target answered (the result's commit). No
// run may be lost and no step key applied twice.
func TestFaultKillSoak(t *testing.T) {
	sz := faultForm(t)
	ledgers := []string{"sqlite", "postgres"}
	for _, which := range ledgers {
		t.Run(which, func(t *testing.T) {
			// Each part its own ledger: a SQLite file of its own, a schema of its own.
			dsn := func(t *testing.T, c *cli) string {
				if which == "postgres" {
					return postgresDSN(t)
				}
				return c.ledger
			}
			t.Run("run", func(t *testing.T) { soakRuns(t, sz.soakKills/2, dsn) })
			t.Run("worker", func(t *testing.T) { soakWorkers(t, sz.soakKills-sz.soakKills/2, dsn) })
		})
	}
}

// soakRuns runs inputs one after the other with `pipectl run`, killing tries at random until
// kills SIGKILLs happened, each input's command repeated until it exits 0.
func soakRuns(t *testing.T, kills int, ledgerOf func(*testing.T, *cli) string) {
	target := newCountTarget(t)
	c := newCLI(t, sideEffectSpec)
	c.useTarget(target.URL)
	c.ledger = ledgerOf(t, c)
	rnd := rand.New(rand.NewPCG(200, uint64(time.Now().UnixNano())))
	var mu sync.Mutex
	var current *exec.Cmd
	mode := ""
	killed := map[string]int{}
	kill := func(how string) {
		mu.Lock()
		defer mu.Unlock()
		if current != nil && mode == how {
			current.Process.Kill()
			killed[how]++
			mode = ""
		}
	}
	// Set under the target's lock, which its handler reads them under: the race detector sees
	// no other order between this goroutine and the handler's, which meet only through the
	// child process.
	target.mu.Lock()
	target.hook = func(_ *http.Request, _ string) (int, string, bool) { kill("on arrival"); return 0, "", false }
	target.answered = func(string) {
		mu.Lock()
		m := mode
		mu.Unlock()
		if m == "after the answer" {
			// The package's source, not rnd: this runs on the handler's goroutine.
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			kill(m)
		}
	}
	target.mu.Unlock()
	total, runs, started := 0, 0, time.Now()
	for ; total < kills; runs++ {
		input := fmt.Sprintf(`{"id": "soak-%04d", "url": %q}`, runs, target.URL)
		for try := 0; ; try++ {
			if try > 30 {
				t.Fatalf("run %d did not finish after 30 tries", runs)
			}
			cmd := c.command("run", c.spec, "--input", input)
			out := &lockedBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			how := ""
			if total < kills && rnd.IntN(3) != 0 {
				how = []string{"by timer", "on arrival", "after the answer"}[rnd.IntN(3)]
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Set once the process exists: a timer of an earlier try that fires late would
			// otherwise find a command not yet started, without a process to kill.
			mu.Lock()
			current, mode = cmd, how
			mu.Unlock()
			if how == "by timer" {
				d := time.Duration(rnd.IntN(150)) * time.Millisecond
				time.AfterFunc(d, func() { kill("by timer") })
			}
			err := cmd.Wait()
			mu.Lock()
			current, mode = nil, ""
			mu.Unlock()
			code := exitCodeOf(err)
			if code == -int(syscall.SIGKILL) {
				total++
				continue
			}
			if code != 0 {
				t.Fatalf("run %d try %d exited %d:\n%s", runs, try, code, out.String())
			}
			break
		}
	}
	all := c.runsJSON()
	if len(all) != runs {
		t.Errorf("the ledger has %d runs, want %d", len(all), runs)
	}
	for _, r := range all {
		if r["state"] != "succeeded" {
			t.Errorf("run %v is %v", r["id"], r["state"])
		}
	}
	dlv := target.check(t, 2*runs)
	t.Logf("pipectl run: %d runs, %d SIGKILLs (signalled: %v) in %s: 0 lost; %s", runs, total, killed, time.Since(started).Round(100*time.Millisecond), dlv)
}

// soakWorkers drains queued runs with three workers, killing one at random and starting a new
// one in its place until kills SIGKILLs happened.
func soakWorkers(t *testing.T, kills int, ledgerOf func(*testing.T, *cli) string) {
	target := newCountTarget(t)
	// Each request takes a while, so that a killed worker always has runs in flight.
	target.delay = 60 * time.Millisecond
	c := newCLI(t, workerSpec)
	c.useTarget(target.URL)
	dsn := ledgerOf(t, c)
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// A feeder keeps runs queued, so that the workers are busy whenever one is killed.
	var fed atomic.Int64
	feed := func(n int) error {
		inputs := make([]string, n)
		for i := range inputs {
			inputs[i] = fmt.Sprintf(`{"id": "order-%05d", "url": %q}`, int(fed.Load())+i, target.URL)
		}
		if err := submitMany(dsn, c.spec, inputs); err != nil {
			return err
		}
		fed.Add(int64(n))
		return nil
	}
	if err := feed(100); err != nil {
		t.Fatal(err)
	}
	stopFeeding, fedAll := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopFeeding:
				fedAll <- nil
				return
			case <-time.After(20 * time.Millisecond):
			}
			if c := ledgerCounts(store); c != nil && int64(c["succeeded"]+c["failed_permanent"]) >= fed.Load()-40 {
				if err := feed(60); err != nil {
					fedAll <- err
					return
				}
			}
		}
	}()
	rnd := rand.New(rand.NewPCG(201, uint64(time.Now().UnixNano())))
	args := []string{"--lease-ttl", "1s", "--poll", "100ms"}
	workers := []*faultWorker{startFaultWorker(t, c.dir, dsn, args...), startFaultWorker(t, c.dir, dsn, args...), startFaultWorker(t, c.dir, dsn, args...)}
	started := time.Now()
	total := 0
	for total < kills {
		time.Sleep(time.Duration(30+rnd.IntN(250)) * time.Millisecond)
		i := rnd.IntN(len(workers))
		workers[i].kill()
		total++
		workers[i] = startFaultWorker(t, c.dir, dsn, args...)
	}
	close(stopFeeding)
	if err := <-fedAll; err != nil {
		t.Fatal(err)
	}
	runs := int(fed.Load())
	counts := waitDone(t, store, runs, 3*time.Minute, nil)
	for _, w := range workers {
		w.stop()
	}
	if counts["succeeded"] != runs {
		t.Errorf("states after the kills: %v (want %d succeeded)%s", counts, runs, deadLetters(store))
	}
	dlv := target.check(t, 2*runs)
	t.Logf("pipectl worker: %d runs, %d SIGKILLs in %s: 0 lost; %d leases taken over; %s", runs, total, time.Since(started).Round(100*time.Millisecond), takeovers(t, store), dlv)
}
