package rules_test

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/rules"
)

// A rule text per kind of series key, on plant/<site>/<line>/<device>/telemetry.
const (
	deviceRule = `
  - name: device_hot
    match: plant/+site/+line/+device/telemetry
    alert: {when: temperature > 90}`
	siteRule = `
  - name: site_avg
    match: plant/+site/+line/+device/telemetry
    key: site
    fields:
      site_temp: avg_over(temperature, "10m")`
	lineRule = `
  - name: line_avg
    match: plant/+site/+line/+device/telemetry
    key: site + "/" + line
    fields:
      line_temp: avg_over(temperature, "10m")`
	payloadRule = `
  - name: by_serial
    match: plant/+site/+line/+device/telemetry
    key: serial
    fields: {d: delta(temperature)}`
	topicRule = `
  - name: per_topic
    match: plant/#
    fields: {d: delta(temperature)}`
	statelessRule = `
  - name: plain
    match: plant/+site/+line/+device/telemetry
    fields: {temp_f: temperature * 9 / 5 + 32}`
	restRule = `
  - name: rest
    match: plant/+site/#path
    key: path
    fields: {d: delta(temperature)}`
)

func TestPartitionDerivedFromRuleKeys(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []string
		by    string
		want  string // the description
		notes int
		err   string
		keys  map[string]string // topic -> key
	}{
		{name: "device rules partition by device", rules: []string{deviceRule, statelessRule},
			want: "device (topic level 4)", keys: map[string]string{"plant/north/l1/b7/telemetry": "b7"}},
		{name: "device and site rules partition by site", rules: []string{deviceRule, siteRule},
			want: "site (topic level 2)", notes: 1,
			keys: map[string]string{"plant/north/l1/b7/telemetry": "north", "plant/south/l2/b7/telemetry": "south"}},
		{name: "site and line keys share the site", rules: []string{siteRule, lineRule},
			want: "site (topic level 2)", keys: map[string]string{"plant/north/l1/b7/telemetry": "north"}},
		{name: "line key alone uses both its levels", rules: []string{lineRule},
			want: "site (topic level 2), line (topic level 3)", keys: map[string]string{"plant/north/l1/b7/telemetry": "north/l1"}},
		{name: "a payload key means one partition", rules: []string{deviceRule, payloadRule},
			want: "none (one partition)", notes: 1, keys: map[string]string{"plant/north/l1/b7/telemetry": ""}},
		{name: "no stateful rule: the whole topic", rules: []string{statelessRule},
			want: "the whole topic (no rule keeps state)", keys: map[string]string{"plant/north/l1/b7/telemetry": "plant/north/l1/b7/telemetry"}},
		{name: "topic keys with device keys: device", rules: []string{topicRule, deviceRule},
			want: "device (topic level 4)", keys: map[string]string{"plant/north/l1/b7/telemetry": "b7"}},
		{name: "a # key: the rest of the topic", rules: []string{restRule},
			want: "topic levels 3 and on", keys: map[string]string{"plant/north/l1/b7/telemetry": "l1/b7/telemetry", "plant/north": ""}},
		{name: "short topics have empty levels", rules: []string{deviceRule},
			want: "device (topic level 4)", keys: map[string]string{"plant/north": "", "": ""}},

		{name: "stated: site for device rules", rules: []string{deviceRule}, by: "site",
			want: "site (topic level 2)", notes: 1, keys: map[string]string{"plant/north/l1/b7/telemetry": "north"}},
		{name: "stated: device splits a site rule", rules: []string{deviceRule, siteRule}, by: "device",
			err: `rule "site_avg" (site.yaml) keys its series by site (topic level 2): partitioning by device (topic level 4) would split`},
		{name: "stated: a level nobody names", rules: []string{deviceRule}, by: "region",
			err: `no rule's match names a topic level "region"`},
		{name: "stated: a payload key cannot be split", rules: []string{payloadRule}, by: "site",
			err: `keys its series by "serial", known only once the payload is decoded`},
		{name: "stated: none", rules: []string{deviceRule}, by: "none", want: "none (one partition)"},
		{name: "stated: topic splits a device rule", rules: []string{deviceRule}, by: "topic",
			err: `partitioning by the whole topic would split`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := rules.Parse("site.yaml", []byte("rules:"+strings.Join(tc.rules, "")))
			if err != nil {
				t.Fatal(err)
			}
			p, notes, err := set.Partition(tc.by)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.String() != tc.want || len(notes) != tc.notes {
				t.Fatalf("partition %q with notes %q, want %q with %d notes", p, notes, tc.want, tc.notes)
			}
			for topic, want := range tc.keys {
				if got := p.Key(topic); got != want {
					t.Errorf("Key(%q) = %q, want %q", topic, got, want)
				}
			}
		})
	}
}

func TestPartitionKeyDoesNotAllocate(t *testing.T) {
	set, err := rules.Parse("r.yaml", []byte("rules:"+deviceRule+siteRule))
	if err != nil {
		t.Fatal(err)
	}
	p, _, _ := set.Partition("")
	if n := testing.AllocsPerRun(100, func() { p.Key("plant/north/l1/b7/telemetry") }); n != 0 {
		t.Fatalf("Key allocates %v times", n)
	}
}
