//go:build pipectl_weaken_taint

package dsl

// weakenTaint: this build accepts every flow into a sink and records it unproven, so that a
// test can show the engine's run-time check refusing hostile values on its own.
const weakenTaint = true
