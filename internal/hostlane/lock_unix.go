//go:build unix

package hostlane

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// privateDir makes dir if it is missing and checks that it is this user's alone: a lane
// another user could open could also be held by that user, for ever.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return errors.New("not a directory")
	case !ok || int(st.Uid) != os.Getuid():
		return errors.New("owned by another user")
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("mode %v lets other users in (want 0700)", fi.Mode().Perm())
	}
	return nil
}

func openLane(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
}

// tryLock takes f's exclusive flock without waiting. A flock belongs to the open file, not to
// the process, so two opens in one process exclude each other as two processes do.
func tryLock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		default:
			return false, err
		}
	}
}

// touch sets f's times to now. A failure is left: the worst it does is let a waiter stop
// waiting for this holder.
func touch(f *os.File) {
	now := syscall.NsecToTimeval(time.Now().UnixNano())
	_ = syscall.Futimes(int(f.Fd()), []syscall.Timeval{now, now})
}
