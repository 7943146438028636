package testsvc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory (mount -t
// tmpfs -o size=N tmpfs DIR, as root) and returns the directory: a small
// disk that a test can fill. It is unmounted when the test ends. Where
// mounting is impossible (not root, a container without the capability)
// the test is skipped, except under CI=true, where it fails: CI must not
// pass by skipping.
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		why := fmt.Sprintf("cannot mount a tmpfs (mount -t tmpfs as root): %v: %s", err, strings.TrimSpace(string(out)))
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	// Registered after TempDir's: runs before its removal.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Fill fills the file system dir is on with a file in dir, to the last
// byte it takes, and keeps it full until the returned function is called,
// which removes the file. Keeping it full matters: space something else
// frees meanwhile (a file the program under test rewrites and renames,
// the rest of a page a file already holds) would otherwise let writes
// succeed on what the test takes for a full disk.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	chunk := make([]byte, 64<<10)
	fill := func() error {
		for n := len(chunk); n > 0; n /= 2 {
			for {
				_, err := f.Write(chunk[:n])
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				if err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := fill(); err != nil {
		f.Close()
		t.Fatalf("fill %s: %v", dir, err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				fill()
			}
		}
	}()
	var once sync.Once
	free = func() {
		once.Do(func() {
			close(stop)
			<-done
			f.Close()
			if err := os.Remove(path); err != nil {
				t.Errorf("free %s: %v", dir, err)
			}
		})
	}
	t.Cleanup(free)
	return free
}
