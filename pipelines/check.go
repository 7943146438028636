package pipelines

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/ingest"
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
	missing := c.missingFiles()
	list = append(list, missing...)
	// A missing file is reported above, with what to do about it; what
	// follows reads the files there are.
	list = appendProblems(list, path, withoutNotExist(c.CheckFiles()))
	if _, err := c.Key(); err != nil && !errors.Is(err, fs.ErrNotExist) {
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

// missingFiles reports each file read at start (the keys ending in _file,
// but those of sinks and of the cluster: a sink reads its files when it
// connects, and retries) that does not exist, at its line, with what to do
// about it.
func (c *Config) missingFiles() conf.ErrorList {
	var list conf.ErrorList
	walkFileKeys(reflect.ValueOf(c).Elem(), "", func(key string, v reflect.Value) {
		file := v.String()
		if strings.HasPrefix(key, "sinks[") || strings.HasPrefix(key, "cluster.") {
			return
		}
		if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
			return
		}
		msg := "no such file: " + file
		switch {
		case strings.HasSuffix(key, "password_file"):
			msg += fmt.Sprintf("; create it with a first user: sluice passwd %s USER", file)
		case key == "encryption.key_file":
			msg += fmt.Sprintf("; make a key with: sluice keygen %s", file)
		case strings.HasSuffix(key, "acl_file"):
			msg += " (docs/security.md shows an ACL file)"
		}
		list = append(list, c.doc.ErrorAt(key, 0, 0, msg))
	})
	return list
}

// walkFileKeys calls found with the key path and value of every non-empty
// string under v whose key ends in _file.
func walkFileKeys(v reflect.Value, path string, found func(key string, file reflect.Value)) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			walkFileKeys(v.Elem(), path, found)
		}
	case reflect.Slice:
		for i := range v.Len() {
			walkFileKeys(v.Index(i), fmt.Sprintf("%s[%d]", path, i), found)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			key := path
			switch {
			case opts == "inline":
			case name == "" || name == "-":
				continue
			case path == "":
				key = name
			default:
				key = path + "." + name
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.String && strings.HasSuffix(name, "_file") && fv.String() != "" {
				found(key, fv)
				continue
			}
			walkFileKeys(fv, key, found)
		}
	}
}

// withoutNotExist drops from err the errors about a file that does not
// exist.
func withoutNotExist(err error) error {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var keep []error
		for _, e := range joined.Unwrap() {
			if e := withoutNotExist(e); e != nil {
				keep = append(keep, e)
			}
		}
		return errors.Join(keep...)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// explainStart turns an address in use, as the broker or source (its
// index in source) could not start, into a problem at the line of the
// address in the config.
func (c *Config) explainStart(err error, source ...int) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	var le *ingest.ListenerError
	if errors.As(err, &le) {
		for i, l := range c.Broker.Listeners {
			if l.Name == le.Name {
				return c.Problem(fmt.Sprintf("broker.listeners[%d].address", i),
					"%s is in use by another program (listener %q): stop that program, or give the listener another address", l.Address, l.Name)
			}
		}
	}
	for _, i := range source {
		src := &c.Sources[i]
		key := fmt.Sprintf("sources[%d].%s.address", i, src.Kind())
		return c.Problem(key, "the address is in use by another program (source %q): stop that program, or give the source another address", src.Name)
	}
	return err
}

// Problem returns a problem with the value of key (a path such as
// "admin.address") at its line in the config file.
func (c *Config) Problem(key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if c.doc == nil {
		return fmt.Errorf("%s: %s", key, msg)
	}
	return c.doc.ErrorAt(key, 0, 0, msg)
}
