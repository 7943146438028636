package conf

import (
	"errors"
	"fmt"
	"strings"
)

// Problem is one validation problem at a key path.
type Problem struct {
	Path string
	Msg  string
}

// Problems collects validation problems. A Validate method adds to it and
// returns Err(); a parent nests a child's problems under the child's key.
//
//	var p conf.Problems
//	if c.Topic == "" {
//		p.Missing("topic")
//	}
//	p.Nest("batch", c.Batch.Validate())
//	return p.Err()
type Problems []Problem

func (p Problems) Error() string {
	lines := make([]string, len(p))
	for i, pr := range p {
		if pr.Path == "" {
			lines[i] = pr.Msg
		} else {
			lines[i] = pr.Path + ": " + pr.Msg
		}
	}
	return strings.Join(lines, "\n")
}

// Addf records a problem with the value at path.
func (p *Problems) Addf(path, format string, args ...any) {
	*p = append(*p, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Missing records that the required key at path is absent or empty.
func (p *Problems) Missing(path string) {
	parent, key := parentPath(path), path[len(parentPath(path)):]
	key = strings.TrimPrefix(key, ".")
	*p = append(*p, Problem{Path: parent, Msg: missingMsg(key)})
}

func missingMsg(key string) string { return fmt.Sprintf("missing required key %q", key) }

// Nest adds err's problems under prefix. An err that is not Problems becomes
// one problem at prefix.
func (p *Problems) Nest(prefix string, err error) {
	if err == nil {
		return
	}
	var sub Problems
	if !errors.As(err, &sub) {
		*p = append(*p, Problem{Path: prefix, Msg: err.Error()})
		return
	}
	for _, s := range sub {
		switch {
		case s.Path == "":
			s.Path = prefix
		case prefix == "":
		case strings.HasPrefix(s.Path, "["):
			s.Path = prefix + s.Path
		default:
			s.Path = prefix + "." + s.Path
		}
		*p = append(*p, s)
	}
}

// Err returns nil when nothing was recorded, otherwise the problems.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return p
}
