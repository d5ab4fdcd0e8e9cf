//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package hostlane_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/hostlane"
)

// TestMain lets the test binary serve as another process of the host: with
// HOSTLANE_HOLD=dir:key it takes a lane (whose staleness is 200 ms), says so on stdout, and
// holds it until killed.
func TestMain(m *testing.M) {
	if v := os.Getenv("HOSTLANE_HOLD"); v != "" {
		dir, key, _ := strings.Cut(v, ":")
		lanes := hostlane.New(dir, key, 1)
		lanes.Stale = 200 * time.Millisecond
		release, ok, err := lanes.TryTake()
		if err != nil || !ok {
			os.Stdout.WriteString("refused\n")
			os.Exit(3)
		}
		defer release()
		os.Stdout.WriteString("held\n")
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

func take(t *testing.T, l *hostlane.Lanes) (func(), bool) {
	t.Helper()
	release, ok, err := l.TryTake()
	if err != nil {
		t.Fatal(err)
	}
	return release, ok
}

func TestLanesAreSharedByKeyAndCount(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	one := hostlane.New(dir, "ledger-a", 1)
	first, ok := take(t, one)
	if !ok {
		t.Fatal("a free lane was refused")
	}
	// Another holder in this process (its own open file, as another process has).
	if _, ok := take(t, hostlane.New(dir, "ledger-a", 1)); ok {
		t.Fatal("a second holder took the only lane")
	}
	if release, ok := take(t, hostlane.New(dir, "ledger-b", 1)); !ok {
		t.Fatal("the lanes of another key were taken by this one")
	} else {
		release()
	}
	first()
	again, ok := take(t, hostlane.New(dir, "ledger-a", 1))
	if !ok {
		t.Fatal("a released lane was not free again")
	}
	again()

	two := hostlane.New(dir, "ledger-c", 2)
	a, okA := take(t, two)
	b, okB := take(t, two)
	if !okA || !okB {
		t.Fatal("two lanes did not take two holders")
	}
	if _, ok := take(t, two); ok {
		t.Fatal("two lanes took a third holder")
	}
	a()
	b()
}

func TestWaitTakesTheLaneOnceItIsReleased(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	held, _ := take(t, hostlane.New(dir, "k", 1))
	waiter := hostlane.New(dir, "k", 1)
	waiter.Every = time.Millisecond
	got := make(chan func(), 1)
	go func() {
		release, stalled, err := waiter.Wait(context.Background())
		if err != nil || stalled {
			t.Error(stalled, err)
		}
		got <- release
	}()
	select {
	case <-got:
		t.Fatal("Wait returned while the lane was held")
	case <-time.After(50 * time.Millisecond):
	}
	held()
	select {
	case release := <-got:
		release()
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not take the released lane")
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	held, _ := take(t, hostlane.New(dir, "k", 1))
	defer held()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if release, _, err := hostlane.New(dir, "k", 1).Wait(ctx); !errors.Is(err, context.DeadlineExceeded) || release != nil {
		t.Fatalf("Wait = %v, %v; want the context's error and no lane", release != nil, err)
	}
}

// TestALaneOfAKilledProcessIsFree: another process holds the lane; this one cannot take it
// until that process is SIGKILLed, and then can, without anything to clean up.
func TestALaneOfAKilledProcessIsFree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	cmd := holder(t, dir, "shared")
	lanes := hostlane.New(dir, "shared", 1)
	if _, ok := take(t, lanes); ok {
		t.Fatal("took the lane another process holds")
	}
	cmd.Process.Kill()
	cmd.Wait()
	release, ok := take(t, lanes)
	if !ok {
		t.Fatal("the lane of a killed process is still held")
	}
	release()
}

// holder starts another process that holds the lane of key in dir, and returns once it does.
func holder(t *testing.T, dir, key string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), "HOSTLANE_HOLD="+dir+":"+key)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make([]byte, 5)
	if _, err := out.Read(line); err != nil || string(line) != "held\n" {
		t.Fatalf("the other process said %q (%v)", line, err)
	}
	return cmd
}

// TestWaitStopsWaitingForAFrozenHolder: while the other process holds its lane and lives, Wait
// waits; once it is frozen (SIGSTOP) its lane goes untouched, and Wait returns stalled, with
// no lane, instead of waiting for as long as it stays frozen.
func TestWaitStopsWaitingForAFrozenHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	cmd := holder(t, dir, "frozen")
	lanes := hostlane.New(dir, "frozen", 1)
	// The holder touches its lane every 50 ms: a Stale of a second here leaves room for a
	// loaded machine not to run it for a while.
	lanes.Stale, lanes.Every = time.Second, 5*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if _, stalled, err := lanes.Wait(ctx); stalled || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait beside a live holder = stalled %v, %v; want it to wait", stalled, err)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	release, stalled, err := lanes.Wait(ctx)
	if err != nil || !stalled || release == nil {
		t.Fatalf("Wait beside a frozen holder = stalled %v, %v; want stalled", stalled, err)
	}
	release()
	// A later Wait, while the holder stays frozen, says so at once rather than after Stale
	// again (a worker would otherwise wait that long before each drain).
	ctx, cancel = context.WithTimeout(context.Background(), lanes.Stale/2)
	defer cancel()
	if _, stalled, err := lanes.Wait(ctx); err != nil || !stalled {
		t.Fatalf("a second Wait beside the frozen holder = stalled %v, %v; want stalled at once", stalled, err)
	}
	// Thawed, it touches its lane again: a Wait waits for it again.
	cmd.Process.Signal(syscall.SIGCONT)
	time.Sleep(200 * time.Millisecond)
	ctx, cancel = context.WithTimeout(context.Background(), lanes.Stale/2)
	defer cancel()
	if _, stalled, err := lanes.Wait(ctx); stalled || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait beside the thawed holder = stalled %v, %v; want it to wait", stalled, err)
	}
	if _, ok, _ := lanes.TryTake(); ok {
		t.Fatal("took the lane the frozen process still holds")
	}
}

