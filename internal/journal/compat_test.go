package journal

import (
	"bytes"
	"path/filepath"
	"testing"
)

// compatKey is the key testdata/compat/encrypted-v2 was written with.
var compatKey = bytes.Repeat([]byte{0x5a}, KeySize)

// Journals written by an earlier sluice (testdata/compat, see its README)
// open and read: every record, its kind and data, the saved cursor; and
// the journal goes on appending after them.
func TestReadsEarlierFormats(t *testing.T) {
	for _, tt := range []struct {
		dir string
		key []byte
	}{
		{"plain-v1", nil},
		{"encrypted-v2", compatKey},
	} {
		t.Run(tt.dir, func(t *testing.T) {
			o := Options{Dir: copyDir(t, filepath.Join("testdata", "compat", tt.dir)), Mode: Process, Key: tt.key}
			j := open(t, o)
			if st := j.Stats(); st.First != 1 || st.Last != 150 || st.Recovered.Records != 150 || st.Recovered.CutBytes != 0 {
				t.Fatalf("stats %+v", st)
			}
			r := j.Reader("r")
			if r.Acked() != 20 {
				t.Fatalf("saved cursor: acked %d, want 20", r.Acked())
			}
			readN(t, r, 21, 130)
			readN(t, j.Reader("new"), 1, 150)
			appendN(t, j, 151, 10)
			readN(t, r, 151, 10)
			r.Ack(160)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j = open(t, o)
			readN(t, j.Reader("new"), 1, 160)
			if got := j.Reader("r").Acked(); got != 160 {
				t.Fatalf("after reopening: acked %d, want 160", got)
			}
		})
	}
}
