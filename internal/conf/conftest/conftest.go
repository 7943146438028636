// Package conftest holds checks shared by the tests of packages that load
// YAML files through internal/conf.
package conftest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/internal/conf"
)

// CheckErrorList asserts that err is a non-empty conf.ErrorList naming
// file, each entry at a line inside data and with a message: what an
// operator needs to find the problem.
func CheckErrorList(t testing.TB, err error, file string, data []byte) {
	t.Helper()
	var list conf.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %T is not a conf.ErrorList: %v", err, err)
	}
	if len(list) == 0 {
		t.Fatal("empty conf.ErrorList")
	}
	// YAML breaks lines at \n, \r\n and a lone \r.
	lines := 1 + bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n"))
	for _, e := range list {
		if e.File != file || e.Line < 0 || e.Line > lines || e.Column < 0 || e.Msg == "" {
			t.Fatalf("error %q is outside the %d lines of the file (line %d, column %d)", e, lines, e.Line, e.Column)
		}
	}
}
