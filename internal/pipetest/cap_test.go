package pipetest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadCap: a test file over the cap is refused without being read whole.
func TestLoadCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.test.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "is larger than") {
		t.Fatalf("err = %v", err)
	}
}
