// Package childproc starts the processes sluice runs beside itself (the
// demo's influxd) so that they end with it, however it ends. A child gets
// its own process group, so that a Ctrl-C in the terminal reaches sluice
// alone, which stops the child in order; and, on Linux, a parent-death
// signal, so that it goes too when sluice is killed (SIGKILL, or the SIGPIPE
// of `make demo | tee` whose tee went first).
package childproc

import (
	"os/exec"
	"runtime"
	"syscall"
)

// Start starts cmd as a child that ends with this process: sig is sent to
// it when this process ends first (on Linux). The channel receives what
// cmd.Wait returns once the child has exited.
func Start(cmd *exec.Cmd, sig syscall.Signal) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	setDeathSignal(cmd.SysProcAttr, sig)
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		// The parent-death signal comes when the thread that started the
		// child ends, not the process; Go ends a thread only when a
		// goroutine locked to it returns. This one keeps its thread until
		// the child has exited.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}
