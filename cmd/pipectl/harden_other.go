//go:build !linux

package main

// hideEnvironment does nothing where there is no prctl: the environment of pipectl stays as
// readable to other processes of the same user as the OS makes it.
func hideEnvironment() error { return nil }
