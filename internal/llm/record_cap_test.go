package llm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadReplayerCap: a recording over the cap is refused without being read whole.
func TestLoadReplayerCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rec.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: cheap to make, as large as it says.
	if err := f.Truncate(MaxRecordingBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := LoadReplayer(path); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}
