//go:build !linux

package bench

import "syscall"

// procAttr: outside Linux a server outlives a command stopped by log.Fatal.
func procAttr() *syscall.SysProcAttr { return nil }
