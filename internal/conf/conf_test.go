package conf_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/conf"
)

type sink struct {
	Name  string     `yaml:"name"`
	Kafka *kafkaConf `yaml:"kafka"`
}

type kafkaConf struct {
	Brokers []string      `yaml:"brokers"`
	Topic   string        `yaml:"topic"`
	Linger  time.Duration `yaml:"linger"`
	Retries int           `yaml:"retries"`
}

type root struct {
	Sinks []sink `yaml:"sinks"`
}

func (r *root) Validate() error {
	var p conf.Problems
	for i, s := range r.Sinks {
		if s.Kafka != nil && s.Kafka.Topic == "" {
			p.Missing(indexed("sinks", i) + ".kafka.topic")
		}
		if s.Name == "" {
			p.Missing(indexed("sinks", i) + ".name")
		}
	}
	return p.Err()
}

func indexed(p string, i int) string { return p + "[" + string(rune('0'+i)) + "]" }

func TestDecodeErrorsNameFileLineKey(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{
			name: "unknown key with suggestion",
			yaml: "sinks:\n  - name: events\n    kafka:\n      brokrs: [a:9092]\n      topic: t\n",
			want: []string{`sluice.yaml:4:7: sinks[0].kafka.brokrs: unknown key (did you mean "brokers"?)`},
		},
		{
			name: "wrong type",
			yaml: "sinks:\n  - name: events\n    kafka:\n      topic: t\n      retries: many\n",
			want: []string{`sluice.yaml:5:16: sinks[0].kafka.retries: want a whole number, got a string "many"`},
		},
		{
			name: "bad duration",
			yaml: "sinks:\n  - name: events\n    kafka:\n      topic: t\n      linger: 5 parsecs\n",
			want: []string{`sluice.yaml:5:`, `sinks[0].kafka.linger`},
		},
		{
			name: "missing required keys, all reported",
			yaml: "sinks:\n  - name: events\n    kafka:\n      brokers: [a:9092]\n  - kafka:\n      topic: x\n",
			want: []string{
				`sluice.yaml:3:5: sinks[0].kafka: missing required key "topic"`,
				`sluice.yaml:5:5: sinks[1]: missing required key "name"`,
			},
		},
		{
			name: "syntax error",
			yaml: "sinks:\n  - name: [unclosed\n",
			want: []string{`sluice.yaml:2:`},
		},
		{
			name: "duplicate key",
			yaml: "sinks:\n  - name: a\n    name: b\n",
			want: []string{`sluice.yaml:3:5: sinks[0].name: duplicate key (first set on line 2)`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r root
			_, err := conf.Decode("sluice.yaml", []byte(tc.yaml), &r)
			if err == nil {
				t.Fatal("no error")
			}
			var list conf.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %T is not an ErrorList: %v", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestDecodeValid(t *testing.T) {
	var r root
	_, err := conf.Decode("ok.yaml", []byte("sinks:\n  - name: e\n    kafka:\n      brokers: [a:1]\n      topic: t\n      linger: 250ms\n"), &r)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Sinks[0].Kafka.Linger; got != 250*time.Millisecond {
		t.Fatalf("linger = %v", got)
	}
}

func TestErrorAtInsideValues(t *testing.T) {
	src := "a:\n  plain: x > 1\n  quoted: \"x > 1\"\n  block: |\n    let y = 2;\n    y > oops\n"
	var v map[string]map[string]string
	doc, err := conf.Decode("r.yaml", []byte(src), &v)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path      string
		line, col int
		want      string
	}{
		{"a.plain", 1, 3, "r.yaml:2:12: a.plain: boom"},
		{"a.quoted", 1, 3, "r.yaml:3:14: a.quoted: boom"},
		{"a.block", 2, 5, "r.yaml:6:9: a.block: boom"},
	}
	for _, tc := range cases {
		if got := doc.ErrorAt(tc.path, tc.line, tc.col, "boom").Error(); got != tc.want {
			t.Errorf("ErrorAt(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

// TestDecodeReportsEveryProblem checks one decode reports every unknown key
// and wrong value, in file order, with the validation problems of what
// could be decoded, but not those that only repeat a key left out.
func TestDecodeReportsEveryProblem(t *testing.T) {
	src := "sinks:\n" +
		"  - name: events\n" +
		"    kafka:\n" +
		"      brokrs: [a:9092]\n" + // 4: unknown, did you mean brokers (and a mapping: [a: 9092])
		"      retries: many\n" + // 5: wrong type
		"      linger: 5 parsecs\n" + // 6: not a duration
		"      topic: t\n" +
		"  - nme: x\n" + // 8: unknown (the missing name is not reported again)
		"    kafka: {brokers: [b:1]}\n" + // 9: topic missing: a problem of its own; b:1 a mapping
		"  - kafka: {topic: t}\n" // 10: name missing
	var r root
	_, err := conf.Decode("s.yaml", []byte(src), &r)
	var list conf.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %T is not an ErrorList: %v", err, err)
	}
	want := []string{
		`s.yaml:4:7: sinks[0].kafka.brokrs: unknown key (did you mean "brokers"?)`,
		`s.yaml:5:16: sinks[0].kafka.retries: want a whole number, got a string "many"`,
		`s.yaml:6:15: sinks[0].kafka.linger: `,
		`s.yaml:8:5: sinks[1].nme: unknown key (did you mean "name"?)`,
		`s.yaml:9:5: sinks[1].kafka: missing required key "topic"`,
		`s.yaml:9:24: sinks[1].kafka.brokers[0].b: want a string, got a mapping`,
		`s.yaml:10:5: sinks[2]: missing required key "name"`,
	}
	if len(list) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(list[i].Error(), w) {
			t.Errorf("problem %d: %s\nwant %s...", i+1, list[i], w)
		}
	}
}
