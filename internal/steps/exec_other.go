//go:build !linux

package steps

import "syscall"

// childSysProcAttr puts the child in its own process group. Only Linux has a parent-death
// signal; elsewhere a child outlives a pipectl that is killed with SIGKILL.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitExited returns at once: without waitid(WNOWAIT) the group is killed after Wait reaped
// the leader.
func waitExited(int) {}
