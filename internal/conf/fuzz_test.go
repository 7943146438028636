package conf_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/internal/conf/conftest"
)

// Seed corpora are in testdata/fuzz/<FuzzName>/; run a target with
//
//	go test ./internal/conf -run XXX -fuzz FuzzDecodeConfig -fuzztime 60s

// fuzzConfig has what real configurations have: nested lists of structs,
// maps, durations, sizes, optional values, and a Validate method whose
// problems name nested key paths.
type fuzzConfig struct {
	Name    string                `yaml:"name"`
	Timeout time.Duration         `yaml:"timeout"`
	Enabled *bool                 `yaml:"enabled"`
	Servers []fuzzServer          `yaml:"servers"`
	Limits  map[string]conf.Bytes `yaml:"limits"`
	Tags    map[string][]string   `yaml:"tags"`
}

type fuzzServer struct {
	Address string          `yaml:"address"`
	Weight  int             `yaml:"weight"`
	Retry   []time.Duration `yaml:"retry"`
	Buffer  conf.Bytes      `yaml:"buffer"`
	Backup  *fuzzServer     `yaml:"backup"`
}

func (c *fuzzConfig) Validate() error {
	var p conf.Problems
	if c.Name == "" {
		p.Missing("name")
	}
	if c.Timeout < 0 {
		p.Addf("timeout", "must not be negative")
	}
	for i := range c.Servers {
		p.Nest(fmt.Sprintf("servers[%d]", i), c.Servers[i].validate())
	}
	for k, v := range c.Limits {
		if v <= 0 {
			p.Addf("limits."+k, "must be positive")
		}
	}
	for k, v := range c.Tags {
		if len(v) == 0 {
			p.Missing("tags." + k)
		}
	}
	return p.Err()
}

func (s *fuzzServer) validate() error {
	var p conf.Problems
	if s.Address == "" {
		p.Missing("address")
	}
	if s.Weight < 0 {
		p.Addf("weight", "must not be negative")
	}
	if s.Buffer < 0 {
		p.Addf("buffer", "must not be negative")
	}
	for i, d := range s.Retry {
		if d <= 0 {
			p.Addf(fmt.Sprintf("retry[%d]", i), "must be positive")
		}
	}
	if s.Backup != nil {
		p.Nest("backup", s.Backup.validate())
	}
	return p.Err()
}

// decodeBound is how long decoding one file may take before the fuzzer
// reports it: not a speed target, a bound that catches runaway work (YAML
// aliases expanded exponentially) rather than slow machines.
const decodeBound = time.Second

// FuzzDecodeConfig decodes arbitrary bytes, in bounded time: an error is a
// conf.ErrorList whose every entry names the file and a line inside it; a
// success has passed Validate.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte("name: a\ntimeout: 5s\nenabled: true\nservers:\n  - address: x:1\n    weight: 2\n    retry: [1s, 250ms]\n    buffer: 64MiB\n    backup: {address: y:2, buffer: 1.5 KiB}\nlimits: {a.b: 1GiB, c: 10}\ntags:\n  t: [x, y]\n"))
	f.Add([]byte("name: a\nservers:\n  - weight: -1\n    retry: [0s]\n    backup:\n      backup: {}\nlimits: {z: 0}\ntags: {e: []}\n"))
	f.Add([]byte("name: &n a\nservers: [&s {address: *n}, *s]\nlimits: {<<: {a: 1}}\n"))
	f.Add([]byte("servers:\n  - address: x\n    address: y\n---\nname: b\n"))
	f.Add([]byte("name: a\nservers:\n  - address: x\n    bufer: 1\n    buffer: lots\n    retry: 5 parsecs\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c fuzzConfig
		start := time.Now()
		_, err := conf.Decode("fuzz.yaml", data, &c)
		if took := time.Since(start); took > decodeBound {
			t.Fatalf("decoding %d bytes took %v", len(data), took)
		}
		if !bytes.Contains(data, []byte("\r")) {
			// The same file saved with Windows line endings reads the same,
			// and its problems are inside it. (Which problem is reported
			// is not compared: with several unknown keys in one mapping,
			// goccy reports one of them at random.)
			crlf := bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
			var w fuzzConfig
			_, werr := conf.Decode("fuzz.yaml", crlf, &w)
			if (werr == nil) != (err == nil) {
				t.Fatalf("with \\n: %v\nwith \\r\\n: %v", err, werr)
			}
			if werr != nil {
				conftest.CheckErrorList(t, werr, "fuzz.yaml", crlf)
			}
		}
		if err != nil {
			conftest.CheckErrorList(t, err, "fuzz.yaml", data)
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Decode accepted a config that does not validate: %v", err)
		}
	})
}

// FuzzParseBytes parses arbitrary size text: a size it accepts is not
// negative, and its canonical form (String) parses back to it.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"64MiB", "1.5 KiB", "10GB", "0", "512B", "-1KiB", "NaN", "Inf", "1e19", "9EiB", "8191TiB", " 7 MB "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := conf.ParseBytes(s)
		if err != nil {
			return
		}
		if b < 0 {
			t.Fatalf("ParseBytes(%q) = %d, a negative size", s, int64(b))
		}
		if b < 1<<53 { // exact in a float64
			if again, err := conf.ParseBytes(b.String()); err != nil || again != b {
				t.Fatalf("ParseBytes(%q) = %d, written %q, parses as %d, %v", s, int64(b), b, int64(again), err)
			}
		}
	})
}
