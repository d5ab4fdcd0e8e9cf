//go:build !pipectl_weaken_taint

package dsl

// weakenTaint turns the static proof off in a build made for one test: it shows the run-time
// check stopping what a broken static check would let through. Release builds never set it.
const weakenTaint = false
