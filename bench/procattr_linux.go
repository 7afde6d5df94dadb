//go:build linux

package bench

import "syscall"

// procAttr makes the kernel kill a server when the process that started it
// ends, however it ends: the commands stop on log.Fatal, which skips their
// deferred Close, and a redis-server under callgrind left running costs a
// core. (Pdeathsig follows the starting thread; these commands lock none, so
// Go never ends that thread before the process.)
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
