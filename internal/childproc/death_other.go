//go:build !linux

package childproc

import "syscall"

// Only Linux has a parent-death signal; elsewhere a child outlives a
// parent that is killed.
func setDeathSignal(*syscall.SysProcAttr, syscall.Signal) {}
