package coap

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTopicFromPath(t *testing.T) {
	ps := []string{"ps"}
	for _, tc := range []struct {
		name   string
		prefix []string
		path   []string
		topic  string
		err    string
	}{
		{"telemetry", ps, []string{"ps", "plant", "north", "l1", "d1", "telemetry"}, "plant/north/l1/d1/telemetry", ""},
		{"one level", ps, []string{"ps", "t"}, "t", ""},
		{"two-segment prefix", []string{"ingest", "v1"}, []string{"ingest", "v1", "a", "b"}, "a/b", ""},
		{"no prefix", nil, []string{"a", "b"}, "a/b", ""},
		{"dots are text", ps, []string{"ps", "..", "x"}, "../x", ""},
		{"other path", ps, []string{"other", "a"}, "", "not under the publish prefix"},
		{"prefix only", ps, []string{"ps"}, "", "no topic after the prefix"},
		{"nothing", ps, nil, "", "not under the publish prefix"},
		{"prefix is a whole segment", ps, []string{"psx", "a"}, "", "not under the publish prefix"},
		{"trailing slash", ps, []string{"ps", "a", ""}, "", "level 2 is empty"},
		{"double slash", ps, []string{"ps", "a", "", "b"}, "", "level 2 is empty"},
		{"plus", ps, []string{"ps", "a", "+"}, "", "wildcard"},
		{"hash inside", ps, []string{"ps", "a#b"}, "", "wildcard"},
		{"encoded slash", ps, []string{"ps", "a/b"}, "", "holds a slash"},
		{"nul", ps, []string{"ps", "a\x00b"}, "", "U+0000"},
		{"not utf-8", ps, []string{"ps", "a\xffb"}, "", "not UTF-8"},
		{"$SYS", ps, []string{"ps", "$SYS", "x"}, "", "reserved"},
		{"$ later is fine", ps, []string{"ps", "a", "$x"}, "a/$x", ""},
		{"too long", ps, []string{"ps", strings.Repeat("a", 40000), strings.Repeat("b", 40000)}, "", "longer than 65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic, err := topicFromPath(tc.prefix, tc.path)
			if tc.err == "" {
				if err != nil || topic != tc.topic {
					t.Fatalf("got %q, %v; want %q", topic, err, tc.topic)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %q, %v; want an error with %q", topic, err, tc.err)
			}
		})
	}
}

// FuzzTopicFromPath checks that whatever path a client sends, an accepted
// topic is a valid MQTT topic name that gives back the path it came from.
func FuzzTopicFromPath(f *testing.F) {
	f.Add("ps", "ps/plant/north/l1/d1/telemetry")
	f.Add("ps", "ps/a//b")
	f.Add("ingest/v1", "ingest/v1/$SYS/x")
	f.Add("/", "a/+/#")
	f.Add("ps", "ps/a\x00/\xff")
	f.Fuzz(func(t *testing.T, prefix, path string) {
		pre, err := parsePrefix(prefix)
		if err != nil {
			return
		}
		// A path segment may hold anything, "/" included (%2F), so split
		// on a byte a URI path never sends raw.
		segs := strings.Split(path, "/")
		topic, err := topicFromPath(pre, segs)
		if err != nil {
			return
		}
		switch {
		case topic == "", len(topic) > maxTopicLen, !utf8.ValidString(topic),
			strings.ContainsAny(topic, "+#\x00"), strings.HasPrefix(topic, "$"),
			strings.HasPrefix(topic, "/"), strings.HasSuffix(topic, "/"), strings.Contains(topic, "//"):
			t.Fatalf("path %q under prefix %q gave the invalid topic %q", path, prefix, topic)
		}
		if got := strings.Join(append(append([]string{}, pre...), strings.Split(topic, "/")...), "/"); got != path {
			t.Fatalf("path %q under prefix %q gave topic %q, which maps back to %q", path, prefix, topic, got)
		}
	})
}
