package decode

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds the nesting of objects and arrays in JSON.
const maxDepth = 32

// jsonParser is a strict JSON scanner that writes fields straight into a
// fieldBuilder, flattening nested objects as it goes. Positions in errors
// are byte offsets in the JSON text.
type jsonParser struct {
	b     *fieldBuilder
	data  []byte
	pos   int
	depth int
	split string
}

// parseJSON parses data into b's fields: a top-level object, or an array
// of objects; with split, the elements of the named top-level array.
func (b *fieldBuilder) parseJSON(data []byte, split string) error {
	b.format = stepJSON
	b.filter = b.want != nil && split == ""
	p := jsonParser{b: b, data: data, split: split}
	p.skipSpace()
	if p.pos == len(data) {
		return fmt.Errorf("json: empty payload")
	}
	switch c := data[p.pos]; {
	case c == '{':
		b.names.startReading()
		if err := p.object(&b.top, 0); err != nil {
			return err
		}
		b.endTop()
		if split != "" && b.shape != shapeSplit {
			return fmt.Errorf("json: split %q: the payload has no top-level %q array", split, split)
		}
	case c == '[' && split != "":
		return fmt.Errorf("json: split %q: the payload is an array, want an object", split)
	case c == '[':
		if err := p.array(); err != nil {
			return err
		}
	default:
		kind := kindOf(c)
		if err := p.skipValue(); err != nil {
			return err
		}
		if split != "" {
			return fmt.Errorf("json: split %q: the payload is %s, want an object", split, kind)
		}
		return fmt.Errorf("json: payload is %s, want an object", kind)
	}
	p.skipSpace()
	if p.pos < len(data) {
		return p.errorf("trailing data after the top-level value at byte %d", p.pos)
	}
	return nil
}

// array parses a top-level array of objects, one reading each.
func (p *jsonParser) array() error {
	p.b.shape = shapeArray
	return p.elements(func(i int) error {
		return fmt.Errorf("json: array element %d is %s, want an object", i, kindOf(p.data[p.pos]))
	})
}

// elements parses an array whose elements must be objects into b.elems;
// notObject makes the error for element i, which is not.
func (p *jsonParser) elements(notObject func(i int) error) error {
	if err := p.enter(); err != nil {
		return err
	}
	p.skipSpace()
	if p.peek() == ']' {
		p.pos++
		p.depth--
		return nil
	}
	for i := 0; ; i++ {
		if p.peek() != '{' {
			if p.pos == len(p.data) {
				return p.unexpected("a value")
			}
			return notObject(i)
		}
		p.b.names.startReading()
		if err := p.object(&p.b.elems, 0); err != nil {
			return err
		}
		p.b.endElement()
		if p.b.count() > p.b.maxFields {
			return p.b.tooMany(len(p.data))
		}
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.pos++
			p.skipSpace()
		case ']':
			p.pos++
			p.depth--
			return nil
		default:
			return p.unexpected("',' or ']'")
		}
	}
}

// object parses an object into list. b.key[:prefix] is the flattened name
// of the object ("" or "motor_"); its fields are named prefix + key.
func (p *jsonParser) object(list *[]Field, prefix int) error {
	if err := p.enter(); err != nil {
		return err
	}
	p.skipSpace()
	if p.peek() == '}' {
		p.pos++
		p.depth--
		return nil
	}
	for {
		if p.peek() != '"' {
			return p.unexpected("a string key")
		}
		keyAt := p.pos
		name, err := p.name(prefix)
		if err != nil {
			return err
		}
		p.skipSpace()
		if p.peek() != ':' {
			return p.unexpected("':'")
		}
		p.pos++
		p.skipSpace()
		if err := p.member(list, name, prefix, keyAt); err != nil {
			return err
		}
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.pos++
			p.skipSpace()
		case '}':
			p.pos++
			p.depth--
			return nil
		default:
			return p.unexpected("',' or '}'")
		}
	}
}

// name parses the key at pos and returns the flattened name of its member:
// b.key[:prefix] followed by the key. A plain top-level key is not copied.
func (p *jsonParser) name(prefix int) ([]byte, error) {
	if prefix == 0 {
		if end := scanPlain(p.data, p.pos+1); end < len(p.data) && p.data[end] == '"' {
			name := p.data[p.pos+1 : end]
			p.pos = end + 1
			return name, nil
		}
	}
	var err error
	p.b.key, err = p.appendString(p.b.key[:prefix])
	return p.b.key, err
}

