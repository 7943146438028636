package pipelines

import (
	"errors"
	"path/filepath"
	"slices"

	"github.com/sluicehq/sluice/internal/conf"
	"github.com/sluicehq/sluice/rules"
)

// Check reads a config file and everything it names, as `sluice validate`
// does and `sluice run` does before it starts anything: the config itself,
// the rule files of every pipeline, the files the broker and the sources
// read (passwords, ACLs, certificates) and the encryption key. It returns
// the config and its compiled rules, or every problem found as a
// conf.ErrorList in file order: the config file's by line, then each rule
// file's. A config with problems is still checked as far as it goes, so one
// run reports them all.
func Check(path string) (*Config, map[string]*rules.Set, error) {
	var c Config
	doc, err := conf.DecodeFile(path, &c)
	if doc == nil {
		return nil, nil, err // unreadable, or not YAML
	}
	var list conf.ErrorList
	if err != nil && !errors.As(err, &list) {
		return nil, nil, err
	}
	c.dir, c.doc = filepath.Dir(path), doc
	c.resolve()
	sets, err := c.CompileRules()
	list = appendProblems(list, path, err)
	list = appendProblems(list, path, c.CheckFiles())
	if _, err := c.Key(); err != nil {
		list = append(list, doc.ErrorAt("encryption.key_file", 0, 0, err.Error()))
	}
	if len(list) > 0 {
		sortByFile(list, path)
		return nil, nil, list
	}
	return &c, sets, nil
}

// appendProblems adds err's problems to list; an error that is not a
// conf.ErrorList is a problem of the config file.
func appendProblems(list conf.ErrorList, file string, err error) conf.ErrorList {
	if err == nil {
		return list
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			list = appendProblems(list, file, e)
		}
		return list
	}
	var l conf.ErrorList
	var e *conf.Error
	switch {
	case errors.As(err, &l):
		return append(list, l...)
	case errors.As(err, &e):
		return append(list, e)
	}
	return append(list, &conf.Error{File: file, Msg: err.Error()})
}

// sortByFile orders problems by file, first the config file, then the
// others in the order they were first reported; and by line in each.
func sortByFile(list conf.ErrorList, first string) {
	rank := map[string]int{first: 0}
	for _, e := range list {
		if _, ok := rank[e.File]; !ok {
			rank[e.File] = len(rank)
		}
	}
	slices.SortStableFunc(list, func(a, b *conf.Error) int {
		switch {
		case rank[a.File] != rank[b.File]:
			return rank[a.File] - rank[b.File]
		case a.Line != b.Line:
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
}
