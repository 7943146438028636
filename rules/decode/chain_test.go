package decode

import (
	"strings"
	"testing"
)

func TestParseChain(t *testing.T) {
	tests := []struct {
		steps   []string
		want    string // String() of the chain
		wantErr string
	}{
		{steps: nil, want: "auto"},
		{steps: []string{}, want: "auto"},
		{steps: []string{"json"}, want: "json"},
		{steps: []string{"kv"}, want: "kv"},
		{steps: []string{"auto"}, want: "auto"},
		{steps: []string{"base64", "gzip", "json"}, want: "base64 > gzip > json"},
		{steps: []string{"gzip", "auto"}, want: "gzip > auto"},
		{steps: []string{"zlib", "deflate", "zstd", "snappy", "kv"}, want: "zlib > deflate > zstd > snappy > kv"},
		{steps: []string{" GZIP ", "Json"}, want: "gzip > json"},
		{steps: []string{"base64", "base64", "base64", "base64", "base64", "base64", "base64", "json"},
			want: "base64 > base64 > base64 > base64 > base64 > base64 > base64 > json"},

		{steps: []string{"gzp"},
			wantErr: `unknown decode step "gzp" (want one of base64, gzip, zlib, deflate, zstd, snappy, json, kv, auto)`},
		{steps: []string{"gzip", ""}, wantErr: `unknown decode step ""`},
		{steps: []string{"gzip"}, wantErr: `decode chain "gzip" must end with json, kv or auto, not the transform "gzip"`},
		{steps: []string{"json", "gzip"}, wantErr: `decode step "json" must be the last step (it is step 1 of 2 in "json > gzip")`},
		{steps: []string{"auto", "json"}, wantErr: `decode step "auto" must be the last step`},
		{steps: []string{"gzip", "kv", "json"}, wantErr: `decode step "kv" must be the last step (it is step 2 of 3`},
		{steps: []string{"base64", "base64", "base64", "base64", "base64", "base64", "base64", "base64", "json"},
			wantErr: "decode chain has 9 steps, at most 8 allowed"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.steps, ","), func(t *testing.T) {
			c, err := ParseChain(tt.steps)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseChain(%q) error = %v, want %q", tt.steps, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseChain(%q): %v", tt.steps, err)
			}
			if got := c.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
