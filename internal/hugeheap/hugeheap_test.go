package hugeheap

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

func TestDisabledByGODEBUG(t *testing.T) {
	for _, tc := range []struct {
		godebug string
		want    bool
	}{
		{"", false},
		{"disablethp=1", true},
		{"madvdontneed=1,disablethp=1", true},
		{"disablethp=1,gctrace=1", true},
		{"disablethp=0", false},
		{"xdisablethp=1", false},
		{"disablethp=10", false},
	} {
		if got := disabledByGODEBUG(tc.godebug); got != tc.want {
			t.Errorf("disabledByGODEBUG(%q) = %v, want %v", tc.godebug, got, tc.want)
		}
	}
}

// thpModeForTest is the kernel's transparent huge page mode: always, madvise or never.
func thpModeForTest(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		t.Skipf("no transparent huge pages here: %v", err)
	}
	s := string(b)
	if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
		return s[i+1 : j]
	}
	t.Fatalf("unexpected THP mode %q", s)
	return ""
}

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
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 && strings.Contains(line[:strings.IndexByte(line, ' ')], "-") {
			inside = lo <= addr && addr < hi
			continue
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

func TestSelectedMode(t *testing.T) {
	for _, tc := range []struct{ list, want string }{
		{"always [madvise] never\n", "madvise"},
		{"[always] madvise never\n", "always"},
		{"always madvise [never]\n", "never"},
		{"always madvise never\n", "unknown (always madvise never\n)"},
		{"[always", "unknown ([always)"},
		{"", "unknown ()"},
	} {
		if got := selectedMode(tc.list); got != tc.want {
			t.Errorf("selectedMode(%q) = %q, want %q", tc.list, got, tc.want)
		}
	}
}

func TestHeapStartIsAdvisedForHugePages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	if mode := thpModeForTest(t); mode != "madvise" {
		if got := Applied(); got.Skipped != "transparent huge pages: "+mode {
			t.Fatalf("THP mode %q: Applied() = %+v, want it skipped for that mode", mode, got)
		}
		t.Skipf("transparent huge pages are %q here: nothing to advise", mode)
	}
	if os.Getenv("GODEBUG") != "" && disabledByGODEBUG(os.Getenv("GODEBUG")) {
		t.Skip("GODEBUG=disablethp=1 is set")
	}
	got := Applied()
	if got.Skipped != "" || got.Start == 0 || got.End-got.Start < Reserve {
		t.Fatalf("Applied() = %+v, want an advised range of at least %d bytes", got, Reserve)
	}
	for _, addr := range []uintptr{got.Start, got.End - 1} {
		if flags := vmaFlags(t, addr); !contains(flags, "hg") {
			t.Errorf("mapping at %#x has VmFlags %v, want hg (MADV_HUGEPAGE)", addr, flags)
		}
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
		if got := Applied(); got.Skipped != "GODEBUG=disablethp=1" || got.Start != 0 {
			fmt.Printf("Applied() = %+v under GODEBUG=disablethp=1\n", got)
			os.Exit(3)
		}
		return
	}
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGODEBUGTurnsItOff$")
	cmd.Env = append(os.Environ(), "HUGEHEAP_CHILD=1", "GODEBUG=disablethp=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// FuzzDisabledByGODEBUG holds the hand-written GODEBUG scan (the package avoids importing
// strings so that its init runs early) to the obvious reading of a comma-separated list.
func FuzzDisabledByGODEBUG(f *testing.F) {
	for _, seed := range []string{"", "disablethp=1", "a=1,disablethp=1", "disablethp=1,", ",,disablethp=1,,", "disablethp=0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, godebug string) {
		want := false
		for _, setting := range strings.Split(godebug, ",") {
			if setting == "disablethp=1" {
				want = true
			}
		}
		if got := disabledByGODEBUG(godebug); got != want {
			t.Errorf("disabledByGODEBUG(%q) = %v, want %v", godebug, got, want)
		}
	})
}

// FuzzSelectedMode holds the sysfs choice-list scan to a regular-expression reading.
func FuzzSelectedMode(f *testing.F) {
	for _, seed := range []string{"always [madvise] never\n", "[always]", "[", "]", "a]b[c]", ""} {
		f.Add(seed)
	}
	bracketed := regexp.MustCompile(`^[^\[]*\[([^\]]*)\]`)
	f.Fuzz(func(t *testing.T, list string) {
		want := "unknown (" + list + ")"
		if m := bracketed.FindStringSubmatch(list); m != nil {
			want = m[1]
		}
		if got := selectedMode(list); got != want {
			t.Errorf("selectedMode(%q) = %q, want %q", list, got, want)
		}
	})
}
