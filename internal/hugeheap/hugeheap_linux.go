//go:build linux && (amd64 || arm64 || ppc64le || riscv64 || s390x || loong64)

package hugeheap

import (
	"runtime"
	"runtime/metrics"
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
	// Only the kernel's "madvise" mode needs asking: under "always" the heap gets huge pages
	// anyway, under "never" (or without the file, a kernel without them) it cannot, and in both
	// the collection below would be spent for nothing.
	if mode := thpMode(); mode != "madvise" {
		applied.Skipped = "transparent huge pages: " + mode
		return
	}
	applied = advise()
	// The collection that the block's allocation started usually frees it, but not when it
	// scanned this goroutine while the block was still in hand. Until the block is free, new
	// allocations map heap above it, unadvised, so wait for a full collection here: it costs
	// 2-4 ms while the heap is this small, and the pages it frees save far more.
	runtime.GC()
	applied.heapAfter = heapObjectBytes()
}

// heapObjectBytes is the heap occupied by objects, live or not yet swept.
func heapObjectBytes() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// advise maps heap ahead and marks it for huge pages.
//
// A large allocation makes the runtime map fresh heap for it right away, without touching it
// (fresh mappings are known to be zero). The mapping is advised while still untouched, so the
// first touch of each 2 MiB range faults in one huge page instead of 512 small ones. Once the
// block is collected, its pages go back to the page allocator, still mapped and advised, and
// the heap grows into them. Nothing keeps a pointer to the block past its allocation (its
// address is kept as a uintptr, which the collector does not follow).
func advise() result {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(make([]byte, reserve))))
	end := start + reserve
	advStart := alignDown(start, hugePage)
	if err := madvise(advStart, end-advStart, madvHugePage); err != nil {
		return result{Skipped: "madvise(MADV_HUGEPAGE): " + err.Error()}
	}
	r := result{Start: advStart, End: end}
	// The ranges of the runtime's first heap chunk below the block already hold small pages
	// (what the runtime allocated before this init ran), and a range that holds small pages
	// never gets a huge one on fault. Collapsing them (Linux 6.1+) lets their free remainder,
	// and the block's own start, fill without faults. A failure here (older kernel, memory too
	// fragmented) only leaves those ranges as they were.
	for at := alignDown(start-1, heapChunk); at < alignUp(start, hugePage); at += hugePage {
		if madvise(at, hugePage, madvCollapse) == nil {
			r.Collapsed++
		}
	}
	return r
}

// thpMode reads the kernel's transparent huge page mode ("always", "madvise" or "never"), or
// says why it could not.
func thpMode() string {
	fd, err := syscall.Open("/sys/kernel/mm/transparent_hugepage/enabled", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer syscall.Close(fd)
	var buf [128]byte
	n, err := syscall.Read(fd, buf[:])
	if err != nil || n <= 0 {
		return "unknown (unreadable)"
	}
	return selectedMode(string(buf[:n]))
}

func madvise(addr, length uintptr, advice int) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, addr, length, uintptr(advice)); errno != 0 {
		return errno
	}
	return nil
}

func alignDown(p, n uintptr) uintptr { return p &^ (n - 1) }
func alignUp(p, n uintptr) uintptr   { return (p + n - 1) &^ (n - 1) }
