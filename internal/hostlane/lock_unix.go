//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package hostlane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const supported = true

// openLanes opens (creating them) the lane files names in dir, which it makes if it is
// missing. The directory must be this user's alone: a lane another user could open could
// also be held by that user, for ever. It is opened once without following a link and
// checked through that descriptor, and the files are opened relative to it, so that nothing
// can be swapped in between the check and the opens.
func openLanes(dir string, names []string) ([]*os.File, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return nil, err
	}
	switch {
	case int(st.Uid) != os.Getuid():
		return nil, errors.New("owned by another user")
	case st.Mode&0o077 != 0:
		return nil, fmt.Errorf("mode %#o lets other users in (want 0700)", st.Mode&0o777)
	}
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for _, name := range names {
		fd, err := unix.Openat(dfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", name, err))
		}
		f := os.NewFile(uintptr(fd), filepath.Join(dir, name))
		files = append(files, f)
		if err := unix.Fstat(fd, &st); err != nil {
			return fail(err)
		}
		if int(st.Uid) != os.Getuid() || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fail(fmt.Errorf("%s: not a file of this user's", name))
		}
	}
	return files, nil
}

// tryLock takes f's exclusive flock without waiting. A flock belongs to the open file, not to
// the process, so two opens in one process exclude each other as two processes do.
func tryLock(f *os.File) (bool, error) {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return false, err
		}
	}
}

func unlock(f *os.File) { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }

// touch marks f as touched now, by writing its one byte: that needs nothing but the open
// file (setting its times by descriptor goes through /proc on Linux, which a sandbox may not
// mount). A failure is left: the worst it does is let a waiter stop waiting for this holder.
func touch(f *os.File) { _, _ = f.WriteAt([]byte{0}, 0) }

// unlinked says whether f's file was removed (no name points to it any more).
func unlinked(f *os.File) bool {
	var st unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && st.Nlink == 0
}
