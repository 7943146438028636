package decode_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"

	"github.com/sluicehq/sluice/rules/decode"
)

func Example() {
	// Parse a rule's chain once; decode with one Decoder per goroutine.
	chain, err := decode.ParseChain([]string{"auto"})
	if err != nil {
		panic(err)
	}
	d := decode.NewDecoder(decode.Limits{})

	// A device sends base64 text of gzipped JSON with several readings.
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(`{"device":"boiler-07","readings":[{"temp":61.5},{"temp":62,"motor":{"rpm":1480}}]}`))
	w.Close()
	payload := []byte(base64.StdEncoding.EncodeToString(gz.Bytes()))

	readings, err := d.Decode(chain, payload, decode.Options{Split: "readings"})
	if err != nil {
		panic(err)
	}
	for _, r := range readings {
		for i, f := range r {
			if i > 0 {
				fmt.Print(" ")
			}
			fmt.Printf("%s=%v", f.Name, f.Value)
		}
		fmt.Println()
	}

	// Errors say which step failed and where.
	_, err = d.Decode(chain, []byte(`{"temp":61.5,}`), decode.Options{})
	fmt.Println(err)

	// Output:
	// device=boiler-07 temp=61.5
	// device=boiler-07 temp=62 motor_rpm=1480
	// json: unexpected '}' at byte 13, want a string key
}

func ExampleParseChain() {
	chain, err := decode.ParseChain([]string{"base64", "gzip", "json"})
	fmt.Println(chain, err)

	_, err = decode.ParseChain([]string{"gzp", "json"})
	fmt.Println(err)

	// Output:
	// base64 > gzip > json <nil>
	// unknown decode step "gzp" (want one of base64, gzip, zlib, deflate, zstd, snappy, json, kv, auto)
}
