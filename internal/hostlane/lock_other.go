//go:build !unix

package hostlane

import (
	"errors"
	"os"
)

var errNoFlock = errors.New("host lanes need flock, which this system does not have")

func privateDir(string) error { return errNoFlock }

func openLane(string) (*os.File, error) { return nil, errNoFlock }

func tryLock(*os.File) (bool, error) { return false, errNoFlock }

func touch(*os.File) {}
