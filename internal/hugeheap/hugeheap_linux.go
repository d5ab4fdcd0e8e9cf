//go:build linux && (amd64 || arm64 || ppc64le || riscv64 || s390x || loong64)

package hugeheap

import (
	"runtime"
	"syscall"
	"unsafe"
)

// Not in package syscall's tables on every architecture.
const (
	madvHugePage = 14
	madvCollapse = 25
)

func init() {
	if godebug, _ := syscall.Getenv("GODEBUG"); disabledByGODEBUG(godebug) {
		applied.Skipped = "GODEBUG=disablethp=1"
		return
	}
	// A large allocation makes the runtime map fresh heap for it right away, without touching
	// it (fresh mappings are known to be zero). The mapping is then advised while still
	// untouched, so the first touch of each 2 MiB range faults in one huge page instead of 512
	// small ones. A collection then frees the block: its pages go back to the page allocator,
	// still mapped and advised, and the heap grows into them rather than past them (without
	// waiting for it, allocations made while the collection that the block triggered still
	// runs would map new heap above it).
	block := make([]byte, Reserve)
	start := uintptr(unsafe.Pointer(unsafe.SliceData(block)))
	end := start + Reserve
	advStart := alignDown(start, hugePage)
	if err := madvise(advStart, end-advStart, madvHugePage); err != nil {
		applied.Skipped = "madvise(MADV_HUGEPAGE): " + err.Error()
		return
	}
	applied.Start, applied.End = advStart, end
	// The ranges of the runtime's first heap chunk below the block already hold small pages
	// (what the runtime allocated before this init ran), and a range that holds small pages
	// never gets a huge one on fault. Collapsing them (Linux 6.1+) lets their free remainder,
	// and the block's own start, fill without faults. A failure here (older kernel, memory too
	// fragmented) only leaves those ranges as they were.
	for r := alignDown(start-1, heapChunk); r < alignUp(start, hugePage); r += hugePage {
		if madvise(r, hugePage, madvCollapse) == nil {
			applied.Collapsed++
		}
	}
	runtime.KeepAlive(block)
	runtime.GC()
}

func madvise(addr, length uintptr, advice int) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, addr, length, uintptr(advice)); errno != 0 {
		return errno
	}
	return nil
}

func alignDown(p, n uintptr) uintptr { return p &^ (n - 1) }
func alignUp(p, n uintptr) uintptr   { return (p + n - 1) &^ (n - 1) }
