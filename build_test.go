package sluice_test

import (
	"os/exec"
	"testing"
)

// TestGoModTidy fails when `go mod tidy` would change go.mod or go.sum: a
// dependency used directly but marked indirect, a sum no build needs.
// make test runs the same check first.
func TestGoModTidy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go mod tidy")
	}
	out, err := exec.Command("go", "mod", "tidy", "-diff").CombinedOutput()
	if err != nil {
		t.Fatalf("go.mod or go.sum is not tidy: run `go mod tidy` (%v):\n%s", err, out)
	}
}
