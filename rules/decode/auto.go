package decode

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxAutoLayers is how many transforms auto may find before the format.
const maxAutoLayers = 4

// auto detects what data is, runs the transforms it finds, each followed by
// detection again, and ends with a format step. contentType, if set, decides
// the first layer.
func (d *Decoder) auto(data []byte, contentType, split string) ([]Reading, error) {
	for layer := 0; ; layer++ {
		var (
			s       step
			ok      bool
			decoded []byte // set when detection already decoded base64
			err     error
		)
		if layer == 0 && contentType != "" {
			s, ok = byContentType(contentType)
		}
		if !ok {
			if s, decoded, err = d.sniff(data); err != nil {
				return nil, err
			}
		}
		if s.final() {
			return d.format(s, data, split)
		}
		if layer == maxAutoLayers {
			return nil, fmt.Errorf("auto: more than %d nested encodings (the next is %s)", maxAutoLayers, s)
		}
		if decoded != nil {
			data = decoded
			continue
		}
		if data, err = d.transform(s, data); err != nil {
			return nil, err
		}
	}
}

// byContentType maps an MQTT 5 content type to a step. Parameters after ';'
// and case are ignored.
func byContentType(ct string) (step, bool) {
	mediaType, _, _ := strings.Cut(ct, ";")
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	switch mediaType {
	case "application/json", "text/json":
		return stepJSON, true
	case "text/plain":
		return stepKV, true
	case "application/gzip", "application/x-gzip":
		return stepGzip, true
	case "application/zstd":
		return stepZstd, true
	case "application/zlib":
		return stepZlib, true
	case "application/x-snappy-framed":
		return stepSnappy, true
	case "application/base64":
		return stepBase64, true
	}
	if typ, sub, ok := strings.Cut(mediaType, "/"); ok && typ != "" && strings.HasSuffix(sub, "+json") {
		return stepJSON, true // application/senml+json and the like
	}
	return 0, false
}

// sniff detects data's step by its content. For base64 it decodes data to
// check that the result is itself recognised, and returns the decoding.
func (d *Decoder) sniff(data []byte) (step, []byte, error) {
	if s, ok := sniffMagic(data); ok {
		return s, nil, nil
	}
	if looksBase64(data) {
		out, err := d.transform(stepBase64, data)
		switch {
		case err == nil && recognised(out):
			return stepBase64, out, nil
		case err == nil:
			d.untransform()
		case errors.Is(err, ErrTooLarge):
			return 0, nil, err
		}
	}
	if looksKV(data) {
		return stepKV, nil, nil
	}
	if len(data) == 0 {
		return 0, nil, fmt.Errorf("auto: empty payload")
	}
	var start strings.Builder
	for i, c := range data[:min(len(data), 4)] {
		if i > 0 {
			start.WriteByte(' ')
		}
		fmt.Fprintf(&start, "0x%02x", c)
	}
	return 0, nil, fmt.Errorf("auto: unrecognised payload (starts with %s)", start.String())
}

// recognised reports whether auto would find something in data, without
// decoding it.
func recognised(data []byte) bool {
	_, ok := sniffMagic(data)
	return ok || looksBase64(data) || looksKV(data)
}

// sniffMagic detects the compressed formats by their magic bytes, and JSON
// by its first byte.
func sniffMagic(data []byte) (step, bool) {
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		return stepGzip, true
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return stepZstd, true
	case bytes.HasPrefix(data, snappyMagic):
		return stepSnappy, true
	case isZlibHeader(data):
		return stepZlib, true
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return stepJSON, true
	}
	return 0, false
}

// isZlibHeader reports whether data starts with a zlib header with a 32 KiB
// window (0x78), a valid check value and no preset dictionary (which could
// not be decoded anyway).
func isZlibHeader(data []byte) bool {
	return len(data) >= 2 && data[0] == 0x78 && (uint(data[0])<<8|uint(data[1]))%31 == 0 && data[1]&0x20 == 0
}

// looksBase64 reports whether data, less whitespace, is at least 8
// characters of the standard or the URL-safe base64 alphabet, with at most
// two '=' of padding at the end.
func looksBase64(data []byte) bool {
	var n, pad int
	var std, url bool
	for _, c := range data {
		switch {
		case isSpace(c):
			continue
		case c == '=':
			pad++
			continue
		case pad > 0:
			return false // padding is only allowed at the end
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '+' || c == '/':
			std = true
		case c == '-' || c == '_':
			url = true
		default:
			return false
		}
		n++
	}
	return n+pad >= 8 && pad <= 2 && !(std && url)
}

// looksKV reports whether data is text (valid UTF-8 without control
// characters other than tab, CR and LF) that contains '='.
func looksKV(data []byte) bool {
	if bytes.IndexByte(data, '=') < 0 || !utf8.Valid(data) {
		return false
	}
	for _, c := range data {
		if isControl(c) {
			return false
		}
	}
	return true
}

// isControl reports whether c is an ASCII control character other than tab,
// CR and LF.
func isControl(c byte) bool {
	return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f
}

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}
