package rules

import (
	"reflect"
	"testing"
)

func TestFilterMatch(t *testing.T) {
	cases := []struct {
		filter, topic string
		match         bool
		values        []string
	}{
		{"plant/+site/+line/+device/telemetry", "plant/north/l1/b7/telemetry", true, []string{"north", "l1", "b7"}},
		{"plant/+site/+line/+device/telemetry", "plant/north/l1/b7/status", false, nil},
		{"plant/+site/+line/+device/telemetry", "plant/north/l1/telemetry", false, nil},
		{"plant/+/+/+device/#", "plant/a/b/c/d/e", true, []string{"c"}},
		{"plant/#rest", "plant/a/b", true, []string{"a/b"}},
		{"plant/#", "plant", true, []string{}},
		{"#", "$SYS/broker", false, nil},
		{"+/broker", "$SYS/broker", false, nil},
		{"$SYS/#", "$SYS/broker", true, []string{}},
		{"a/+/c", "a//c", true, []string{}},
		{"a/b", "a/b/c", false, nil},
		{"a/b/c", "a/b", false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.filter+" "+tc.topic, func(t *testing.T) {
			f := MustFilter(tc.filter)
			vals := make([]string, len(f.Names()))
			if got := f.Match(tc.topic, vals); got != tc.match {
				t.Fatalf("Match = %v, want %v", got, tc.match)
			}
			if tc.match && !reflect.DeepEqual(vals, tc.values) {
				t.Fatalf("values = %q, want %q", vals, tc.values)
			}
		})
	}
}

func TestFilterErrors(t *testing.T) {
	for _, bad := range []string{"", "a/#/b", "a/b+/c", "a/+x-y", "+d/+d", "a/+1x"} {
		if _, err := ParseFilter(bad); err == nil {
			t.Errorf("ParseFilter(%q) accepted", bad)
		}
	}
}
