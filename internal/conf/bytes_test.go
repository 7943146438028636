package conf_test

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/conf"
)

func TestBytes(t *testing.T) {
	type cfg struct {
		Size conf.Bytes `yaml:"size"`
	}
	for in, want := range map[string]int64{
		"size: 1024": 1024, "size: 64MiB": 64 << 20, "size: 1GiB": 1 << 30, "size: 100MB": 100e6,
		"size: 1.5 KiB": 1536, `size: "512B"`: 512,
	} {
		var c cfg
		if _, err := conf.Decode("b.yaml", []byte(in), &c); err != nil || int64(c.Size) != want {
			t.Errorf("%s: %v %v, want %d", in, int64(c.Size), err, want)
		}
	}
	var c cfg
	_, err := conf.Decode("b.yaml", []byte("size: lots"), &c)
	if err == nil || !strings.Contains(err.Error(), "b.yaml:1:") || !strings.Contains(err.Error(), "not a size") {
		t.Fatalf("got %v", err)
	}
	if s := conf.Bytes(64 << 20).String(); s != "64MiB" {
		t.Fatalf("String() = %s", s)
	}
}