// member parses the value of the object member with the flattened name
// name (which is b.key or a part of the payload) and adds it to list.
func (p *jsonParser) member(list *[]Field, name []byte, prefix, keyAt int) error {
	b := p.b
	if p.pos == len(p.data) {
		return p.unexpected("a value")
	}
	c := p.data[p.pos]
	if p.depth == 1 && p.split != "" && string(name) == p.split {
		if c != '[' {
			return fmt.Errorf("json: split %q is %s, want an array of objects", p.split, kindOf(c))
		}
		b.shape = shapeSplit
		b.dropElements() // of an earlier split key: the last wins
		return p.elements(func(i int) error {
			return fmt.Errorf("json: split %q: element %d is %s, want an object", p.split, i, kindOf(p.data[p.pos]))
		})
	}
	switch c {
	case '{':
		b.key = append(append(b.key[:prefix], name[prefix:]...), '_')
		return p.object(list, len(b.key))
	case '[':
		return p.skipValue()
	case 'n':
		return p.literal("null")
	}
	if len(name) == 0 {
		return fmt.Errorf("json: empty key at byte %d", keyAt)
	}
	var ok bool
	switch {
	case c == '"':
		start := len(b.strs)
		var err error
		if b.strs, err = p.appendString(b.strs); err != nil {
			return err
		}
		if key, kept := b.field(name); kept {
			ok = b.addString(list, key, start)
		} else {
			b.strs = b.strs[:start]
			ok = b.skip(list)
		}
	case c == 't':
		if err := p.literal("true"); err != nil {
			return err
		}
		ok = b.addBool(list, name, true)
	case c == 'f':
		if err := p.literal("false"); err != nil {
			return err
		}
		ok = b.addBool(list, name, false)
	case c == '-' || '0' <= c && c <= '9':
		v, err := p.number()
		if err != nil {
			return err
		}
		// The number is checked either way; only a kept one is boxed.
		if key, kept := b.field(name); kept {
			ok = b.add(list, key, v)
		} else {
			ok = b.skip(list)
		}
	default:
		return p.unexpected("a value")
	}
	if !ok {
		return b.tooMany(len(p.data))
	}
	return nil
}

// skipValue parses and validates a value without keeping it.
func (p *jsonParser) skipValue() error {
	if p.pos == len(p.data) {
		return p.unexpected("a value")
	}
	switch c := p.data[p.pos]; {
	case c == '{' || c == '[':
		return p.skipContainer()
	case c == '"':
		var err error
		p.b.skipped, err = p.appendString(p.b.skipped[:0])
		return err
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		// Only the syntax matters: the value is not kept.
		end, _, _ := scanNumber(p.data, p.pos)
		if end < 0 {
			return p.errorf("invalid number at byte %d", p.pos)
		}
		p.pos = end
		return nil
	}
	return p.unexpected("a value")
}

// skipContainer parses and validates an object or array.
func (p *jsonParser) skipContainer() error {
	end := byte(']')
	if p.data[p.pos] == '{' {
		end = '}'
	}
	if err := p.enter(); err != nil {
		return err
	}
	p.skipSpace()
	if p.peek() == end {
		p.pos++
		p.depth--
		return nil
	}
	for {
		if end == '}' {
			if p.peek() != '"' {
				return p.unexpected("a string key")
			}
			var err error
			if p.b.skipped, err = p.appendString(p.b.skipped[:0]); err != nil {
				return err
			}
			p.skipSpace()
			if p.peek() != ':' {
				return p.unexpected("':'")
			}
			p.pos++
			p.skipSpace()
		}
		if err := p.skipValue(); err != nil {
			return err
		}
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.pos++
			p.skipSpace()
		case end:
			p.pos++
			p.depth--
			return nil
		default:
			return p.unexpected(fmt.Sprintf("',' or '%c'", end))
		}
	}
}

// enter steps into the object or array at pos.
func (p *jsonParser) enter() error {
	if p.depth++; p.depth > maxDepth {
		return p.errorf("nested deeper than %d levels at byte %d", maxDepth, p.pos)
	}
	p.pos++
	return nil
}

// appendString parses the string at pos and appends its unescaped bytes to
// dst. Invalid UTF-8 and lone surrogates become U+FFFD, as in encoding/json.
func (p *jsonParser) appendString(dst []byte) ([]byte, error) {
	data := p.data
	start := p.pos
	i := p.pos + 1
	for {
		j := scanPlain(data, i)
		dst = append(dst, data[i:j]...)
		if j == len(data) {
			return dst, p.errorf("unterminated string starting at byte %d", start)
		}
		switch c := data[j]; {
		case c == '"':
			p.pos = j + 1
			return dst, nil
		case c < 0x20:
			return dst, p.errorf("control character 0x%02x in string at byte %d", c, j)
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(data[j:])
			if r == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, data[j:j+size]...)
			}
			i = j + size
		default: // a backslash
			if j+1 == len(data) {
				return dst, p.errorf("unterminated string starting at byte %d", start)
			}
			i = j + 2
			switch e := data[j+1]; e {
			case '"', '\\', '/':
				dst = append(dst, e)
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r, ok := hex4(data[j+2:])
				if !ok {
					return dst, p.errorf("invalid \\u escape in string at byte %d", j)
				}
				i = j + 6
				if utf16.IsSurrogate(r) {
					r2, ok := rune(0), false
					if bytes.HasPrefix(data[i:], []byte(`\u`)) {
						r2, ok = hex4(data[i+2:])
					}
					if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				dst = utf8.AppendRune(dst, r)
			default:
				return dst, p.errorf("invalid escape %q in string at byte %d", data[j:j+2], j)
			}
		}
	}
}

