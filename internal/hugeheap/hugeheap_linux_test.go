//go:build linux && (amd64 || arm64 || ppc64le || riscv64 || s390x || loong64)

package hugeheap

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// vmaFlags returns the VmFlags of the mapping holding addr, from /proc/self/smaps.
func vmaFlags(t *testing.T, addr uintptr) []string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inside := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// A mapping's header starts with its range, "lo-hi"; the lines below it are "Key: value".
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") {
			var lo, hi uintptr
			if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err == nil {
				inside = lo <= addr && addr < hi
				continue
			}
		}
		if inside && strings.HasPrefix(line, "VmFlags:") {
			return strings.Fields(strings.TrimPrefix(line, "VmFlags:"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no mapping holds %#x", addr)
	return nil
}

func TestHeapStartIsAdvisedForHugePages(t *testing.T) {
	if godebug := os.Getenv("GODEBUG"); disabledByGODEBUG(godebug) {
		t.Skip("GODEBUG=disablethp=1 is set")
	}
	if mode := thpMode(); mode != "madvise" {
		if applied.Skipped != "transparent huge pages: "+mode {
			t.Fatalf("THP mode %q: init did %+v, want it skipped for that mode", mode, applied)
		}
		t.Skipf("transparent huge pages are %q here: nothing to advise", mode)
	}
	got := applied
	if got.Skipped != "" || got.Start == 0 || got.End-got.Start < reserve {
		t.Fatalf("init did %+v, want an advised range of at least %d bytes", got, reserve)
	}
	for _, addr := range []uintptr{got.Start, got.End - 1} {
		if flags := vmaFlags(t, addr); !slices.Contains(flags, "hg") {
			t.Errorf("mapping at %#x has VmFlags %v, want hg (MADV_HUGEPAGE)", addr, flags)
		}
	}
	// The block must be free before init returns, or what other packages allocate while it is
	// still held maps new heap above it.
	if got.heapAfter == 0 || got.heapAfter >= reserve {
		t.Errorf("heap objects when init returned: %d bytes, want the %d-byte block freed", got.heapAfter, reserve)
	}
	// The heap must grow into the advised range, not past it: a fresh megabyte lands inside.
	buf := make([]byte, 1<<20)
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	if addr < got.Start || addr >= got.End {
		t.Errorf("a new 1 MiB object is at %#x, outside the advised heap range [%#x, %#x)", addr, got.Start, got.End)
	}
	runtime.KeepAlive(buf)
}

func TestGODEBUGTurnsItOff(t *testing.T) {
	if os.Getenv("HUGEHEAP_CHILD") == "1" {
		if applied.Skipped != "GODEBUG=disablethp=1" || applied.Start != 0 {
			fmt.Printf("init did %+v under GODEBUG=disablethp=1\n", applied)
			os.Exit(3)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGODEBUGTurnsItOff$")
	cmd.Env = append(os.Environ(), "HUGEHEAP_CHILD=1", "GODEBUG=disablethp=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
