// Package hugeheap backs the first megabytes of the Go heap with transparent huge pages.
//
// Import it for its side effect, as early as possible in a command's import graph. Every
// pipectl command is short-lived or starts with a burst of allocation (library tables,
// meta-schemas, the CEL environment), and on virtual machines a minor page fault can cost
// 10-20 µs: a `pipectl validate` spent about half of its wall time faulting in 4 KiB heap
// pages. The Go runtime no longer asks for huge pages for the heap itself, and Linux's default
// transparent-huge-page mode ("madvise") only uses them where asked, so this package asks.
//
// It acts only when the kernel's transparent-huge-page mode is "madvise" (under "always" the heap
// gets huge pages anyway; under "never" it cannot), and GODEBUG=disablethp=1 (the runtime's own
// switch to keep huge pages off the Go heap) turns it off.
package hugeheap

// reserve is how much heap address space is mapped ahead and advised for huge pages. It covers
// what any command allocates while starting and what validating a file allocates; the kernel
// backs only the 2 MiB ranges that are touched, so an idle reservation costs address space, not
// memory. Beyond it the heap grows as usual, in small pages.
const reserve = 16 << 20

const (
	hugePage = 2 << 20
	// heapChunk is the granule by which the Go runtime maps new heap (pallocChunkBytes).
	heapChunk = 4 << 20
)

// result says what init did, for the tests.
type result struct {
	// Start and End bound the heap range marked for huge pages; zero when skipped.
	Start, End uintptr
	// Skipped names why nothing was done; empty when the advice was applied.
	Skipped string
	// Collapsed counts the partly used 2 MiB ranges of the first heap chunk, up to the one
	// holding Start, that were collapsed into huge pages so that their free remainder does not
	// fault page by page.
	Collapsed int
	// heapAfter is the heap's object bytes when init returned: below reserve once the block is
	// freed, as it must be before other packages allocate.
	heapAfter uint64
}

var applied result

func disabledByGODEBUG(godebug string) bool {
	// Package strings is not imported: every import delays this package's init, and the point
	// is to run before most of the heap is allocated.
	for len(godebug) > 0 {
		setting := godebug
		if i := indexByte(godebug, ','); i >= 0 {
			setting, godebug = godebug[:i], godebug[i+1:]
		} else {
			godebug = ""
		}
		if setting == "disablethp=1" {
			return true
		}
	}
	return false
}

// selectedMode picks the bracketed word out of a sysfs choice list such as
// "always [madvise] never".
func selectedMode(list string) string {
	left := indexByte(list, '[')
	if left < 0 {
		return "unknown (" + list + ")"
	}
	right := indexByte(list[left:], ']')
	if right < 0 {
		return "unknown (" + list + ")"
	}
	return list[left+1 : left+right]
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}
