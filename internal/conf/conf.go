// Package conf decodes sluice's YAML files (the main config and rule files)
// strictly, and reports every problem with the file, line, column and key path,
// the way an operator editing the file by hand needs it:
//
//	sluice.yaml:14:7: sinks[0].kafka.brokrs: unknown key (did you mean "brokers"?)
//
// Decoding is goccy/go-yaml in strict mode (unknown keys and duplicate keys are
// errors); validation is the Validate method of the decoded value, whose
// problems name key paths that this package places back on their lines.
package conf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Error is one problem in a file, at a position, for a key.
type Error struct {
	File   string
	Line   int
	Column int
	// Key is the path of the key, e.g. "sinks[1].kafka.brokers"; empty for
	// syntax errors.
	Key string
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in one or more files, in file and line order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Defaulter is implemented by config values that fill in defaults after
// decoding, before Validate.
type Defaulter interface {
	SetDefaults()
}

// Validator is implemented by config values that check themselves after
// decoding. Validate returns nil, or Problems (possibly nested) naming key
// paths relative to the value.
type Validator interface {
	Validate() error
}

// DecodeFile reads path and decodes it into v; see Decode.
func DecodeFile(path string, v any) (*Doc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(path, data, v)
}

type dirKey struct{}

// Dir is the folder relative paths in a file are relative to, for a value
// that decodes itself (yaml.NodeUnmarshalerContext) and reads a file it
// names: the folder of the file being decoded. "" is the working directory.
func Dir(ctx context.Context) string {
	dir, _ := ctx.Value(dirKey{}).(string)
	return dir
}

// Path resolves a path written in a file against dir (see Dir): every
// path in sluice's files is relative to the file that holds it.
func Path(dir, path string) string {
	if path == "" || dir == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// Doc is a decoded file: it knows where each key and value sits, so that
// problems found later (an expression that does not compile) can be placed.
type Doc struct {
	File string
	idx  *index
}

// Place puts validation problems (see Problems) at the lines of their keys.
func (d *Doc) Place(err error) error { return d.idx.place(d.File, err) }

// ErrorAt returns an Error for the value at path. line and col (1-based)
// locate the problem inside the value's text, as an expression compiler
// reports it; 0 means the start of the value.
func (d *Doc) ErrorAt(path string, line, col int, msg string) *Error {
	e := &Error{File: d.File, Key: path, Msg: msg}
	v, ok := d.idx.vals[path]
	if !ok {
		if at, ok := d.idx.keys[path]; ok {
			e.Line, e.Column = at.line, at.col
		}
		return e
	}
	e.Line, e.Column = v.line, v.col
	if v.block && v.line < len(d.idx.lines) {
		// The text starts on the next line, at the block's indentation
		// (an empty block ending the file has no next line).
		e.Line, e.Column = v.line+1, v.indent+1
	}
	if v.quoted {
		e.Column++
	}
	switch {
	case line > 1 && v.block:
		e.Line += line - 1
		e.Column = v.indent + col
	case line > 1:
		// The lines of a plain or quoted value are not the file's (an
		// escaped "\n" is one line of the file; folded line breaks are
		// not lines of the value): point at the value.
	case col > 0:
		e.Column += col - 1
	}
	return e
}

// Decode parses data strictly into v and returns every problem, in file
// order, as an ErrorList. A syntax error, a duplicate key or a second
// document stops there. Otherwise each unknown key and each value of the
// wrong type is reported and left out, and decoding goes on without it;
// then, if v is a Defaulter, its defaults are set, and if v is a Validator,
// every problem it reports is added at the line of its key (or of the
// parent, for a missing key), except those that only repeat a key already
// reported (the "brokers" missing where "brokrs" was unknown).
func Decode(file string, data []byte, v any) (*Doc, error) {
	return DecodeIn(filepath.Dir(file), file, data, v)
}

// DecodeIn is Decode for text that is not read from file itself: paths in
// it are relative to dir.
func DecodeIn(dir, file string, data []byte, v any) (*Doc, error) {
	// goccy counts the \r\n ending a comment as two lines: every error
	// after a comment in a file saved with Windows line endings would be
	// placed too low. YAML reads \r\n as \n anyway.
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	f, err := parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		return nil, ErrorList{fromYAML(file, nil, v, err)}
	}
	idx := newIndex(f, data)
	doc := &Doc{File: file, idx: idx}
	if len(idx.dups) > 0 {
		for _, e := range idx.dups {
			e.File = file
		}
		return doc, idx.dups
	}
	var body ast.Node
	if len(f.Docs) > 0 {
		body = f.Docs[0].Body
	}
	if len(f.Docs) > 1 {
		return doc, ErrorList{{File: file, Line: docLine(f.Docs[1]), Msg: "more than one YAML document; put everything in one"}}
	}
	var list ErrorList
	var dropped []droppedKey
	if body != nil {
		list, dropped = decodeAll(context.WithValue(context.Background(), dirKey{}, dir), file, idx, body, v)
	}
	if d, ok := v.(Defaulter); ok {
		d.SetDefaults()
	}
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			var placed ErrorList
			errors.As(idx.place(file, err), &placed)
			for _, e := range placed {
				if !repeats(e, dropped) {
					list = append(list, e)
				}
			}
		}
	}
	if len(list) == 0 {
		return doc, nil
	}
	sortErrors(list)
	return doc, list
}

