package engine

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Owner identifies a process that holds run leases: host, pid and the process start time, so
// that a recycled pid is not mistaken for the original process.
type Owner struct {
	Host  string
	PID   int
	Start string
}

func (o Owner) String() string { return fmt.Sprintf("%s:%d:%s", o.Host, o.PID, o.Start) }

// ParseOwner reads the form written by Owner.String.
func ParseOwner(s string) (Owner, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Owner{}, false
	}
	j := strings.LastIndexByte(s[:i], ':')
	if j < 0 {
		return Owner{}, false
	}
	pid, err := strconv.Atoi(s[j+1 : i])
	if err != nil {
		return Owner{}, false
	}
	return Owner{Host: s[:j], PID: pid, Start: s[i+1:]}, true
}

// CurrentOwner describes this process.
func CurrentOwner() Owner {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	pid := os.Getpid()
	return Owner{Host: host, PID: pid, Start: processStart(pid)}
}

// processStart returns the kernel's start time of a process (clock ticks since boot), or "" where
// /proc is not available.
func processStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may contain spaces and parentheses; fields resume after the
	// last ')'. Start time is field 22, the 20th after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// Gone reports whether an owner is known to be dead: it ran on this host and that process no
// longer exists (or the pid now belongs to another process). Owners on other hosts are never
// known to be gone; their leases must expire.
func (o Owner) Gone(self Owner) bool {
	if o.Host != self.Host || o.Start == "" {
		return false
	}
	return processStart(o.PID) != o.Start
}