// TestLanesRefuseADirectoryOthersMayEnter: lanes in a directory other users may write to, or
// a lane file that is a symbolic link, are refused: another user could hold them for ever.
func TestLanesRefuseADirectoryOthersMayEnter(t *testing.T) {
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hostlane.New(open, "k", 1).TryTake(); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("lanes in a directory of mode 0777: %v; want a refusal", err)
	}
	private := filepath.Join(t.TempDir(), "private")
	lanes := hostlane.New(private, "k", 1)
	release, ok, err := lanes.TryTake()
	if err != nil || !ok {
		t.Fatalf("lanes in a new directory: %v %v", ok, err)
	}
	release()
	entries, _ := os.ReadDir(private)
	if len(entries) != 1 {
		t.Fatalf("%d files in the lanes' directory, want 1", len(entries))
	}
	file := filepath.Join(private, entries[0].Name())
	os.Remove(file)
	if err := os.Symlink(filepath.Join(t.TempDir(), "elsewhere"), file); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hostlane.New(private, "k", 1).TryTake(); err == nil {
		t.Fatal("a lane file that is a symbolic link was opened")
	}
	// A directory that is a link to one of the user's own, private, is refused as well: the
	// link could be swapped between the check and the opens.
	target, link := filepath.Join(t.TempDir(), "target"), filepath.Join(t.TempDir(), "link")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hostlane.New(link, "k", 1).TryTake(); err == nil {
		t.Fatal("lanes in a directory reached through a symbolic link were opened")
	}
}

// TestAFreshHolderIsNotTakenForAFrozenOne: a lane whose file was last touched long ago (it sat
// free) is taken; its holder touches it from then on. A waiter must not take the old time for
// a frozen holder: it counts from what it sees itself.
func TestAFreshHolderIsNotTakenForAFrozenOne(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	holderLanes := hostlane.New(dir, "k", 1)
	holderLanes.Stale = 200 * time.Millisecond
	release, ok, err := holderLanes.TryTake()
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer release()
	entries, _ := os.ReadDir(dir)
	long := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, entries[0].Name()), long, long); err != nil {
		t.Fatal(err)
	}
	waiter := hostlane.New(dir, "k", 1)
	waiter.Stale, waiter.Every = time.Second, 5*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if _, stalled, err := waiter.Wait(ctx); stalled || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait beside a holder that touches its lane = stalled %v, %v; want it to wait", stalled, err)
	}
}

// TestLanesOfAnotherCountAreOthers: processes asked for different numbers of lanes under one
// key do not share some of them (one lane each would otherwise be the same file).
func TestLanesOfAnotherCountAreOthers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	one, _ := take(t, hostlane.New(dir, "k", 1))
	defer one()
	two, ok := take(t, hostlane.New(dir, "k", 2))
	if !ok {
		t.Fatal("lanes of another count were taken by the one lane held")
	}
	two()
}

func TestALaneThatCannotBeOpenedIsAnError(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	if _, ok, err := hostlane.New(missing, "k", 1).TryTake(); err == nil || ok {
		t.Fatalf("TryTake in a missing directory = %v, %v; want an error", ok, err)
	}
	if _, _, err := hostlane.New(missing, "k", 1).Wait(context.Background()); err == nil {
		t.Fatal("Wait in a missing directory returned no error")
	}
}

// TestLanesFollowTheirFilesWhenRemoved: a cleaner of old temporary files removes the lane
// files while a process keeps them open. A process started after that creates new ones; the
// first must lock those, not the removed ones, or both would drain at once.
func TestLanesFollowTheirFilesWhenRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lanes")
	old := hostlane.New(dir, "k", 1)
	release, ok := take(t, old)
	if !ok {
		t.Fatal("a free lane was refused")
	}
	release()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Remove(filepath.Join(dir, e.Name()))
	}
	newer, ok := take(t, hostlane.New(dir, "k", 1))
	if !ok {
		t.Fatal("the new process could not take the lane")
	}
	defer newer()
	if _, ok := take(t, old); ok {
		t.Fatal("the process that kept the removed file took a lane the new one holds")
	}
}

// TestLanesRefuseWhatAnotherUserOwns: a directory, or a lane file in it, that another user
// made (ahead of this one, to hold the lanes for ever) is refused. It needs root, to make
// them as another user.
func TestLanesRefuseWhatAnotherUserOwns(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to make files of another user")
	}
	const nobody = 65534
	theirs := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(theirs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hostlane.New(theirs, "k", 1).TryTake(); err == nil || !strings.Contains(err.Error(), "another user") {
		t.Fatalf("lanes in another user's directory: %v; want a refusal", err)
	}
	mine := filepath.Join(t.TempDir(), "mine")
	release, ok := take(t, hostlane.New(mine, "k", 1))
	if !ok {
		t.Fatal("a free lane was refused")
	}
	release()
	entries, _ := os.ReadDir(mine)
	if err := os.Chown(filepath.Join(mine, entries[0].Name()), nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hostlane.New(mine, "k", 1).TryTake(); err == nil || !strings.Contains(err.Error(), "not a file of this user's") {
		t.Fatalf("a lane file of another user: %v; want a refusal", err)
	}
}
