//go:build linux

package main

import "syscall"

// hideEnvironment makes this process non-dumpable: processes of the same user, exec children
// included, can then no longer read /proc/PID/environ or /proc/PID/mem, where the secrets and
// provider keys pipectl was started with live. A process with CAP_SYS_PTRACE (root) still can.
// It also turns off core dumps, which would hold the same secrets.
func hideEnvironment() error {
	const prSetDumpable = 4
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