// maxDecodeErrors bounds the problems decoding reports (each one costs a
// decode of the whole file).
const maxDecodeErrors = 100

// droppedKey is a key left out of decoding because of a problem with it.
type droppedKey struct {
	path string
	// names are the key and, for an unknown key, the key it was probably
	// meant to be.
	names []string
}

// decodeAll decodes body into v, leaving out each key whose value cannot be
// decoded, and returns a problem per such key.
func decodeAll(ctx context.Context, file string, idx *index, body ast.Node, v any) (ErrorList, []droppedKey) {
	var list ErrorList
	var dropped []droppedKey
	rv := reflect.ValueOf(v)
	for len(list) < maxDecodeErrors {
		if rv.Kind() == reflect.Pointer && !rv.IsNil() {
			rv.Elem().SetZero()
		}
		err := func() (err error) {
			// goccy v1.19.2 panics on a tag with no value where a list or a
			// mapping is expected ("servers: !"; goccy/go-yaml#735, fixed
			// after that release). A file must not crash sluice.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("the YAML decoder failed (%v); look for a tag (!...) without a value", r)
				}
			}()
			return yaml.NewDecoder(bytes.NewReader(nil), yaml.Strict()).DecodeFromNodeContext(ctx, body, v)
		}()
		if err == nil {
			return list, dropped
		}
		e := fromYAML(file, idx, v, err)
		list = append(list, e)
		key, ok := removePair(body, rv.Type(), pos{e.Line, e.Column})
		path, known := "", false
		if ok {
			path, known = idx.at[pos{key.Position.Line, key.Position.Column}]
		}
		if !known {
			// Nothing to leave out: what was decoded is not worth
			// validating.
			if rv.Kind() == reflect.Pointer && !rv.IsNil() {
				rv.Elem().SetZero()
			}
			return list, append(dropped, droppedKey{path: ""})
		}
		d := droppedKey{path: path, names: []string{key.Value}}
		if m := reSuggested.FindStringSubmatch(e.Msg); m != nil {
			d.names = append(d.names, m[1])
		}
		dropped = append(dropped, d)
	}
	// Too many to go on: what was decoded is not worth validating.
	return list, append(dropped, droppedKey{path: ""})
}

var reSuggested = regexp.MustCompile(`\(did you mean "(.*)"\?\)$`)

// repeats reports whether a validation problem only repeats a problem
// already reported for a key that was left out: one about the key or what
// is inside it, or its parent missing that key (or the key it was probably
// meant to be).
func repeats(e *Error, dropped []droppedKey) bool {
	for _, d := range dropped {
		if d.path == "" {
			return true
		}
		if e.Key == d.path || strings.HasPrefix(e.Key, d.path+".") || strings.HasPrefix(e.Key, d.path+"[") {
			return true
		}
		if e.Key == parentPath(d.path) {
			for _, name := range d.names {
				if e.Msg == missingMsg(name) {
					return true
				}
			}
		}
	}
	return false
}

