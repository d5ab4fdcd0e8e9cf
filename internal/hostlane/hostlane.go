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
// lane's file, and Wait stops waiting for it after Stale.
type Lanes struct {
	dir   string
	paths []string
	// Every is how often Wait tries the lanes again; zero means 20 ms.
	Every time.Duration
	// Stale is how long a held lane's file may go untouched before Wait stops waiting for
	// its holder; zero means 10 s. A holder touches it every quarter of that.
	Stale time.Duration
}

// New returns n lanes keyed by key, in dir. An empty dir is a directory of this user's in
// os.TempDir, which only the user may enter: no other user can take or hold these lanes. The
// key is hashed into the files' names, so it may hold anything (a connection string with its
// password, a list of pipelines).
func New(dir, key string, n int) *Lanes {
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("pipectl-lanes-%d", os.Getuid()))
	}
	sum := sha256.Sum256([]byte(key))
	name := "lane-" + hex.EncodeToString(sum[:8])
	l := &Lanes{dir: dir}
	for i := range max(n, 1) {
		l.paths = append(l.paths, filepath.Join(dir, fmt.Sprintf("%s-%d.lock", name, i)))
	}
	return l
}

func (l *Lanes) stale() time.Duration {
	if l.Stale > 0 {
		return l.Stale
	}
	return 10 * time.Second
}

// TryTake holds a lane that is free now and returns its release; ok is false when every lane
// is held. An error means the lanes cannot be used here (a directory another user owns or may
// write to, a file that cannot be opened): the caller should go on without lanes rather than
// wait for one.
func (l *Lanes) TryTake() (release func(), ok bool, err error) {
	if err := privateDir(l.dir); err != nil {
		return nil, false, fmt.Errorf("host lanes in %s: %w", l.dir, err)
	}
	for _, p := range l.paths {
		f, err := openLane(p)
		if err != nil {
			return nil, false, fmt.Errorf("host lane %s: %w", p, err)
		}
		held, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, false, fmt.Errorf("host lane %s: %w", p, err)
		}
		if held {
			return l.hold(f), true, nil
		}
		f.Close()
	}
	return nil, false, nil
}

// hold touches the held lane's file now and every quarter of Stale until released, as the
// sign that its holder is alive. Closing the file drops the lock.
func (l *Lanes) hold(f *os.File) func() {
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
			f.Close()
		})
	}
}

// Wait tries the lanes every Every until it holds one, or ctx ends (then it returns ctx's
// error). It polls rather than blocks in the kernel, so that a caller that stops is never left
// with a goroutine that takes a lane later and holds it for nobody.
//
// When every lane is held by a holder that has not touched it for Stale, Wait returns
// stalled and no lane (release does nothing): the caller goes on as if it held one, since
// waiting for a frozen process would stop this one too.
func (l *Lanes) Wait(ctx context.Context) (release func(), stalled bool, err error) {
	every := l.Every
	if every <= 0 {
		every = 20 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		release, ok, err := l.TryTake()
		if err != nil || ok {
			return release, false, err
		}
		if l.allStale() {
			return func() {}, true, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-t.C:
		}
	}
}

// allStale says whether no lane's file was touched within Stale.
func (l *Lanes) allStale() bool {
	for _, p := range l.paths {
		fi, err := os.Stat(p)
		if err != nil || time.Since(fi.ModTime()) < l.stale() {
			return false
		}
	}
	return true
}
