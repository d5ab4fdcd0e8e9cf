// Package hostlane shares a few lanes among the processes of one host, each lane a locked file.
package hostlane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Lanes is a set of n lanes named by a key: processes of one user and host that use the same
// key share them, and at most n hold one at a time. A lane is an exclusive lock on a file,
// which the kernel drops when its process dies, so a crashed holder never keeps one. A holder
// that is alive but frozen (SIGSTOP, a stalled VM) keeps its lock; it also stops touching the
// lane's file, and Wait stops waiting for it once it has seen the file untouched for Stale.
//
// The lane files are opened once and kept open: a waiter tries each lane with one flock call.
// A Lanes may be used from several goroutines.
type Lanes struct {
	dir   string
	names []string
	// Every is how often Wait tries the lanes again; zero means 20 ms.
	Every time.Duration
	// Stale is how long Wait must see every lane held and its file untouched before it stops
	// waiting for their holders; zero means 10 s. A holder touches its lane every quarter of
	// its own Stale, so processes that share lanes should use the same value.
	Stale time.Duration

	mu    sync.Mutex
	files []*os.File
	held  []bool
	first int
	// frozen are the lanes' times when a Wait last found their holders frozen: a later Wait
	// that finds them the same says so at once, instead of waiting Stale again before every
	// claim for as long as they stay frozen.
	frozen []time.Time
}

// Supported says whether lanes can be taken on this system.
func Supported() bool { return supported }

// New returns n lanes keyed by key, in dir. An empty dir is a directory of this user's in
// os.TempDir, which only the user may enter: no other user can take or hold these lanes. The
// key is hashed into the files' names, so it may hold anything (a connection string with its
// password, a list of pipelines); so is n, so that processes asked for different numbers of
// lanes do not share some of them.
func New(dir, key string, n int) *Lanes {
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("pipectl-lanes-%d", os.Getuid()))
	}
	n = max(n, 1)
	sum := sha256.Sum256(fmt.Appendf(nil, "%d\x00%s", n, key))
	name := "lane-" + hex.EncodeToString(sum[:8])
	l := &Lanes{dir: dir, first: os.Getpid() % n}
	for i := range n {
		l.names = append(l.names, fmt.Sprintf("%s-%d.lock", name, i))
	}
	return l
}

func (l *Lanes) stale() time.Duration {
	if l.Stale > 0 {
		return l.Stale
	}
	return 10 * time.Second
}

// open opens the lane files the first time (l.mu held); a failure is not kept, so a later
// call tries again. Files that were removed meanwhile (a cleaner of old temporary files) are
// opened again while none is held: processes started since then lock the new files, and this
// one must lock the same.
func (l *Lanes) open() error {
	if l.files != nil && !l.removed() {
		return nil
	}
	for _, f := range l.files {
		f.Close()
	}
	l.files, l.held = nil, nil
	files, err := openLanes(l.dir, l.names)
	if err != nil {
		return fmt.Errorf("host lanes in %s: %w", l.dir, err)
	}
	l.files, l.held = files, make([]bool, len(files))
	return nil
}

// TryTake holds a lane that is free now and returns its release; ok is false when every lane
// is held. An error means the lanes cannot be used now (a directory another user owns or may
// write to, a file that cannot be opened): the caller should go on without a lane rather than
// wait for one.
func (l *Lanes) TryTake() (release func(), ok bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.open(); err != nil {
		return nil, false, err
	}
	for k := range l.files {
		i := (l.first + k) % len(l.files)
		if l.held[i] {
			continue // this process's own lock on that file would be taken again
		}
		held, err := tryLock(l.files[i])
		if err != nil {
			return nil, false, fmt.Errorf("host lane %s: %w", l.files[i].Name(), err)
		}
		if held {
			l.held[i] = true
			return l.hold(i), true, nil
		}
	}
	return nil, false, nil
}

// hold touches lane i's file now and every quarter of Stale until released, as the sign that
// its holder is alive (l.mu held).
func (l *Lanes) hold(i int) func() {
	f := l.files[i]
	touch(f)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(l.stale() / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				touch(f)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-stopped
			l.mu.Lock()
			defer l.mu.Unlock()
			unlock(f)
			l.held[i] = false
		})
	}
}

// Wait tries the lanes every Every until it holds one, or ctx ends (then it returns ctx's
// error). It polls rather than blocks in the kernel, so that a caller that stops is never left
// with a goroutine that takes a lane later and holds it for nobody.
//
// When it has seen every lane held, each with its file untouched, for Stale by its own clock,
// Wait returns stalled and no lane (release does nothing): the caller goes on as if it held
// one, since waiting for a frozen process would stop this one too. It counts from what it saw
// itself, not from the files' times, so a lane taken just before a touch, or a step of the
// wall clock, is not taken for a frozen holder.
func (l *Lanes) Wait(ctx context.Context) (release func(), stalled bool, err error) {
	every := l.Every
	if every <= 0 {
		every = 20 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	seen := make([]sight, len(l.names))
	for {
		release, ok, err := l.TryTake()
		if err != nil || ok {
			return release, false, err
		}
		if l.frozenNow(seen, time.Now()) {
			return func() {}, true, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-t.C:
		}
	}
}

// removed says whether one of the open lane files no longer has a name and none is held.
func (l *Lanes) removed() bool {
	for i, f := range l.files {
		if l.held[i] {
			return false
		}
		if unlinked(f) {
			return true
		}
	}
	return false
}

// sight is what a Wait saw of a lane's file: its time, and since when it has seen that time.
type sight struct {
	touched time.Time
	since   time.Time // this process's clock (monotonic)
}

// frozenNow updates seen with the lanes' times at now, and says whether their holders are
// frozen: every lane untouched for Stale by what seen holds, or every lane as untouched as
// when an earlier Wait found them frozen (which it then records again).
func (l *Lanes) frozenNow(seen []sight, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	frozen, again := len(l.files) == len(seen), len(l.frozen) == len(seen)
	for i := range seen {
		var touched time.Time
		if i < len(l.files) {
			if fi, err := l.files[i].Stat(); err == nil {
				touched = fi.ModTime()
			}
		}
		if touched.IsZero() || !touched.Equal(seen[i].touched) || seen[i].since.IsZero() {
			seen[i] = sight{touched, now}
		}
		if touched.IsZero() || now.Sub(seen[i].since) < l.stale() {
			frozen = false
		}
		if touched.IsZero() || !again || !l.frozen[i].Equal(touched) {
			again = false
		}
	}
	if !frozen && !again {
		return false
	}
	l.frozen = l.frozen[:0]
	for _, s := range seen {
		l.frozen = append(l.frozen, s.touched)
	}
	return true
}