// removePair removes from the tree under n, which decodes into a value of
// type t, the innermost key-value pair whose key is at p or whose value
// holds the token at p, and returns its key's token. It does not look inside a
// value that decodes itself (a secret's {env: NAME}) or is of the wrong
// kind (a mapping where text was wanted): that value goes whole, with its
// key.
func removePair(n ast.Node, t reflect.Type, p pos) (*token.Token, bool) {
	t = deref(t)
	switch n := n.(type) {
	case *ast.MappingNode:
		for i, mv := range n.Values {
			kt := mv.Key.GetToken().Position
			atKey := kt.Line == p.line && kt.Column == p.col
			if !atKey && !holds(mv.Value, p) {
				continue
			}
			if inner, ok := valueType(t, mv.Key.GetToken().Value); ok && !atKey {
				if key, ok := removePair(mv.Value, inner, p); ok {
					return key, true
				}
			}
			n.Values = append(n.Values[:i:i], n.Values[i+1:]...)
			return mv.Key.GetToken(), true
		}
	case *ast.SequenceNode:
		if t.Kind() != reflect.Slice && t.Kind() != reflect.Array && t.Kind() != reflect.Interface {
			return nil, false
		}
		elem := t
		if t.Kind() != reflect.Interface {
			elem = t.Elem()
		}
		for _, item := range n.Values {
			if holds(item, p) && !decodesItself(elem) {
				return removePair(item, elem, p)
			}
		}
	case *ast.AnchorNode:
		return removePair(n.Value, t, p)
	case *ast.TagNode:
		return removePair(n.Value, t, p)
	}
	return nil, false
}

// valueType is the type of the value of key in a mapping that decodes into
// t, when decoding looks inside that value key by key.
func valueType(t reflect.Type, key string) (reflect.Type, bool) {
	var inner reflect.Type
	switch t.Kind() {
	case reflect.Struct:
		f, ok := fieldByKey(t, key)
		if !ok {
			return nil, false
		}
		inner = f.Type
	case reflect.Map, reflect.Interface:
		inner = t
		if t.Kind() == reflect.Map {
			inner = t.Elem()
		}
	default:
		return nil, false
	}
	if decodesItself(inner) {
		return nil, false
	}
	return inner, true
}

var (
	nodeUnmarshaler      = reflect.TypeFor[yaml.NodeUnmarshaler]()
	nodeUnmarshalerCtx   = reflect.TypeFor[yaml.NodeUnmarshalerContext]()
	bytesUnmarshaler     = reflect.TypeFor[yaml.BytesUnmarshaler]()
	bytesUnmarshalerCtx  = reflect.TypeFor[yaml.BytesUnmarshalerContext]()
	ifaceUnmarshaler     = reflect.TypeFor[yaml.InterfaceUnmarshaler]()
	ifaceUnmarshalerCtx  = reflect.TypeFor[yaml.InterfaceUnmarshalerContext]()
	textUnmarshalerIface = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()
)

// decodesItself reports whether values of t decode themselves, rather than
// key by key.
func decodesItself(t reflect.Type) bool {
	t = deref(t)
	pt := reflect.PointerTo(t)
	for _, i := range []reflect.Type{nodeUnmarshaler, nodeUnmarshalerCtx, bytesUnmarshaler, bytesUnmarshalerCtx, ifaceUnmarshaler, ifaceUnmarshalerCtx, textUnmarshalerIface} {
		if pt.Implements(i) || t.Implements(i) {
			return true
		}
	}
	return false
}

// holds reports whether the token at p is in n.
func holds(n ast.Node, p pos) bool {
	found := false
	ast.Walk(visitFunc(func(c ast.Node) bool {
		if found {
			return false
		}
		if tk := c.GetToken(); tk != nil && tk.Position.Line == p.line && tk.Position.Column == p.col {
			found = true
		}
		if mv, ok := c.(*ast.MappingValueNode); ok {
			if tk := mv.Key.GetToken(); tk.Position.Line == p.line && tk.Position.Column == p.col {
				found = true
			}
		}
		return !found
	}), n)
	return found
}

type visitFunc func(ast.Node) bool

func (f visitFunc) Visit(n ast.Node) ast.Visitor {
	if f(n) {
		return f
	}
	return nil
}

// sortErrors puts problems in file order: by line, then column.
func sortErrors(list ErrorList) {
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Line != list[j].Line {
			return list[i].Line < list[j].Line
		}
		return list[i].Column < list[j].Column
	})
}

func docLine(d *ast.DocumentNode) int {
	if d.Start != nil {
		return d.Start.Position.Line
	}
	if d.Body != nil {
		return d.Body.GetToken().Position.Line
	}
	return 0
}

var (
	reUnknown = regexp.MustCompile(`^unknown field "(.*)"$`)
	reStruct  = regexp.MustCompile(`Go struct field [^ ]+ of type `)
	reQuoted  = regexp.MustCompile(`"([^"]+)"`)
)

