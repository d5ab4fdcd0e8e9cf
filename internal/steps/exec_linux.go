//go:build linux

package steps

import (
	"syscall"
	"unsafe"
)

// childSysProcAttr puts the child in its own process group and has the kernel kill it when
// pipectl dies, however it dies (SIGKILL included).
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitExited blocks until the process has exited, without reaping it: while it is a zombie its
// pid, and so its process group id, cannot be given to another process.
func waitExited(pid int) {
	const pPID = 1
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info[0])),
			syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			return
		}
	}
}
