package main

import (
	"path/filepath"
	"testing"
)

func BenchmarkTmpTenNormal(b *testing.B) {
	bin := buildBinary(b)
	for b.Loop() {
		floor := sqliteFloor(b, "sqlite:"+filepath.Join(b.TempDir(), "floor.db")+"?synchronous=normal")
		ten := drainRate(b, bin, "sqlite:"+filepath.Join(b.TempDir(), "ten.db")+"?synchronous=normal", 10, 1, 8000)
		b.Logf("floor %.0f; 10-step %.0f runs/s = %.0f steps/s", floor, ten, ten*10)
	}
}
