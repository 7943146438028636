package decode

import (
	"fmt"
	"unicode/utf8"
)

// parseKV parses flat key=value text into b.top:
//
//	temperature=21.5 humidity=40, status=ok; note="door open"
//
// Pairs are separated by spaces, commas, semicolons, tabs or newlines.
// Values in JSON number syntax are numbers, true and false are booleans, a
// double-quoted value is a string (with \" and \\ escapes), and anything
// else is a string. The text must be UTF-8 without control characters.
func (b *fieldBuilder) parseKV(data []byte) error {
	b.format = stepKV
	b.filter = b.want != nil
	if !utf8.Valid(data) {
		return fmt.Errorf("kv: invalid UTF-8 at byte %d", invalidUTF8At(data))
	}
	b.names.startReading()
	i := 0
	for {
		for i < len(data) && isKVSeparator(data[i]) {
			i++
		}
		if i == len(data) {
			break
		}
		start := i
		for i < len(data) && !isKVSeparator(data[i]) && data[i] != '=' {
			if isControl(data[i]) {
				return fmt.Errorf("kv: control character 0x%02x at byte %d", data[i], i)
			}
			i++
		}
		if i == len(data) || data[i] != '=' {
			return fmt.Errorf("kv: %q at byte %d is not key=value", clip(data[start:i]), start)
		}
		if i == start {
			return fmt.Errorf("kv: empty key at byte %d", start)
		}
		name, kept := b.field(data[start:i])
		i++ // the '='

		var ok bool
		if i < len(data) && data[i] == '"' {
			at, strStart := i, len(b.strs)
			var err error
			if b.strs, i, err = appendQuoted(b.strs, data, i); err != nil {
				return err
			}
			if i < len(data) && !isKVSeparator(data[i]) {
				return fmt.Errorf("kv: unexpected %s at byte %d after the quoted value at byte %d", describeByte(data[i]), i, at)
			}
			if kept {
				ok = b.addString(&b.top, name, strStart)
			} else {
				b.strs = b.strs[:strStart]
				ok = b.skip(&b.top)
			}
		} else {
			valueStart := i
			for i < len(data) && !isKVSeparator(data[i]) {
				if isControl(data[i]) {
					return fmt.Errorf("kv: control character 0x%02x at byte %d", data[i], i)
				}
				i++
			}
			v := data[valueStart:i]
			end, f, exact := scanNumber(v, 0)
			switch {
			case !kept && end == len(v) && !exact:
				if _, inRange := parseFloat(v); !inRange {
					return fmt.Errorf("kv: number %s at byte %d is out of range", clip(v), valueStart)
				}
				ok = b.skip(&b.top)
			case !kept:
				ok = b.skip(&b.top)
			case string(v) == "true":
				ok = b.add(&b.top, name, true)
			case string(v) == "false":
				ok = b.add(&b.top, name, false)
			case end == len(v) && exact:
				ok = b.add(&b.top, name, f)
			case end == len(v):
				f, inRange := parseFloat(v)
				if !inRange {
					return fmt.Errorf("kv: number %s at byte %d is out of range", clip(v), valueStart)
				}
				ok = b.add(&b.top, name, f)
			default:
				strStart := len(b.strs)
				b.strs = append(b.strs, v...)
				ok = b.addString(&b.top, name, strStart)
			}
		}
		if !ok {
			return b.tooMany(len(data))
		}
	}
	if len(b.top)+b.skippedTop == 0 {
		return fmt.Errorf("kv: empty payload")
	}
	b.endTop()
	return nil
}

// appendQuoted appends the unescaped content of the double-quoted value at
// data[i] to dst, and returns the position after its closing quote.
func appendQuoted(dst, data []byte, i int) ([]byte, int, error) {
	open := i
	i++
	for {
		j := i
		for j < len(data) && data[j] != '"' && data[j] != '\\' && !isControl(data[j]) {
			j++
		}
		dst = append(dst, data[i:j]...)
		switch {
		case j == len(data):
			return dst, j, fmt.Errorf("kv: unterminated quoted value at byte %d", open)
		case data[j] == '"':
			return dst, j + 1, nil
		case data[j] == '\\':
			if j+1 < len(data) && (data[j+1] == '"' || data[j+1] == '\\') {
				dst = append(dst, data[j+1])
				i = j + 2
			} else {
				dst = append(dst, '\\') // any other backslash is itself
				i = j + 1
			}
		default:
			return dst, j, fmt.Errorf("kv: control character 0x%02x at byte %d", data[j], j)
		}
	}
}

func isKVSeparator(c byte) bool {
	return c == ' ' || c == ',' || c == ';' || c == '\t' || c == '\n' || c == '\r'
}

// invalidUTF8At returns the offset of the first invalid UTF-8 in data.
func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(data)
}