// scanPlain returns the index of the first byte from data[i] that ends a
// plain run of string content: '"', '\\', a control character or a
// non-ASCII byte; len(data) if there is none. It looks at 8 bytes at a time.
func scanPlain(data []byte, i int) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	for ; i+8 <= len(data); i += 8 {
		x := binary.LittleEndian.Uint64(data[i:])
		quote, backslash := x^(ones*'"'), x^(ones*'\\')
		// A high bit set in any term marks a byte to look at (the usual
		// has-zero-byte and has-byte-less-than tricks; false alarms are
		// settled by the loop below).
		special := (quote-ones)&^quote | (backslash-ones)&^backslash | (x-ones*0x20)&^x | x
		if special&highs != 0 {
			break
		}
	}
	for ; i < len(data); i++ {
		if c := data[i]; c == '"' || c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return i
		}
	}
	return i
}

// hex4 decodes the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number parses the number at pos.
func (p *jsonParser) number() (float64, error) {
	start := p.pos
	end, v, exact := scanNumber(p.data, start)
	if end < 0 {
		return 0, p.errorf("invalid number at byte %d", start)
	}
	p.pos = end
	if exact {
		return v, nil
	}
	v, ok := parseFloat(p.data[start:end])
	if !ok {
		return 0, p.errorf("number %s at byte %d is out of range", clip(p.data[start:end]), start)
	}
	return v, nil
}

// literal parses true, false or null at pos.
func (p *jsonParser) literal(word string) error {
	if !bytes.HasPrefix(p.data[p.pos:], []byte(word)) {
		return p.unexpected("a value")
	}
	p.pos += len(word)
	return nil
}

func (p *jsonParser) peek() byte {
	if p.pos < len(p.data) {
		return p.data[p.pos]
	}
	return 0
}

func (p *jsonParser) skipSpace() {
	for p.pos < len(p.data) && p.data[p.pos] <= ' ' && isSpace(p.data[p.pos]) {
		p.pos++
	}
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("json: "+format, args...)
}

// unexpected is the error for what is at pos, where want was expected.
func (p *jsonParser) unexpected(want string) error {
	if p.pos == len(p.data) {
		return p.errorf("unexpected end of input at byte %d, want %s", p.pos, want)
	}
	return p.errorf("unexpected %s at byte %d, want %s", describeByte(p.data[p.pos]), p.pos, want)
}

// describeByte shows c in a message: 'x' if printable, else 0x01.
func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// clip shortens b for a message.
func clip(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "..."
	}
	return string(b)
}

// kindOf names the kind of JSON value that starts with c.
func kindOf(c byte) string {
	switch {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || '0' <= c && c <= '9':
		return "a number"
	}
	return "not a JSON value"
}

// scanNumber scans the JSON number that starts at b[i] and returns its
// end, or -1 if there is none. It also returns the number's value if it is
// exact: up to 15 significant digits and no exponent (the digits and the
// power of ten are then exact in a float64, so the one division is
// correctly rounded), or a whole number up to 2^53. Otherwise the caller
// converts it with parseFloat.
func scanNumber(b []byte, i int) (end int, v float64, exact bool) {
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	start := i
	var mantissa uint64
	switch {
	case i == len(b):
		return -1, 0, false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
			mantissa = mantissa*10 + uint64(b[i]-'0')
		}
	default:
		return -1, 0, false
	}
	digits, decimals := i-start, 0
	if i < len(b) && b[i] == '.' {
		i++
		fraction := i
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
			mantissa = mantissa*10 + uint64(b[i]-'0')
		}
		if decimals = i - fraction; decimals == 0 {
			return -1, 0, false
		}
		digits += decimals
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		exponent := i
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		}
		if i == exponent {
			return -1, 0, false
		}
		return i, 0, false
	}
	if digits > 15 && (decimals > 0 || digits > 19 || mantissa > 1<<53) {
		// (A whole number up to 2^53 is exact at any length: timestamps in
		// microseconds have 16 digits.)
		return i, 0, false
	}
	v = float64(mantissa)
	if decimals > 0 {
		v /= exactPow10[decimals]
	}
	if neg {
		v = -v
	}
	return i, v, true
}

// exactPow10 holds the powers of ten that scanNumber divides by, all exact.
var exactPow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// parseFloat converts a number in JSON syntax that scanNumber could not; it
// reports false if the number is beyond the range of float64.
func parseFloat(b []byte) (float64, bool) {
	v, err := strconv.ParseFloat(string(b), 64)
	return v, err == nil
}