// fromYAML turns a goccy error into an Error at its token.
func fromYAML(file string, idx *index, v any, err error) *Error {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		// Some decoders (durations, for one) report no position, but quote the
		// offending value: find the scalar that holds it.
		e := &Error{File: file, Msg: err.Error()}
		quoted := e.Msg
		e.Msg = durationMsg(e.Msg)
		if m := reQuoted.FindAllStringSubmatch(quoted, -1); m != nil && idx != nil {
			if at, ok := idx.values[m[len(m)-1][1]]; ok {
				e.Line, e.Column, e.Key = at.line, at.col, idx.at[at]
			}
		}
		return e
	}
	tk := ye.GetToken()
	e := &Error{File: file, Line: tk.Position.Line, Column: tk.Position.Column, Msg: ye.GetMessage()}
	if idx != nil {
		e.Key = idx.pathAt(tk.Position.Line, tk.Position.Column)
	}
	var unknown *yaml.UnknownFieldError
	var typ *yaml.TypeError
	switch {
	case errors.As(err, &unknown):
		if m := reUnknown.FindStringSubmatch(ye.GetMessage()); m != nil {
			e.Msg = "unknown key"
			if e.Key == "" {
				e.Key = m[1]
			}
			if alt := suggest(v, e.Key); alt != "" {
				e.Msg += fmt.Sprintf(" (did you mean %q?)", alt)
			}
		}
	case errors.As(err, &typ):
		e.Msg = fmt.Sprintf("want %s, got %s %q", describeType(typ.DstType), describeType(typ.SrcType), tk.Value)
	default:
		e.Msg = reStruct.ReplaceAllString(e.Msg, "")
	}
	return e
}

// reDuration is what time.ParseDuration says of text it cannot read.
var reDuration = regexp.MustCompile(`^time: .*duration ("[^"]*")$`)

// durationWant is how every problem with a duration says what it wants.
const durationWant = "a duration such as 5s or 250ms"

// durationMsg says a duration that cannot be read the way every other
// problem with a duration is said ("time: unknown unit..." was not).
func durationMsg(msg string) string {
	if m := reDuration.FindStringSubmatch(msg); m != nil {
		return "want " + durationWant + ", got " + m[1]
	}
	return msg
}

