package decode

import (
	"bytes"
	"strings"
	"testing"
)

// telemetry is the JSON most cases decode, in its encodings.
var telemetry = []byte(`{"device":"boiler-07","temp":61.5,"ok":true,"motor":{"rpm":1480,"bearing":{"temp":44}}}`)

var telemetryReading = r("device", "boiler-07", "temp", 61.5, "ok", true, "motor_rpm", 1480.0, "motor_bearing_temp", 44.0)

type decodeCase struct {
	name    string
	chain   []string // nil: auto
	payload []byte
	opts    Options
	want    []Reading
	wantErr string // a part of the error message
}

func TestDecodeJSON(t *testing.T) {
	runCases(t, []decodeCase{
		{name: "object", chain: []string{"json"}, payload: telemetry, want: []Reading{telemetryReading}},
		{name: "types", chain: []string{"json"},
			payload: []byte(`{"s":"x","n":-12.5,"i":7,"t":true,"f":false,"e":1e3,"E":-2.5E-2,"z":0,"nz":-0.0}`),
			want:    []Reading{r("s", "x", "n", -12.5, "i", 7.0, "t", true, "f", false, "e", 1000.0, "E", -0.025, "z", 0.0, "nz", 0.0)}},
		{name: "numbers beyond the fast path", chain: []string{"json"},
			payload: []byte(`{"big":12345678901234567890,"precise":0.1234567890123456789,"tiny":1e-320,"under":1e-400,"third":0.3333333333333333}`),
			want:    []Reading{r("big", 12345678901234567890.0, "precise", 0.1234567890123456789, "tiny", 1e-320, "under", 0.0, "third", 0.3333333333333333)}},
		{name: "whitespace", chain: []string{"json"}, payload: []byte(" \r\n\t{ \"a\" : 1 ,\n\t\"b\":\"x\" } \n"),
			want: []Reading{r("a", 1.0, "b", "x")}},
		{name: "nulls and arrays left out", chain: []string{"json"},
			payload: []byte(`{"a":null,"b":[1,{"c":2},[3]],"c":{"d":null,"e":[]},"f":1}`),
			want:    []Reading{r("f", 1.0)}},
		{name: "duplicate keys: last value, first place", chain: []string{"json"},
			payload: []byte(`{"a":1,"b":2,"a":"three"}`), want: []Reading{r("a", "three", "b", 2.0)}},
		{name: "flattening collides with a key", chain: []string{"json"},
			payload: []byte(`{"motor_temp":1,"motor":{"temp":2}}`), want: []Reading{r("motor_temp", 2.0)}},
		{name: "many duplicates", chain: []string{"json"},
			payload: []byte(`{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1,"l":1,"m":1,"n":1,"o":1,"p":1,"q":1,"a":2,"q":2,"a":3}`),
			want: []Reading{r("a", 3.0, "b", 1.0, "c", 1.0, "d", 1.0, "e", 1.0, "f", 1.0, "g", 1.0, "h", 1.0, "i", 1.0,
				"j", 1.0, "k", 1.0, "l", 1.0, "m", 1.0, "n", 1.0, "o", 1.0, "p", 1.0, "q", 2.0)}},
		{name: "escapes", chain: []string{"json"},
			payload: []byte(`{"s":"q\"b\\s\/n\nt\tu\u00e9\uD83D\uDE00","k\u00e9y":1}`),
			want:    []Reading{r("s", "q\"b\\s/n\nt\tué😀", "kéy", 1.0)}},
		{name: "invalid UTF-8 and lone surrogates become U+FFFD", chain: []string{"json"},
			payload: []byte("{\"s\":\"a\xffb\",\"t\":\"\\ud800x\",\"u\":\"\\udc00\\ud800\\udc00\"}"),
			want:    []Reading{r("s", "a\uFFFDb", "t", "\uFFFDx", "u", "\uFFFD\U00010000")}},
		{name: "numbers in skipped arrays are not converted", chain: []string{"json"}, payload: []byte(`{"a":[1e999],"b":1}`),
			want: []Reading{r("b", 1.0)}},
		{name: "nested empty key", chain: []string{"json"}, payload: []byte(`{"a":{"":1}}`), want: []Reading{r("a_", 1.0)}},
		{name: "empty object", chain: []string{"json"}, payload: []byte(`{}`), want: []Reading{{}}},
		{name: "array of objects", chain: []string{"json"}, payload: []byte(`[{"t":1},{"t":2,"u":{"v":3}},{}]`),
			want: []Reading{r("t", 1.0), r("t", 2.0, "u_v", 3.0), {}}},
		{name: "array repeats within elements only", chain: []string{"json"}, payload: []byte(`[{"t":1,"t":2},{"t":3}]`),
			want: []Reading{r("t", 2.0), r("t", 3.0)}},
		{name: "empty array", chain: []string{"json"}, payload: []byte(`[]`), want: []Reading{}},
		{name: "depth 32", chain: []string{"json"},
			payload: []byte(strings.Repeat(`{"a":`, 32) + "1" + strings.Repeat("}", 32)),
			want:    []Reading{r(strings.Repeat("a_", 31)+"a", 1.0)}},

		{name: "empty", chain: []string{"json"}, payload: []byte(" \n"), wantErr: "json: empty payload"},
		{name: "number", chain: []string{"json"}, payload: []byte(`42`), wantErr: "json: payload is a number, want an object"},
		{name: "string", chain: []string{"json"}, payload: []byte(`"x"`), wantErr: "json: payload is a string, want an object"},
		{name: "null", chain: []string{"json"}, payload: []byte(`null`), wantErr: "json: payload is null, want an object"},
		{name: "invalid scalar", chain: []string{"json"}, payload: []byte(`nul`), wantErr: "json: unexpected 'n' at byte 0, want a value"},
		{name: "array of numbers", chain: []string{"json"}, payload: []byte(`[{"a":1},{"b":2},3]`),
			wantErr: "json: array element 2 is a number, want an object"},
		{name: "trailing garbage", chain: []string{"json"}, payload: []byte(`{"a":1} x`),
			wantErr: "json: trailing data after the top-level value at byte 8"},
		{name: "two objects", chain: []string{"json"}, payload: []byte(`{"a":1}{"b":2}`),
			wantErr: "json: trailing data after the top-level value at byte 7"},
		{name: "missing value", chain: []string{"json"}, payload: []byte(`{"a":}`),
			wantErr: "json: unexpected '}' at byte 5, want a value"},
		{name: "trailing comma", chain: []string{"json"}, payload: []byte(`{"a":1,}`),
			wantErr: "json: unexpected '}' at byte 7, want a string key"},
		{name: "unquoted key", chain: []string{"json"}, payload: []byte(`{a:1}`),
			wantErr: "json: unexpected 'a' at byte 1, want a string key"},
		{name: "missing colon", chain: []string{"json"}, payload: []byte(`{"a" 1}`),
			wantErr: "json: unexpected '1' at byte 5, want ':'"},
		{name: "leading zero", chain: []string{"json"}, payload: []byte(`{"a":01}`),
			wantErr: "json: unexpected '1' at byte 6, want ',' or '}'"},
		{name: "bad literal", chain: []string{"json"}, payload: []byte(`{"a":tru}`), wantErr: "json: unexpected 't' at byte 5, want a value"},
		{name: "bad number", chain: []string{"json"}, payload: []byte(`{"a":1.}`), wantErr: "json: invalid number at byte 5"},
		{name: "bad exponent", chain: []string{"json"}, payload: []byte(`{"a":1e+}`), wantErr: "json: invalid number at byte 5"},
		{name: "lone minus", chain: []string{"json"}, payload: []byte(`{"a":-}`), wantErr: "json: invalid number at byte 5"},
		{name: "number out of range", chain: []string{"json"}, payload: []byte(`{"a":1e400}`),
			wantErr: "json: number 1e400 at byte 5 is out of range"},
		{name: "truncated", chain: []string{"json"}, payload: []byte(`{"a":1`), wantErr: "json: unexpected end of input at byte 6, want ',' or '}'"},
		{name: "unterminated string", chain: []string{"json"}, payload: []byte(`{"a":"xyz`),
			wantErr: "json: unterminated string starting at byte 5"},
		{name: "bad escape", chain: []string{"json"}, payload: []byte(`{"a":"x\q"}`), wantErr: `json: invalid escape "\\q" in string at byte 7`},
		{name: "bad unicode escape", chain: []string{"json"}, payload: []byte(`{"a":"\u12x4"}`),
			wantErr: `json: invalid \u escape in string at byte 6`},
		{name: "control character", chain: []string{"json"}, payload: []byte("{\"a\":\"x\ny\"}"),
			wantErr: "json: control character 0x0a in string at byte 7"},
		{name: "empty key", chain: []string{"json"}, payload: []byte(`{"b":1,"":1}`), wantErr: "json: empty key at byte 7"},
		{name: "too deep", chain: []string{"json"},
			payload: []byte(strings.Repeat(`{"a":`, 33) + "1" + strings.Repeat("}", 33)),
			wantErr: "json: nested deeper than 32 levels at byte 160"},
		{name: "too deep in a skipped array", chain: []string{"json"},
			payload: []byte(`{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "}"),
			wantErr: "json: nested deeper than 32 levels at byte 36"},
		{name: "deeply nested objects", chain: []string{"json"}, payload: bytes.Repeat([]byte(`{"a":`), 100000),
			wantErr: "json: nested deeper than 32 levels at byte 160"},
		{name: "deeply nested arrays", chain: []string{"json"}, payload: bytes.Repeat([]byte("["), 100000),
			wantErr: "json: array element 0 is an array, want an object"},
	})
}

func TestDecodeSplit(t *testing.T) {
	split := Options{Split: "readings"}
	runCases(t, []decodeCase{
		{name: "merged with the top level", chain: []string{"json"}, opts: split,
			payload: []byte(`{"site":"north","readings":[{"t":1},{"t":2,"site":"south"}],"gw":{"id":7}}`),
			want:    []Reading{r("site", "north", "gw_id", 7.0, "t", 1.0), r("site", "south", "gw_id", 7.0, "t", 2.0)}},
		{name: "elements are flattened", chain: []string{"json"}, opts: split,
			payload: []byte(`{"readings":[{"m":{"t":1},"a":[1]}]}`), want: []Reading{r("m_t", 1.0)}},
		{name: "nested arrays named alike are not split", chain: []string{"json"}, opts: split,
			payload: []byte(`{"x":{"readings":[{"t":1}]},"readings":[{"t":2}]}`), want: []Reading{r("t", 2.0)}},
		{name: "the last split array wins", chain: []string{"json"}, opts: split,
			payload: []byte(`{"readings":[{"t":1}],"readings":[{"t":2},{"t":3}]}`), want: []Reading{r("t", 2.0), r("t", 3.0)}},
		{name: "the last split array wins, strings too", chain: []string{"json"}, opts: split,
			payload: []byte(`{"readings":[{"s":"a","t":"b"}],"x":"y","readings":[{"u":1}]}`), want: []Reading{r("x", "y", "u", 1.0)}},
		{name: "empty split array", chain: []string{"json"}, opts: split, payload: []byte(`{"a":1,"readings":[]}`), want: []Reading{}},
		{name: "split through auto", opts: split, payload: gzipped([]byte(`{"a":1,"readings":[{"t":1}]}`)),
			want: []Reading{r("a", 1.0, "t", 1.0)}},
		{name: "split does not apply to kv", chain: []string{"kv"}, opts: split, payload: []byte(`a=1`), want: []Reading{r("a", 1.0)}},

		{name: "no split array", chain: []string{"json"}, opts: split, payload: []byte(`{"a":1}`),
			wantErr: `json: split "readings": the payload has no top-level "readings" array`},
		{name: "split key not an array", chain: []string{"json"}, opts: split, payload: []byte(`{"readings":{"t":1}}`),
			wantErr: `json: split "readings" is an object, want an array of objects`},
		{name: "split element not an object", chain: []string{"json"}, opts: split, payload: []byte(`{"readings":[{"t":1},"x"]}`),
			wantErr: `json: split "readings": element 1 is a string, want an object`},
		{name: "top-level array", chain: []string{"json"}, opts: split, payload: []byte(`[{"readings":[]}]`),
			wantErr: `json: split "readings": the payload is an array, want an object`},
		{name: "top-level scalar", chain: []string{"json"}, opts: split, payload: []byte(`true`),
			wantErr: `json: split "readings": the payload is a boolean, want an object`},
	})
}

func TestDecodeKV(t *testing.T) {
	runCases(t, []decodeCase{
		{name: "pairs", chain: []string{"kv"}, payload: []byte(`temperature=21.5 humidity=40 status=ok`),
			want: []Reading{r("temperature", 21.5, "humidity", 40.0, "status", "ok")}},
		{name: "separators", chain: []string{"kv"}, payload: []byte("a=1,b=2;c=3\td=4\ne=5\r\nf=6 ,; g=7\n"),
			want: []Reading{r("a", 1.0, "b", 2.0, "c", 3.0, "d", 4.0, "e", 5.0, "f", 6.0, "g", 7.0)}},
		{name: "values", chain: []string{"kv"},
			payload: []byte(`t=true f=false T=True n=-2.5e1 z=007 dot=.5 plus=+1 ip=10.0.0.1 empty= eq=a=b`),
			want: []Reading{r("t", true, "f", false, "T", "True", "n", -25.0, "z", "007", "dot", ".5", "plus", "+1",
				"ip", "10.0.0.1", "empty", "", "eq", "a=b")}},
		{name: "quoted", chain: []string{"kv"},
			payload: []byte(`note="door open, bay 3" q="say \"hi\"" bs="a\\b" other="c:\temp" num="42" e="" nl="a` + "\n" + `b"`),
			want: []Reading{r("note", "door open, bay 3", "q", `say "hi"`, "bs", `a\b`, "other", `c:\temp`,
				"num", "42", "e", "", "nl", "a\nb")}},
		{name: "duplicates", chain: []string{"kv"}, payload: []byte(`a=1 b=2 a=3`), want: []Reading{r("a", 3.0, "b", 2.0)}},
		{name: "UTF-8", chain: []string{"kv"}, payload: []byte(`température=21 lieu="salle été"`),
			want: []Reading{r("température", 21.0, "lieu", "salle été")}},

		{name: "not key=value", chain: []string{"kv"}, payload: []byte(`a=1 b=2 c=3 garbage`),
			wantErr: `kv: "garbage" at byte 12 is not key=value`},
		{name: "empty key", chain: []string{"kv"}, payload: []byte(`a=1 =2`), wantErr: "kv: empty key at byte 4"},
		{name: "unterminated quote", chain: []string{"kv"}, payload: []byte(`a="open`), wantErr: "kv: unterminated quoted value at byte 2"},
		{name: "after a quote", chain: []string{"kv"}, payload: []byte(`a="x"y`),
			wantErr: "kv: unexpected 'y' at byte 5 after the quoted value at byte 2"},
		{name: "control character", chain: []string{"kv"}, payload: []byte("a=1\x00"), wantErr: "kv: control character 0x00 at byte 3"},
		{name: "invalid UTF-8", chain: []string{"kv"}, payload: []byte("a=1 b=\xff"), wantErr: "kv: invalid UTF-8 at byte 6"},
		{name: "empty", chain: []string{"kv"}, payload: []byte(" ,\n"), wantErr: "kv: empty payload"},
		{name: "out of range", chain: []string{"kv"}, payload: []byte("a=-1e999"), wantErr: "kv: number -1e999 at byte 2 is out of range"},
	})
}

func TestDecodeTransforms(t *testing.T) {
	gz := gzipped(telemetry)
	want := []Reading{telemetryReading}
	runCases(t, []decodeCase{
		{name: "base64", chain: []string{"base64", "json"}, payload: b64(telemetry), want: want},
		{name: "base64 unpadded", chain: []string{"base64", "json"}, payload: bytes.TrimRight(b64(telemetry[:len(telemetry)-1]), "="),
			wantErr: "json: unexpected end of input"},
		{name: "base64 URL-safe", chain: []string{"base64", "gzip", "json"}, payload: b64url(gz), want: want},
		{name: "base64 with line breaks", chain: []string{"base64", "json"},
			payload: []byte(" " + strings.Join(splitEvery(string(b64(telemetry)), 20), "\r\n") + "\n"), want: want},
		{name: "gzip", chain: []string{"gzip", "json"}, payload: gz, want: want},
		{name: "zlib", chain: []string{"zlib", "json"}, payload: zlibbed(telemetry), want: want},
		{name: "deflate", chain: []string{"deflate", "json"}, payload: deflated(telemetry), want: want},
		{name: "zstd", chain: []string{"zstd", "json"}, payload: zstded(telemetry), want: want},
		{name: "zstd stream with an 8 MiB window", chain: []string{"zstd", "json"},
			payload: zstdStream(bytes.Repeat([]byte(`{"a":1}`+strings.Repeat(" ", 200)), 1000)[:207], 8<<20),
			want:    []Reading{r("a", 1.0)}},
		{name: "snappy framed", chain: []string{"snappy", "json"}, payload: snappyFramed(telemetry), want: want},
		{name: "snappy block", chain: []string{"snappy", "json"}, payload: snappyBlock(telemetry), want: want},
		{name: "base64 > gzip > json", chain: []string{"base64", "gzip", "json"}, payload: b64(gz), want: want},
		{name: "gzip > base64 > json", chain: []string{"gzip", "base64", "json"}, payload: gzipped(b64(telemetry)), want: want},
		{name: "gzip > kv", chain: []string{"gzip", "kv"}, payload: gzipped([]byte("a=1")), want: []Reading{r("a", 1.0)}},
		{name: "gzip > auto", chain: []string{"gzip", "auto"}, payload: gzipped(b64(zlibbed(telemetry))), want: want},
		{name: "multistream gzip", chain: []string{"gzip", "json"},
			payload: append(gzipped([]byte(`{"a":`)), gzipped([]byte(`1}`))...), want: []Reading{r("a", 1.0)}},
		{name: "empty gzip", chain: []string{"gzip", "json"}, payload: gzipped(nil), wantErr: "json: empty payload"},

		{name: "bad base64", chain: []string{"base64", "json"}, payload: []byte("eyJh*IjoxfQ=="), wantErr: "base64: invalid data at byte 4"},
		{name: "bad base64 with whitespace", chain: []string{"base64", "json"}, payload: []byte("eyJh\nIj!oxfQ=="),
			wantErr: "base64: invalid data at byte 6 (not counting whitespace)"},
		{name: "base64 bad length", chain: []string{"base64", "json"}, payload: []byte("eyJhI"), wantErr: "base64: invalid data at byte 4"},
		{name: "base64 mixed alphabets", chain: []string{"base64", "json"}, payload: []byte("ab+c-d=="), wantErr: "base64: invalid data at byte 2"},
		{name: "base64 too much padding", chain: []string{"base64", "json"}, payload: []byte("eyJhIjoxfQ==="), wantErr: "base64: too much padding"},
		{name: "truncated gzip", chain: []string{"gzip", "json"}, payload: gz[:len(gz)/2], wantErr: "gzip: truncated input"},
		{name: "gzip without its trailer", chain: []string{"gzip", "json"}, payload: gz[:len(gz)-4], wantErr: "gzip: truncated input"},
		{name: "gzip header only", chain: []string{"gzip", "json"}, payload: gz[:5], wantErr: "gzip: truncated input"},
		{name: "empty gzip input", chain: []string{"gzip", "json"}, payload: nil, wantErr: "gzip: truncated input"},
		{name: "not gzip", chain: []string{"gzip", "json"}, payload: telemetry, wantErr: "gzip: invalid header"},
		{name: "gzip checksum", chain: []string{"gzip", "json"}, payload: corruptCRC(gz), wantErr: "gzip: invalid checksum"},
		{name: "gzip then garbage", chain: []string{"gzip", "json"}, payload: append(bytes.Clone(gz), "junk after the member"...),
			wantErr: "gzip: invalid header"},
		{name: "not zlib", chain: []string{"zlib", "json"}, payload: telemetry, wantErr: "zlib: invalid header"},
		{name: "truncated zlib", chain: []string{"zlib", "json"}, payload: zlibbed(telemetry)[:20], wantErr: "zlib: truncated input"},
		{name: "corrupt deflate", chain: []string{"deflate", "json"}, payload: []byte{0xff, 0xff, 0xff, 0xff}, wantErr: "deflate: corrupt input"},
		{name: "not zstd", chain: []string{"zstd", "json"}, payload: telemetry, wantErr: "zstd: "},
		{name: "truncated zstd", chain: []string{"zstd", "json"}, payload: zstded(telemetry)[:20], wantErr: "zstd: "},
		{name: "snappy block of an absurd length", chain: []string{"snappy", "json"}, payload: []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0},
			wantErr: "snappy: output exceeds 65536 bytes, 100 times the 6-byte payload: rejected as a decompression bomb"},
		{name: "corrupt snappy block", chain: []string{"snappy", "json"}, payload: []byte{0x40, 0x01, 0x02}, wantErr: "snappy: corrupt input"},
		{name: "truncated snappy stream", chain: []string{"snappy", "json"}, payload: snappyFramed(telemetry)[:30],
			wantErr: "snappy: corrupt input"},
	})
}

func TestDecodeAuto(t *testing.T) {
	want := []Reading{telemetryReading}
	kv := []byte("temperature=21.5 status=ok")
	kvWant := []Reading{r("temperature", 21.5, "status", "ok")}
	nested := telemetry
	for _, enc := range []func([]byte) []byte{gzipped, b64, gzipped, b64} {
		nested = enc(nested)
	}
	runCases(t, []decodeCase{
		{name: "json", payload: telemetry, want: want},
		{name: "json array with leading space", payload: []byte("\n [{\"a\":1}]"), want: []Reading{r("a", 1.0)}},
		{name: "kv", payload: kv, want: kvWant},
		{name: "gzip", payload: gzipped(telemetry), want: want},
		{name: "zlib", payload: zlibbed(telemetry), want: want},
		{name: "zstd", payload: zstded(telemetry), want: want},
		{name: "snappy framed", payload: snappyFramed(telemetry), want: want},
		{name: "base64", payload: b64(telemetry), want: want},
		{name: "base64 URL-safe unpadded", payload: b64url(telemetry), want: want},
		{name: "base64 of gzip", payload: b64(gzipped(telemetry)), want: want},
		{name: "base64 of zstd of kv", payload: b64url(zstded(kv)), want: kvWant},
		{name: "gzip of base64", payload: gzipped(b64(telemetry)), want: want},
		{name: "base64 of base64", payload: b64(b64(telemetry)), want: want},
		{name: "four layers", payload: nested, want: want},
		{name: "five layers", payload: zlibbed(nested), wantErr: "auto: more than 4 nested encodings (the next is gzip)"},

		{name: "empty", payload: nil, wantErr: "auto: empty payload"},
		{name: "plain word", payload: []byte("hello"), wantErr: "auto: unrecognised payload (starts with 0x68 0x65 0x6c 0x6c)"},
		{name: "base64 alphabet that decodes to nothing known", payload: []byte("temperature"),
			wantErr: "auto: unrecognised payload (starts with 0x74 0x65 0x6d 0x70)"},
		{name: "binary with =", payload: []byte{0x01, '=', 0x02}, wantErr: "auto: unrecognised payload (starts with 0x01 0x3d 0x02)"},
		{name: "a number", payload: []byte("42"), wantErr: "auto: unrecognised payload (starts with 0x34 0x32)"},
		{name: "snappy block is not detected", payload: snappyBlock(telemetry), wantErr: "auto: unrecognised payload"},
		{name: "detected gzip that is truncated", payload: gzipped(telemetry)[:15], wantErr: "gzip: truncated input"},
		{name: "detected json that is invalid", payload: []byte(`{"a":`), wantErr: "json: unexpected end of input at byte 5"},
	})
}

func TestDecodeContentType(t *testing.T) {
	want := []Reading{telemetryReading}
	ct := func(s string) Options { return Options{ContentType: s} }
	runCases(t, []decodeCase{
		{name: "application/json", opts: ct("application/json"), payload: telemetry, want: want},
		{name: "parameters and case", opts: ct(" Application/JSON ; charset=utf-8"), payload: telemetry, want: want},
		{name: "text/json", opts: ct("text/json"), payload: telemetry, want: want},
		{name: "+json", opts: ct("application/senml+json"), payload: []byte(`[{"n":"temp","v":21}]`),
			want: []Reading{r("n", "temp", "v", 21.0)}},
		{name: "text/plain", opts: ct("text/plain"), payload: []byte("a=1"), want: []Reading{r("a", 1.0)}},
		{name: "application/gzip", opts: ct("application/gzip"), payload: gzipped(telemetry), want: want},
		{name: "application/x-gzip", opts: ct("application/x-gzip"), payload: gzipped(b64(telemetry)), want: want},
		{name: "application/zstd", opts: ct("application/zstd"), payload: zstded(telemetry), want: want},
		{name: "application/zlib", opts: ct("application/zlib"), payload: zlibbed(telemetry), want: want},
		{name: "application/x-snappy-framed", opts: ct("application/x-snappy-framed"), payload: snappyFramed(telemetry), want: want},
		{name: "application/base64", opts: ct("application/base64"), payload: b64(gzipped(telemetry)), want: want},
		{name: "short base64 by content type", opts: ct("application/base64"), payload: []byte("e30="), want: []Reading{{}}},
		{name: "unknown falls through to magic", opts: ct("application/octet-stream"), payload: gzipped(telemetry), want: want},
		{name: "only for the payload as published", chain: []string{"gzip", "auto"}, opts: ct("application/gzip"),
			payload: gzipped(telemetry), want: want},

		{name: "the content type wins over magic", opts: ct("application/json"), payload: gzipped(telemetry),
			wantErr: "json: unexpected byte 0x1f at byte 0, want a value"},
		{name: "text/plain that is JSON", opts: ct("text/plain"), payload: []byte(`{"a":1}`),
			wantErr: `kv: "{\"a\":1}" at byte 0 is not key=value`},
		{name: "explicit chains ignore it", chain: []string{"json"}, opts: ct("application/gzip"), payload: telemetry, want: want},
	})
}

// runCases decodes each case with a fresh Decoder and with one shared by
// all cases, which must agree (no state leaks from one payload to the next).
func runCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	shared := NewDecoder(Limits{})
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			c := mustChain(t, tt.chain...)
			for _, d := range []*Decoder{NewDecoder(Limits{}), shared} {
				got, err := d.Decode(c, tt.payload, tt.opts)
				if tt.wantErr != "" {
					if err == nil {
						t.Fatalf("Decode = %s, want error %q", show(got), tt.wantErr)
					}
					if !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("Decode error = %q, want it to contain %q", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				checkReadings(t, d, got)
				if !equalReadings(got, tt.want) {
					t.Fatalf("Decode =\n\t%s\nwant\n\t%s", show(got), show(tt.want))
				}
			}
		})
	}
}

