//go:build unix

package hostlane

import (
	"errors"
	"os"
	"syscall"
)

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
