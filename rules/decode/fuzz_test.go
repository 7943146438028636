package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Seed corpora are in testdata/fuzz/<FuzzName>/; run a target with
//
//	go test ./rules/decode -run XXX -fuzz FuzzDecodeAuto -fuzztime 60s

// decoders are reused across fuzz inputs, so that state left by one input
// is exercised by the next.
var decoders = sync.Pool{New: func() any { return NewDecoder(Limits{}) }}

// FuzzDecodeAuto decodes arbitrary bytes with auto detection, with and
// without a split, and checks what must hold of any result.
func FuzzDecodeAuto(f *testing.F) {
	f.Add([]byte(`{"a":1,"readings":[{"b":"x"}]}`))
	f.Add(gzipped(telemetry))
	f.Add(b64(zstded([]byte("a=1 b=\"two\""))))
	auto := mustChain(f, "auto")
	f.Fuzz(func(t *testing.T, data []byte) {
		d := decoders.Get().(*Decoder)
		defer decoders.Put(d)
		for _, opts := range []Options{{}, {Split: "readings"}} {
			rs, err := d.Decode(auto, data, opts)
			checkBuffers(t, d)
			if err != nil {
				checkError(t, err)
				continue
			}
			checkReadings(t, d, rs)
		}
	})
}

// FuzzDecodeJSON checks the json step against encoding/json: both accept
// the same payloads and give the same fields, with and without a split.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,{"c":null}]},"d":"\u00e9\ud800","a_b":-1.5e3}`))
	f.Add([]byte(`[{"x":true},{}]`))
	f.Add([]byte(`{"s":"x","r":[{"s":"y","t":1},{"u":"v"}],"r":[{"t":2}],"z":{"a":null}}`))
	c := mustChain(f, "json")
	f.Fuzz(func(t *testing.T, data []byte) {
		d := decoders.Get().(*Decoder)
		defer decoders.Put(d)
		for _, split := range []string{"", "r"} {
			rs, err := d.Decode(c, data, Options{Split: split})
			want, refErr := referenceJSON(data, split)
			switch {
			case err != nil && refErr == nil:
				t.Fatalf("Decode(%q, split %q) failed: %v\nencoding/json gives %s", data, split, err, show(want))
			case err == nil && refErr != nil:
				t.Fatalf("Decode(%q, split %q) = %s, but encoding/json says %v", data, split, show(rs), refErr)
			case err != nil:
				checkError(t, err)
				continue
			}
			checkReadings(t, d, rs)
			if !equalReadings(rs, want) {
				t.Fatalf("Decode(%q, split %q) =\n\t%s\nencoding/json gives\n\t%s", data, split, show(rs), show(want))
			}
		}
	})
}

// FuzzDecodeKV checks that kv readings, written back as kv text, decode to
// the same readings.
func FuzzDecodeKV(f *testing.F) {
	f.Add([]byte(`t=21.5 s="a \"b\" c\\" ok=true`))
	c := mustChain(f, "kv")
	f.Fuzz(func(t *testing.T, data []byte) {
		d := decoders.Get().(*Decoder)
		defer decoders.Put(d)
		rs, err := d.Decode(c, data, Options{})
		if err != nil {
			checkError(t, err)
			return
		}
		checkReadings(t, d, rs)
		if len(rs) != 1 {
			t.Fatalf("kv gave %d readings", len(rs))
		}
		first := show(rs)
		for _, f := range rs[0] {
			if !bytes.Contains(data, []byte(f.Name)) || strings.ContainsAny(f.Name, "= ,;\t\r\n") {
				t.Fatalf("name %q is not a key of %q", f.Name, data)
			}
		}
		text := formatKV(rs[0])
		again, err := d.Decode(c, []byte(text), Options{})
		if err != nil {
			t.Fatalf("%q gives %s, which written as %q fails: %v", data, first, text, err)
		}
		if show(again) != first {
			t.Fatalf("%q gives %s, which written as %q gives %s", data, first, text, show(again))
		}
	})
}

// checkError asserts that an error message says which step failed.
func checkError(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	for _, s := range stepNames {
		if strings.HasPrefix(msg, s+": ") {
			if errors.Is(err, ErrTooLarge) && !strings.Contains(msg, "rejected as") {
				t.Fatalf("ErrTooLarge without saying so: %q", msg)
			}
			return
		}
	}
	t.Fatalf("error %q does not start with a step name", msg)
}

// formatKV writes a reading as kv text, quoting every string.
func formatKV(rd Reading) string {
	var b strings.Builder
	for _, f := range rd {
		b.WriteString(f.Name)
		b.WriteByte('=')
		switch v := f.Value.(type) {
		case float64:
			b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		case bool:
			b.WriteString(strconv.FormatBool(v))
		case string:
			b.WriteByte('"')
			b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v))
			b.WriteByte('"')
		}
		b.WriteByte(' ')
	}
	return b.String()
}

