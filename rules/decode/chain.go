package decode

import (
	"fmt"
	"strings"
)

// step is one decode step of a chain.
type step uint8

const (
	stepBase64 step = iota
	stepGzip
	stepZlib
	stepDeflate
	stepZstd
	stepSnappy
	stepJSON
	stepKV
	stepAuto
)

// stepNames is indexed by step; its order is the order of the list in
// errors.
var stepNames = [...]string{
	stepBase64:  "base64",
	stepGzip:    "gzip",
	stepZlib:    "zlib",
	stepDeflate: "deflate",
	stepZstd:    "zstd",
	stepSnappy:  "snappy",
	stepJSON:    "json",
	stepKV:      "kv",
	stepAuto:    "auto",
}

func (s step) String() string { return stepNames[s] }

// final reports whether s ends a chain: a format step or auto.
func (s step) final() bool { return s >= stepJSON }

// maxSteps bounds a chain's length.
const maxSteps = 8

// Chain is a parsed decode specification: zero or more transform steps
// followed by one format step or auto. It is immutable and may be shared by
// any number of Decoders.
type Chain struct {
	steps []step
}

// ParseChain parses a rule's decode steps, e.g. ["json"],
// ["base64","gzip","json"], ["auto"], ["gzip","auto"], ["kv"].
//
// Transform steps: base64, gzip, zlib, deflate (raw DEFLATE, no header),
// zstd, snappy (the framed stream format or the block format). Format steps:
// json, kv. auto detects the rest (see the package documentation). The last
// step must be a format step or auto, and transforms come before it; a chain
// has at most 8 steps. An empty spec means ["auto"]. Step names are matched
// without regard to case or surrounding spaces.
func ParseChain(steps []string) (*Chain, error) {
	if len(steps) == 0 {
		return &Chain{steps: []step{stepAuto}}, nil
	}
	if len(steps) > maxSteps {
		return nil, fmt.Errorf("decode chain has %d steps, at most %d allowed", len(steps), maxSteps)
	}
	c := &Chain{steps: make([]step, len(steps))}
	for i, name := range steps {
		s, ok := lookupStep(name)
		if !ok {
			return nil, fmt.Errorf("unknown decode step %q (want one of %s)", name, strings.Join(stepNames[:], ", "))
		}
		c.steps[i] = s
	}
	for i, s := range c.steps[:len(c.steps)-1] {
		if s.final() {
			return nil, fmt.Errorf("decode step %q must be the last step (it is step %d of %d in %q)", s, i+1, len(c.steps), c)
		}
	}
	if last := c.steps[len(c.steps)-1]; !last.final() {
		return nil, fmt.Errorf("decode chain %q must end with json, kv or auto, not the transform %q", c, last)
	}
	return c, nil
}

func lookupStep(name string) (step, bool) {
	name = strings.ToLower(strings.TrimSpace(name))
	for s, n := range stepNames {
		if n == name {
			return step(s), true
		}
	}
	return 0, false
}

// String renders the chain as "base64 > gzip > json".
func (c *Chain) String() string {
	var b strings.Builder
	for i, s := range c.steps {
		if i > 0 {
			b.WriteString(" > ")
		}
		b.WriteString(s.String())
	}
	return b.String()
}