func equalReadings(a, b []Reading) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}

func splitEvery(s string, n int) []string {
	var parts []string
	for len(s) > n {
		parts, s = append(parts, s[:n]), s[n:]
	}
	return append(parts, s)
}

// corruptCRC flips a bit of a gzip member's CRC-32.
func corruptCRC(gz []byte) []byte {
	b := bytes.Clone(gz)
	b[len(b)-8] ^= 1
	return b
}

func TestGzipAndBase64OfGzipAgree(t *testing.T) {
	payload := []byte(`{"site":"north","readings":[{"t":21.5,"ok":true},{"t":22,"note":"fan \"on\""}]}`)
	d := NewDecoder(Limits{})
	opts := Options{Split: "readings"}
	var got []string
	for _, p := range [][]byte{gzipped(payload), b64(gzipped(payload)), b64url(gzipped(payload))} {
		rs, err := d.Decode(mustChain(t, "auto"), p, opts)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, show(rs))
	}
	want := `site="north" t=21.5 ok=true | site="north" t=22 note="fan \"on\""`
	for i, g := range got {
		if g != want {
			t.Errorf("payload %d gives %s, want %s", i, g, want)
		}
	}
}

// String values and names must outlive the next Decode call and changes to
// the payload's buffer; the readings themselves need not.
func TestStringsAreSafeToKeep(t *testing.T) {
	d := NewDecoder(Limits{})
	c := mustChain(t, "auto")
	payload := []byte(`{"name":"alpha","motor":{"state":"running"}}`)
	first, err := d.Decode(c, payload, Options{})
	if err != nil {
		t.Fatal(err)
	}
	kept := make([]Field, len(first[0]))
	copy(kept, first[0])

	copy(payload, bytes.Repeat([]byte("#"), len(payload)))
	for _, p := range []string{`{"name":"omega","motor":{"state":"stopped"}}`, `name=gamma motor_state=halted`} {
		if _, err := d.Decode(c, []byte(p), Options{}); err != nil {
			t.Fatal(err)
		}
	}
	want := []Reading{r("name", "alpha", "motor_state", "running")}
	if !equalReadings([]Reading{kept}, want) {
		t.Fatalf("kept fields = %s, want %s", show([]Reading{kept}), show(want))
	}
}