// referenceJSON decodes a json step's payload with encoding/json, following
// the same rules: an object or an array of objects, flattened, nulls and
// arrays left out, repeated names keep their first place and last value;
// with split, the elements of that top-level array merged with the rest.
func referenceJSON(data []byte, split string) ([]Reading, error) {
	if !json.Valid(data) {
		return nil, errors.New("invalid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch {
	case tok == json.Delim('{') && split == "":
		rd, err := referenceObject(dec, "", 1, "", nil)
		if err != nil {
			return nil, err
		}
		return []Reading{referenceDedupe(rd)}, nil
	case tok == json.Delim('{'):
		var elems []Reading
		top, err := referenceObject(dec, "", 1, split, &elems)
		if err != nil {
			return nil, err
		}
		if elems == nil {
			return nil, errors.New("no split array")
		}
		rs := []Reading{}
		for _, e := range elems {
			rs = append(rs, referenceDedupe(append(referenceDedupe(top), e...)))
		}
		return rs, nil
	case tok == json.Delim('[') && split == "":
		rs, err := referenceElements(dec, 2)
		for i, rd := range rs {
			rs[i] = referenceDedupe(rd)
		}
		return rs, err
	}
	return nil, fmt.Errorf("%v is not an object", tok)
}

// referenceElements reads the rest of an array of objects at depth.
func referenceElements(dec *json.Decoder, depth int) ([]Reading, error) {
	if depth-1 > maxDepth {
		return nil, errors.New("too deep")
	}
	rs := []Reading{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if tok != json.Delim('{') {
			return nil, fmt.Errorf("element %v is not an object", tok)
		}
		rd, err := referenceObject(dec, "", depth, "", nil)
		if err != nil {
			return nil, err
		}
		rs = append(rs, rd)
	}
	_, err := dec.Token() // ']'
	return rs, err
}

// referenceObject reads the rest of an object at depth; with split, it
// puts the elements of that member in *elems.
func referenceObject(dec *json.Decoder, prefix string, depth int, split string, elems *[]Reading) (Reading, error) {
	if depth > maxDepth {
		return nil, errors.New("too deep")
	}
	var rd Reading
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name := prefix + tok.(string)
		tok, err = dec.Token()
		if err != nil {
			return nil, err
		}
		if split != "" && name == split {
			if tok != json.Delim('[') {
				return nil, errors.New("split member is not an array")
			}
			if *elems, err = referenceElements(dec, depth+2); err != nil {
				return nil, err
			}
			continue
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' {
				nested, err := referenceObject(dec, name+"_", depth+1, "", nil)
				if err != nil {
					return nil, err
				}
				rd = append(rd, nested...)
			} else if err := referenceSkip(dec, depth+1); err != nil {
				return nil, err
			}
			continue
		case nil:
			continue
		}
		if name == "" {
			return nil, errors.New("empty name")
		}
		switch v := tok.(type) {
		case json.Number:
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return nil, err
			}
			rd = append(rd, Field{name, f})
		default:
			rd = append(rd, Field{name, v})
		}
	}
	_, err := dec.Token() // '}'
	return rd, err
}

// referenceSkip skips the rest of an array, checking its depth.
func referenceSkip(dec *json.Decoder, depth int) error {
	if depth > maxDepth {
		return errors.New("too deep")
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if err := referenceSkip(dec, depth+1); err != nil {
				return err
			}
		case json.Delim('}'), json.Delim(']'):
			return nil
		}
	}
}

func referenceDedupe(rd Reading) Reading {
	out := Reading{}
	at := map[string]int{}
	for _, f := range rd {
		if i, ok := at[f.Name]; ok {
			out[i].Value = f.Value
			continue
		}
		at[f.Name] = len(out)
		out = append(out, f)
	}
	return out
}

// FuzzDecodeWant checks a decoder that keeps some fields (Want) against one
// that keeps all: the same payloads fail (with the same error), and the
// same readings come out, less the fields left out.
func FuzzDecodeWant(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,{"c":null}]},"d":"\u00e9\ud800","a_b":-1.5e3,"bb":1e999}`))
	f.Add([]byte(`[{"x":true},{"yy":"z"}]`))
	f.Add([]byte(`aa=1 b="two" cc=x`))
	auto := mustChain(f, "auto")
	even := func(name string) bool { return len(name)%2 == 0 }
	f.Fuzz(func(t *testing.T, data []byte) {
		all, some := NewDecoder(Limits{}), NewDecoder(Limits{})
		some.Want(even)
		for range 2 {
			want, errAll := all.Decode(auto, data, Options{})
			got, errSome := some.Decode(auto, data, Options{})
			if fmt.Sprint(errAll) != fmt.Sprint(errSome) {
				t.Fatalf("%q: %v with every field, %v with some", data, errAll, errSome)
			}
			if errAll != nil {
				continue
			}
			var kept []Reading
			for _, rd := range want {
				var k Reading
				for _, f := range rd {
					if even(f.Name) {
						k = append(k, f)
					}
				}
				kept = append(kept, k)
			}
			if show(got) != show(kept) {
				t.Fatalf("%q: with some fields %s, want %s", data, show(got), show(kept))
			}
		}
	})
}