func describeType(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.String() {
	case "time.Duration":
		return durationWant
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// index maps key paths to positions in a parsed file, and back.
type index struct {
	keys   map[string]pos      // path -> position of its key (or item)
	at     map[pos]string      // position of a key or scalar value -> path
	values map[string]pos      // scalar text -> position of its first use
	vals   map[string]valuePos // path -> where its scalar value's text starts
	dups   ErrorList           // keys set twice in one mapping, or by an alias
	lines  []string
}

type valuePos struct {
	line, col int
	indent    int  // column (0-based) where continuation lines start
	quoted    bool // the text starts one column after the token
	block     bool // a | or > block: the text starts on the next line
}

type pos struct{ line, col int }

func newIndex(f *ast.File, src []byte) *index {
	idx := &index{keys: map[string]pos{}, at: map[pos]string{}, values: map[string]pos{}, vals: map[string]valuePos{},
		lines: strings.Split(string(src), "\n")}
	for _, d := range f.Docs {
		if d.Body != nil {
			idx.walk("", d.Body)
		}
		break
	}
	return idx
}

func (idx *index) walk(path string, n ast.Node) {
	switch n := n.(type) {
	case *ast.MappingNode:
		for _, mv := range n.Values {
			idx.walkPair(path, mv)
		}
	case *ast.MappingValueNode:
		idx.walkPair(path, n)
	case *ast.SequenceNode:
		for i, item := range n.Values {
			p := fmt.Sprintf("%s[%d]", path, i)
			at := startPos(item)
			idx.keys[p] = at
			if _, ok := idx.at[at]; !ok {
				idx.at[at] = p
			}
			idx.walk(p, item)
		}
	case *ast.AnchorNode:
		idx.walk(path, n.Value)
	case *ast.TagNode:
		idx.walk(path, n.Value)
	case *ast.LiteralNode:
		tk := n.Start
		vp := valuePos{line: tk.Position.Line, col: tk.Position.Column, block: true, indent: tk.Position.Column - 1}
		if n.Value != nil && n.Value.GetToken() != nil {
			// The block's indentation is that of its first content line.
			vp.indent = blockIndent(n.Value.GetToken().Origin)
		}
		idx.vals[path] = vp
		idx.at[pos{tk.Position.Line, tk.Position.Column}] = path
	default:
		if n != nil && n.GetToken() != nil {
			tk := n.GetToken()
			at := pos{tk.Position.Line, tk.Position.Column}
			if _, ok := idx.at[at]; !ok {
				idx.at[at] = path
			}
			if _, ok := idx.values[tk.Value]; !ok {
				idx.values[tk.Value] = at
			}
			if _, ok := idx.vals[path]; !ok {
				idx.vals[path] = valuePos{line: at.line, col: at.col, indent: at.col - 1,
					quoted: tk.Type == token.DoubleQuoteType || tk.Type == token.SingleQuoteType}
			}
		}
	}
}

func (idx *index) walkPair(path string, mv *ast.MappingValueNode) {
	k := ast.Node(mv.Key)
	if mk, ok := k.(*ast.MappingKeyNode); ok { // "? key"
		k = mk.Value
	}
	if _, ok := k.(*ast.AliasNode); ok {
		// goccy expands an alias used as a key: one naming a list of
		// aliases of lists... takes exponential time and memory.
		tp := mv.Key.GetToken().Position
		idx.dups = append(idx.dups, &Error{Line: tp.Line, Column: tp.Column, Key: path, Msg: "a key cannot be an alias"})
		return
	}
	key := mv.Key.GetToken().Value
	p := key
	if path != "" {
		p = path + "." + key
	}
	tp := mv.Key.GetToken().Position
	if first, ok := idx.keys[p]; ok {
		idx.dups = append(idx.dups, &Error{Line: tp.Line, Column: tp.Column, Key: p,
			Msg: fmt.Sprintf("duplicate key (first set on line %d)", first.line)})
		return
	}
	idx.keys[p] = pos{tp.Line, tp.Column}
	idx.at[pos{tp.Line, tp.Column}] = p
	idx.walk(p, mv.Value)
	// goccy's column for a plain scalar is not always where its text starts;
	// for a value on the key's line, read it off the line itself.
	if v, ok := idx.vals[p]; ok && !v.block && v.line == tp.Line && tp.Line <= len(idx.lines) {
		line := idx.lines[tp.Line-1]
		if from := tp.Column - 1; from >= 0 && from < len(line) {
			if colon := strings.IndexByte(line[from:], ':'); colon >= 0 {
				start := from + colon + 1
				for start < len(line) && line[start] == ' ' {
					start++
				}
				v.col, v.indent = start+1, start
				idx.vals[p] = v
			}
		}
	}
}

// startPos is where a node begins as the reader sees it: for a mapping, its
// first key (goccy's token for a mapping is the first ':').
func startPos(n ast.Node) pos {
	switch m := n.(type) {
	case *ast.MappingNode:
		if len(m.Values) > 0 {
			n = m.Values[0].Key
		}
	case *ast.MappingValueNode:
		n = m.Key
	}
	tp := n.GetToken().Position
	return pos{tp.Line, tp.Column}
}

func (idx *index) pathAt(line, col int) string {
	if p, ok := idx.at[pos{line, col}]; ok {
		return p
	}
	// The token may be inside a value (a flow sequence, say): take the
	// nearest key at or before it on the same line.
	best, bestCol := "", -1
	for k, p := range idx.at {
		if k.line == line && k.col <= col && k.col > bestCol {
			best, bestCol = p, k.col
		}
	}
	return best
}

// place puts validation problems at the lines of their keys.
func (idx *index) place(file string, err error) error {
	var probs Problems
	if !errors.As(err, &probs) {
		return ErrorList{{File: file, Msg: err.Error()}}
	}
	list := make(ErrorList, 0, len(probs))
	for _, p := range probs {
		e := &Error{File: file, Key: p.Path, Msg: p.Msg}
		if at, ok := idx.keys[p.Path]; ok {
			e.Line, e.Column = at.line, at.col
		} else {
			// A missing key: point at the nearest parent that exists.
			parent := p.Path
			for parent != "" {
				parent = parentPath(parent)
				if at, ok := idx.keys[parent]; ok {
					e.Line, e.Column = at.line, at.col
					break
				}
			}
			if e.Line == 0 {
				e.Line = 1
			}
		}
		list = append(list, e)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Line < list[j].Line })
	return list
}

func blockIndent(origin string) int {
	for _, line := range strings.Split(origin, "\n") {
		if strings.TrimSpace(line) != "" {
			return len(line) - len(strings.TrimLeft(line, " "))
		}
	}
	return 0
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}