// Appending to one reading must not overwrite the next.
func TestReadingsDoNotShareCapacity(t *testing.T) {
	d := NewDecoder(Limits{})
	for _, tt := range []struct {
		payload string
		opts    Options
	}{
		{`[{"a":1},{"b":2}]`, Options{}},
		{`{"s":1,"readings":[{"a":1},{"b":2}]}`, Options{Split: "readings"}},
	} {
		rs, err := d.Decode(mustChain(t, "json"), []byte(tt.payload), tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		before := show(rs[1:])
		_ = append(rs[0], Field{Name: "x", Value: "y"})
		if after := show(rs[1:]); after != before {
			t.Errorf("%s: appending to reading 0 changed reading 1 from %s to %s", tt.payload, before, after)
		}
	}
}

// The name cache starts afresh when full; repeats within a reading must
// still be found, and names must stay right.
func TestNameCacheTurnover(t *testing.T) {
	d := NewDecoder(Limits{})
	c := mustChain(t, "json")
	var b strings.Builder
	for round := range 3 {
		b.Reset()
		b.WriteString(`{"dup":1`)
		for i := range maxCachedNames / 2 {
			b.WriteString(`,"k` + itoa(round) + "_" + itoa(i) + `":1`)
		}
		b.WriteString(`,"dup":2,"` + strings.Repeat("long", 20) + `":3,"` + strings.Repeat("long", 20) + `":4}`)
		rs, err := d.Decode(c, []byte(b.String()), Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkReadings(t, d, rs)
		rd := rs[0]
		if rd[0] != (Field{"dup", 2.0}) || rd[len(rd)-1] != (Field{strings.Repeat("long", 20), 4.0}) {
			t.Fatalf("round %d: first and last fields are %v and %v", round, rd[0], rd[len(rd)-1])
		}
		if len(rd) != maxCachedNames/2+2 {
			t.Fatalf("round %d: %d fields, want %d", round, len(rd), maxCachedNames/2+2)
		}
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func TestZeroValues(t *testing.T) {
	var d Decoder
	rs, err := d.Decode(nil, gzipped(telemetry), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !equalReadings(rs, []Reading{telemetryReading}) {
		t.Fatalf("zero Decoder and nil Chain give %s", show(rs))
	}
	if d.limits != (Limits{MaxSize: 1 << 20, MaxRatio: 100}) {
		t.Errorf("zero Decoder has limits %+v", d.limits)
	}
}

// A decoder told which fields are wanted keeps those alone, after
// checking the whole payload as before: a bad value in a field left out
// is still an error, fields left out count against the limit, and a split
// payload keeps every field.
func TestDecodeWant(t *testing.T) {
	want := func(name string) bool { return name == "temp" || name == "motor_rpm" || name == "s" }
	for _, c := range []struct {
		name    string
		chain   []string
		payload string
		opts    Options
		want    []Reading
		wantErr string
	}{
		{name: "object", chain: []string{"json"}, payload: string(telemetry), want: []Reading{r("temp", 61.5, "motor_rpm", 1480.0)}},
		{name: "array", chain: []string{"json"}, payload: `[{"temp":1,"x":2},{"y":"z","s":"t"}]`, want: []Reading{r("temp", 1.0), r("s", "t")}},
		{name: "kv", chain: []string{"kv"}, payload: `temp=21.5 humidity=40 s="a b" note=x`, want: []Reading{r("temp", 21.5, "s", "a b")}},
		{name: "kv of fields left out only", chain: []string{"kv"}, payload: `humidity=40`, want: []Reading{{}}},
		{name: "bad string in a field left out", chain: []string{"json"}, payload: "{\"temp\":1,\"x\":\"a\x01\"}", wantErr: "control character"},
		{name: "number out of range in a field left out", chain: []string{"json"}, payload: `{"temp":1,"x":1e999}`, wantErr: "out of range"},
		{name: "kv number out of range left out", chain: []string{"kv"}, payload: `temp=1 x=1e999`, wantErr: "out of range"},
		{name: "split keeps every field", chain: []string{"json"}, payload: `{"site":"n","readings":[{"temp":1,"x":2}]}`,
			opts: Options{Split: "readings"}, want: []Reading{r("site", "n", "temp", 1.0, "x", 2.0)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := NewDecoder(Limits{})
			d.Want(want)
			for range 2 { // the second time from the names it knows
				got, err := d.Decode(mustChain(t, c.chain...), []byte(c.payload), c.opts)
				if c.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), c.wantErr) {
						t.Fatalf("error %v, want one containing %q", err, c.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if show(got) != show(c.want) {
					t.Fatalf("got %s, want %s", show(got), show(c.want))
				}
			}
		})
	}
	// Fields left out count against the limit.
	d := NewDecoder(Limits{MaxSize: 4096})
	d.Want(want)
	var b strings.Builder
	b.WriteString(`{"temp":1`)
	for i := range 1100 {
		b.WriteString(`,"x` + strings.Repeat("y", i%7) + string(rune('a'+i%26)) + `":1`)
	}
	b.WriteString("}")
	if _, err := d.Decode(mustChain(t, "json"), []byte(b.String()), Options{}); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a payload of 1,101 fields with a limit of 1,024: %v, want too many", err)
	}
}
