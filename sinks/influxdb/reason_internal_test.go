package influxdb

import (
	"strings"
	"testing"
)

func TestShortenEcho(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes, cut on a rune boundary
	tests := []struct{ in, want string }{
		{"field type conflict", "field type conflict"},
		{"unable to parse 'm f=1': bad", "unable to parse 'm f=1': bad"},
		{"unable to parse 'm s=\"it': s\" " + long + "': bad", "unable to parse 'm s=\"it': s\" " + strings.Repeat("é", 53) + "… (413 bytes)': bad"},
		{"partial write: unable to parse 'm " + long + "': cause dropped=1", "partial write: unable to parse 'm " + strings.Repeat("é", 59) + "… (402 bytes)': cause dropped=1"},
		{strings.Repeat("unable to parse 'a': b\n", 7) + "end", strings.Repeat("unable to parse 'a': b\n", 5) + "(and 3 more lines like these)"},
	}
	for _, tt := range tests {
		if got := shortenEcho(tt.in); got != tt.want {
			t.Errorf("shortenEcho(%.60q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}
