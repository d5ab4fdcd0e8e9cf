//go:build !unix

package hostlane

import (
	"errors"
	"os"
)

// tryLock has no lock to take here: the caller goes on without lanes.
func tryLock(*os.File) (bool, error) {
	return false, errors.New("host lanes need flock, which this system does not have")
}
