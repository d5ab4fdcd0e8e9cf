// Package hostlane shares a few lanes among the processes of one host, each lane a locked file.
package hostlane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Lanes is a set of n lanes named by a key: processes of one host that use the same key
// share them, and at most n hold one at a time. A lane is an exclusive lock on a file, which
// the kernel drops when its process dies, so a crashed holder never keeps one.
type Lanes struct {
	paths []string
	// Every is how often Wait tries the lanes again; zero means 20 ms.
	Every time.Duration
}

// New returns n lanes keyed by key in dir (os.TempDir when empty). The key is hashed into
// the files' names, so it may hold anything (a connection string, a list of pipelines).
func New(dir, key string, n int) *Lanes {
	if dir == "" {
		dir = os.TempDir()
	}
	sum := sha256.Sum256([]byte(key))
	name := "pipectl-lane-" + hex.EncodeToString(sum[:8])
	l := &Lanes{}
	for i := range max(n, 1) {
		l.paths = append(l.paths, filepath.Join(dir, fmt.Sprintf("%s-%d.lock", name, i)))
	}
	return l
}

// TryTake holds a lane that is free now and returns its release; ok is false when every lane
// is held. An error means a lane's file could not be opened (a directory not writable, a file
// of another user): the caller should go on without lanes rather than wait for one.
func (l *Lanes) TryTake() (release func(), ok bool, err error) {
	for _, p := range l.paths {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return nil, false, fmt.Errorf("host lane %s: %w", p, err)
		}
		held, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, false, fmt.Errorf("host lane %s: %w", p, err)
		}
		if held {
			// Closing the file drops the lock: there is nothing else to undo.
			return func() { f.Close() }, true, nil
		}
		f.Close()
	}
	return nil, false, nil
}

// Wait tries the lanes every Every until it holds one, or ctx ends (then it returns ctx's
// error). It polls rather than blocks in the kernel, so that a caller that stops is never left
// with a goroutine that takes a lane later and holds it for nobody.
func (l *Lanes) Wait(ctx context.Context) (func(), error) {
	every := l.Every
	if every <= 0 {
		every = 20 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		release, ok, err := l.TryTake()
		if err != nil || ok {
			return release, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
