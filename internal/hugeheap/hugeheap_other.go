//go:build !(linux && (amd64 || arm64 || ppc64le || riscv64 || s390x || loong64))

package hugeheap

func init() { applied.Skipped = "not supported on this platform" }
