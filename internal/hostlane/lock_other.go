//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package hostlane

import (
	"errors"
	"os"
)

const supported = false

var errNoFlock = errors.New("host lanes need flock, which pipectl does not use on this system")

func openLanes(string, []string) ([]*os.File, error) { return nil, errNoFlock }

func tryLock(*os.File) (bool, error) { return false, errNoFlock }

func unlock(*os.File) {}

func touch(*os.File) {}

func unlinked(*os.File) bool { return false }
